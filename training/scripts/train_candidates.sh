#!/usr/bin/env bash
# The CamVid candidate ladder behind models/README.md: the same recipe (light augmentation,
# CCE+Dice, BatchNorm momentum 0.9, encoders from scratch) on a fixed budget of EPOCHS epochs
# per candidate, at two input sizes. Run from the repository root after
#   fvt-train prepare camvid --root ../shared/datasets/camvid --out data/camvid \
#       --size 256x192 --size 384x288
# The default model itself is the longer run of the first line (see models/README.md).
set -euo pipefail
EPOCHS=${EPOCHS:-12}
COMMON="data.augment=light model.bn_momentum=0.9 train.epochs=$EPOCHS runs_dir=runs/candidates"
C=training/configs
train() { fvt-train train "$@" $COMMON; }

train $C/camvid_unet_like.yaml name=unet_like_256 data.prepared_dir=data/camvid/256x192
train $C/camvid_linknet_mobilenetv2.yaml name=linknet_mobilenetv2_256 \
  data.prepared_dir=data/camvid/256x192
train $C/camvid_linknet_mobilenetv2.yaml name=fpn_mobilenetv2_256 model.architecture=fpn \
  data.prepared_dir=data/camvid/256x192
train $C/camvid_linknet_mobilenetv2.yaml name=linknet_resnet18_256 model.backbone=resnet18 \
  data.prepared_dir=data/camvid/256x192
train $C/camvid_unet_like.yaml name=unet_like_384 data.prepared_dir=data/camvid/384x288
train $C/camvid_linknet_mobilenetv2.yaml name=linknet_mobilenetv2_384 \
  data.prepared_dir=data/camvid/384x288
