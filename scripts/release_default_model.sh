#!/usr/bin/env bash
# Turn a finished run into the shipped default model and the figures of its model card:
#   scripts/release_default_model.sh runs/default_linknet_mbv2_256 [other runs for the table...]
# Writes models/default.onnx, models/default.int8.onnx, models/default.export.json,
# models/default.eval_val.json (+ models/default.eval_val/: confusion matrix, samples),
# models/comparison.md (fvt-train compare over the given runs) and models/default.card.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
shift
DATA=$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['prepared_dir'])" \
  "$RUN/config.yaml")

fvt-train export "$RUN" --out models/default.onnx --int8
fvt-train evaluate models/default.onnx --data "$DATA" --split val
fvt-train compare "$RUN" "$@" --sort val_miou --desc --out models/comparison.md
python scripts/model_card.py --model models/default.onnx --eval models/default.eval_val.json \
  --export models/default.export.json --out models/default.card.json
