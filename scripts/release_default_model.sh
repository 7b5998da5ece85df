#!/usr/bin/env bash
# Turn a finished run into the shipped default model and the figures of its model card:
#   scripts/release_default_model.sh runs/lite0_fpn_480 [other rows of the table...]
#   DATA=data/camvid/256x192 scripts/release_default_model.sh FLOAT32_V1.onnx
# Other rows are run folders or exported float32 .onnx files (the earlier default, whose run
# folder is gone); every row is exported again here (float32 + int8, each pair timed in turns
# on this machine) and evaluated on EVAL_DATA (default: the shipped run's prepared data; set it
# to CamVid at its own 480x360 so that models of every input size are scored on the same
# labels). The second form re-exports a float32 file of an earlier export (its run folder is not
# needed): today's graph rewrites, parity against that file, a new int8 variant. It takes a
# contract version 1 file; the shipped default is version 2, so rebuild it from its run folder.
# Ships models/default.onnx, and models/default.int8.onnx only if int8 meets the targets (costs
# at most 1 point of val mIoU and is at least INT8_MIN_SPEEDUP, default 2.0, times faster than
# float32 on this CPU). Then writes models/default.eval_val.json (+ models/default.eval_val/:
# confusion matrix, samples), the comparison table (COMPARISON, default models/comparison.md)
# and models/default.card.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=$1
shift
INT8_MIN_SPEEDUP=${INT8_MIN_SPEEDUP:-2.0}
CONTRACT=${CONTRACT:-2}  # the shipped files compute the class ids (and confidence) in the graph
prepared_dir() {  # the prepared folder of a run folder
  python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['prepared_dir'])" \
    "$1/config.yaml"
}
if [[ $SOURCE == *.onnx ]]; then
  : "${DATA:?set DATA to the prepared folder the model was trained on}"
  OUT=models/default.onnx  # in place: the file is read before anything is written
  fvt-train export "$SOURCE" --out "$OUT" --int8 --data "$DATA" --contract "$CONTRACT"
else
  DATA=$(prepared_dir "$SOURCE")
  OUT=$SOURCE/model.onnx
  fvt-train export "$SOURCE" --out "$OUT" --int8 --contract "$CONTRACT"
  cp "$OUT" models/default.onnx
  cp "${OUT%.onnx}.export.json" models/default.export.json
  cp "${OUT%.onnx}.int8.onnx" models/default.int8.onnx
fi
EVAL_DATA=${EVAL_DATA:-$DATA}
if ! python - models/default.export.json "$INT8_MIN_SPEEDUP" <<'PY'
import json, sys
int8 = json.load(open(sys.argv[1]))['variants']['int8']
minimum = float(sys.argv[2])
ok = int8['speedup'] >= minimum and int8['miou_change_points'] >= -1.0
print(f"int8: {int8['speedup']:.2f}x, {int8['miou_change_points']:+.2f} points ->",
      'shipped' if ok else f'not shipped (targets: >= {minimum}x, >= -1 point)')
sys.exit(0 if ok else 1)
PY
then
  rm -f models/default.int8.onnx
fi
fvt-train evaluate models/default.onnx --data "$EVAL_DATA" --split val
if [[ $SOURCE != *.onnx ]]; then
  fvt-train evaluate "$SOURCE" --data "$EVAL_DATA" --split val --timing-runs 0 --samples 0
  for other in "$@"; do  # the same export (and timing, on the same machine) for every row
    if [[ $other == *.onnx ]]; then
      fvt-train export "$other" --out "$other" --int8 --data "${OTHER_DATA:?set OTHER_DATA \
to the prepared folder the .onnx row was trained on}"
    else
      fvt-train export "$other" --out "$other/model.onnx" --int8
    fi
    fvt-train evaluate "$other" --data "$EVAL_DATA" --split val --timing-runs 0 --samples 0
  done
  fvt-train compare "$SOURCE" "$@" --sort val_miou --desc --out "${COMPARISON:-models/comparison.md}"
fi
python scripts/model_card.py --model models/default.onnx --eval models/default.eval_val.json \
  --export models/default.export.json --out models/default.card.json
