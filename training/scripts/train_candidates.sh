#!/usr/bin/env bash
# The CamVid candidate ladder behind models/README.md: one recipe (light augmentation,
# CCE+Dice, BatchNorm momentum 0.9, encoders from scratch) on a fixed budget of EPOCHS epochs
# per candidate, at two input sizes. Run from the repository root after
#   fvt-train prepare camvid --root ../shared/datasets/camvid --out data/camvid \
#       --size 256x192 --size 384x288
# Arguments: the candidates to train (default: all). Linknet/MobileNetV2 at 256x192 is the
# longer run behind the default model (its command is in models/README.md).
set -euo pipefail
EPOCHS=${EPOCHS:-6}
C=training/configs
LINKNET=$C/camvid_linknet_mobilenetv2.yaml

candidate() {
  case "$1" in
    unet_like_256) echo "$C/camvid_unet_like.yaml data.prepared_dir=data/camvid/256x192" ;;
    fpn_mobilenetv2_256) echo "$LINKNET model.architecture=fpn data.prepared_dir=data/camvid/256x192" ;;
    linknet_resnet18_256) echo "$LINKNET model.backbone=resnet18 data.prepared_dir=data/camvid/256x192" ;;
    unet_like_384) echo "$C/camvid_unet_like.yaml data.prepared_dir=data/camvid/384x288" ;;
    linknet_mobilenetv2_384) echo "$LINKNET data.prepared_dir=data/camvid/384x288" ;;
    *) echo "unknown candidate $1" >&2; return 2 ;;
  esac
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(unet_like_256 fpn_mobilenetv2_256 linknet_resnet18_256
                                 unet_like_384 linknet_mobilenetv2_384)
for name in "${names[@]}"; do
  # shellcheck disable=SC2046
  fvt-train train $(candidate "$name") name="$name" runs_dir=runs/candidates \
    data.augment=light model.bn_momentum=0.9 train.epochs="$EPOCHS"
done
