#!/usr/bin/env bash
# Rerun the node figures that README.md ("Performance") and models/README.md quote, with the
# shipped model, into output/release/ (run it on an otherwise idle machine, after
# scripts/release_default_model.sh):
#   scripts/release_benchmarks.sh runs/lite0_fpn_480
# RUN is the training run behind models/default.onnx (for the Keras row of the deployment
# benchmark); its model.int8.onnx stands in for models/default.int8.onnx when that one is not
# shipped. Also redraws docs/demo_overlay.png and docs/review.png.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
OUT=output/release
mkdir -p "$OUT"
INT8=models/default.int8.onnx
[ -f "$INT8" ] || INT8=$RUN/model.int8.onnx
uptime | tee "$OUT/load_before.txt"

# The main job: all 40 frames of the bundled recording at 5 Hz.
demo --out "$OUT/demo" --no-gif | tee "$OUT/demo.txt"
cp "$OUT/demo/overlays/$(ls "$OUT/demo/overlays" | sed -n 20p)" docs/demo_overlay.png

# Keras predict against ONNX Runtime float32 / int8 against the node, per frame.
python training/scripts/bench_deployment.py --run "$RUN" --model models/default.onnx \
  --int8 "$INT8" | tee "$OUT/deployment.txt"

# A 480x360 camera (CamVid's) at 30 Hz for 60 s, float32 and int8, shipped DDS profile.
bench --sizes 480x360 --rate 30 --duration 60 --transport profile \
  --json "$OUT/bench_480x360_fp32.json" | tee "$OUT/bench_480x360_fp32.txt"
bench --model "$INT8" --sizes 480x360 --rate 30 --duration 60 --transport profile \
  --json "$OUT/bench_480x360_int8.json" | tee "$OUT/bench_480x360_int8.txt"

# Larger cameras at 30 Hz (profile and middleware defaults), and at 10 Hz (never busy).
bench --duration 30 --json "$OUT/bench_30hz.json" | tee "$OUT/bench_30hz.txt"
bench --duration 30 --rate 10 --transport profile --json "$OUT/bench_10hz.json" \
  | tee "$OUT/bench_10hz.txt"
uptime | tee "$OUT/load_after.txt"

python scripts/review_screenshot.py --data data/camvid/480x360 --model models/default.onnx \
  --image 0016E5_07959 --out docs/review.png
