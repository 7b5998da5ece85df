#!/usr/bin/env bash
# Turn a finished run into the shipped default model and the figures of its model card:
#   scripts/release_default_model.sh runs/lite0_fpn_480 [other rows of the table...]
#   DATA=data/camvid/480x352 scripts/release_default_model.sh FLOAT32.onnx
# Other rows are run folders or exported float32 .onnx files (the earlier default, whose run
# folder is gone); every row is exported again here (float32 + int8, each pair timed in turns
# on this machine) and evaluated on EVAL_DATA (default: the shipped run's prepared data; set it
# to CamVid at its own 480x360 so that models of every input size are scored on the same
# labels). The second form re-exports a float32 file of an earlier export, contract version 1
# or 2 (its run folder is not needed): today's graph rewrites, parity against that file.
# Ships models/default.onnx, then models/default.int8.onnx written from it by re-export (its
# provenance names default.onnx, its SHA-256 and the calibration frames), with its report
# models/default.int8.export.json (val mIoU of both files, both timed in turns). Stops with an
# error, leaving the previous int8 file, when int8 misses the targets: at most INT8_MAX_LOSS
# (default 0.5) points of val mIoU lost and at least INT8_MIN_SPEEDUP (default 1.4) times
# faster than float32 on this CPU (time on an otherwise idle machine). Then writes
# models/default.eval_val.json (+ models/default.eval_val/: confusion matrix, samples), the
# comparison table (COMPARISON, default models/comparison.md) and models/default.card.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=$1
shift
INT8_MIN_SPEEDUP=${INT8_MIN_SPEEDUP:-1.4}
INT8_MAX_LOSS=${INT8_MAX_LOSS:-0.5}
INT8_DIR=output/release/int8  # the re-exported float32 file beside it is not shipped
CONTRACT=${CONTRACT:-2}  # the shipped files compute the class ids (and confidence) in the graph
prepared_dir() {  # the prepared folder of a run folder
  python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['prepared_dir'])" \
    "$1/config.yaml"
}
if [[ $SOURCE == *.onnx ]]; then
  : "${DATA:?set DATA to the prepared folder the model was trained on}"
  OUT=models/default.onnx  # in place: the file is read before anything is written
  fvt-train export "$SOURCE" --out "$OUT" --data "$DATA" --contract "$CONTRACT"
else
  DATA=$(prepared_dir "$SOURCE")
  OUT=$SOURCE/model.onnx
  fvt-train export "$SOURCE" --out "$OUT" --int8 --contract "$CONTRACT"
  cp "$OUT" models/default.onnx
  cp "${OUT%.onnx}.export.json" models/default.export.json
fi
# --uint8-input: the int8 file takes the camera's pixels as its first quantized tensor (exact,
# contract_v2._pixels_are_quantized_input), so the node makes no float image for it.
fvt-train export models/default.onnx --data "$DATA" --out "$INT8_DIR/default.onnx" --int8 \
  --uint8-input --contract "$CONTRACT"
python - "$INT8_DIR/default.export.json" "$INT8_MIN_SPEEDUP" "$INT8_MAX_LOSS" <<'PY'
import json, sys
int8 = json.load(open(sys.argv[1]))['variants']['int8']
speedup, loss = float(sys.argv[2]), float(sys.argv[3])
ok = int8['speedup'] >= speedup and -int8['miou_change_points'] <= loss
print(f"int8: {int8['speedup']:.2f}x, {int8['miou_change_points']:+.2f} points ->",
      'shipped' if ok else f'misses the targets (>= {speedup}x, at most {loss} points lost): '
      'models/default.int8.onnx not replaced, so test_shipped_int8 fails until it is')
sys.exit(0 if ok else 1)
PY
cp "$INT8_DIR/default.int8.onnx" models/default.int8.onnx
cp "$INT8_DIR/default.export.json" models/default.int8.export.json
EVAL_DATA=${EVAL_DATA:-$DATA}
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
