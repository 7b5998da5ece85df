#!/usr/bin/env bash
# Turn a finished run into the shipped default model and the figures of its model card:
#   scripts/release_default_model.sh runs/default_unet_like_256 [other runs for the table...]
#   DATA=data/camvid/256x192 scripts/release_default_model.sh models/default.onnx
# The second form re-exports a float32 file of an earlier export (its run folder is not needed):
# today's graph rewrites, parity against that file, a new int8 variant.
# Exports (float32 + int8, with parity, accuracy and speed in the export report), ships
# models/default.onnx, and models/default.int8.onnx only if int8 meets the targets (costs at
# most 1 point of val mIoU and is at least 1.8x faster than float32 on this CPU).
# Then writes models/default.eval_val.json (+ models/default.eval_val/: confusion matrix,
# samples), models/comparison.md (fvt-train compare over the given runs; runs only; another
# file with COMPARISON=PATH) and models/default.card.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=$1
shift
if [[ $SOURCE == *.onnx ]]; then
  : "${DATA:?set DATA to the prepared folder the model was trained on}"
  OUT=models/default.onnx  # in place: the file is read before anything is written
  fvt-train export "$SOURCE" --out "$OUT" --int8 --data "$DATA"
else
  DATA=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['prepared_dir'])" \
    "$SOURCE/config.yaml")
  OUT=$SOURCE/model.onnx
  fvt-train export "$SOURCE" --out "$OUT" --int8
  cp "$OUT" models/default.onnx
  cp "${OUT%.onnx}.export.json" models/default.export.json
  cp "${OUT%.onnx}.int8.onnx" models/default.int8.onnx
fi
if ! python - models/default.export.json <<'PY'
import json, sys
int8 = json.load(open(sys.argv[1]))['variants']['int8']
ok = int8['speedup'] >= 1.8 and int8['miou_change_points'] >= -1.0
print(f"int8: {int8['speedup']:.2f}x, {int8['miou_change_points']:+.2f} points ->",
      'shipped' if ok else 'not shipped (targets: >= 1.8x, >= -1 point)')
sys.exit(0 if ok else 1)
PY
then
  rm -f models/default.int8.onnx
fi
fvt-train evaluate models/default.onnx --data "$DATA" --split val
if [[ $SOURCE != *.onnx ]]; then
  for other in "$@"; do  # the same export (and timing, on the same machine) for every row
    fvt-train export "$other" --out "$other/model.onnx" --int8
  done
  fvt-train compare "$SOURCE" "$@" --sort val_miou --desc --out "${COMPARISON:-models/comparison.md}"
fi
python scripts/model_card.py --model models/default.onnx --eval models/default.eval_val.json \
  --export models/default.export.json --out models/default.card.json
