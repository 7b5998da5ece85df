#!/usr/bin/env bash
# Rerun the node figures that README.md ("Performance") and models/README.md quote, with the
# shipped models, into output/release/ (run it on an otherwise idle machine, after
# scripts/release_default_model.sh):
#   scripts/release_benchmarks.sh
# Every bench configuration runs REPEAT times (default 3), one after the other; the README
# quotes the worst run of each, with the load average before and after. Also redraws
# docs/demo_overlay.png and docs/review.png. About 40 minutes on a 2-core machine.
#   SAME_GRAPH_AS=runs/previous/default.onnx scripts/release_benchmarks.sh
# is for a release that changed only the weights (the previous models/default.onnx given): it
# checks that both files hold the same network (operators and weight shapes up to their
# first output, the logits; the contract version 2 tail may differ), then reruns only what the
# weights change or the targets need (about 5 minutes): both demos (accuracy on the
# recording), the 480x360 camera at 30 Hz with the int8 file, the int8 file's speed-up and
# the review picture. The other figures keep those of the previous file, which are the same
# network's.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=output/release
REPEAT=${REPEAT:-3}
mkdir -p "$OUT"
if [[ -n ${SAME_GRAPH_AS:-} ]]; then
  # The network is the graph from the input to the first output (the logits), extracted as
  # training/scripts/time_sessions.py does for its network timing.
  python - models/default.onnx "$SAME_GRAPH_AS" <<'PY'
import sys
import onnx
import onnx.utils
def network(path):  # operator types and weight shapes from the input to the logits
    model = onnx.load(path)
    g = model.graph
    net = onnx.utils.Extractor(model).extract_model([g.input[0].name], [g.output[0].name])
    return ([n.op_type for n in net.graph.node],
            sorted((tuple(t.dims), t.data_type) for t in net.graph.initializer))
new, old = sys.argv[1:]
if network(new) != network(old):
    sys.exit(f'{new} and {old} differ in operators or weight shapes up to their first output: '
             'run every figure (without SAME_GRAPH_AS)')
print(f'{new}: the same network as {old}, new weights: rerunning the figures they change')
PY
fi
uptime | tee "$OUT/load_before.txt"

# What new weights change or the targets need. The main job: all 40 frames of the bundled
# recording at 5 Hz, precision auto (the int8 file on this CPU), then the same with the
# float32 file.
demo --out "$OUT/demo" --no-gif | tee "$OUT/demo.txt"
demo --out "$OUT/demo_float32" --no-gif --precision float32 | tee "$OUT/demo_float32.txt"
cp "$OUT/demo/overlays/$(ls "$OUT/demo/overlays" | sed -n 20p)" docs/demo_overlay.png
# A 480x360 camera (CamVid's) at 30 Hz for 60 s, shipped DDS profile, precision auto (the
# int8 file on this CPU).
cam480=(--sizes 480x360 --rate 30 --duration 60 --transport profile --repeat "$REPEAT")
bench "${cam480[@]}" --json "$OUT/bench_480x360_auto.json" | tee "$OUT/bench_480x360_auto.txt"
# The two files' network time and time per frame, in turns (the int8 target: >= 1.4x).
for i in $(seq "$REPEAT"); do
  python training/scripts/time_sessions.py models/default.onnx models/default.int8.onnx \
    --runs 100
done | tee "$OUT/time_sessions.txt"

if [[ -z ${SAME_GRAPH_AS:-} ]]; then
  # Keras predict against ONNX Runtime float32 / int8 against the node, per frame. The Keras
  # row times the default's network built from its configuration (the weights do not change
  # the time, and the training run folder is not kept).
  python training/scripts/bench_deployment.py --config training/configs/camvid_lite0_fpn.yaml \
    --model models/default.onnx | tee "$OUT/deployment.txt"
  # The same 480x360 camera before release #17 (the float32 file with spinning threads, the
  # node's defaults until then) and the float32 file now.
  bench "${cam480[@]}" --precision float32 --node-param intra_op_spinning:=true \
    --json "$OUT/bench_480x360_before.json" | tee "$OUT/bench_480x360_before.txt"
  bench "${cam480[@]}" --precision float32 \
    --json "$OUT/bench_480x360_fp32.json" | tee "$OUT/bench_480x360_fp32.txt"
  # 2048x1024 at 20 Hz (every frame) and at 30 Hz (profile and middleware defaults; also
  # 1024x512), then a camera the node never waits for: 10 Hz.
  bench --sizes 2048x1024 --rate 20 --duration 60 --transport profile --repeat "$REPEAT" \
    --json "$OUT/bench_2048x1024_20hz.json" | tee "$OUT/bench_2048x1024_20hz.txt"
  bench --sizes 2048x1024 --rate 30 --duration 60 --transport profile --repeat "$REPEAT" \
    --json "$OUT/bench_2048x1024_30hz.json" | tee "$OUT/bench_2048x1024_30hz.txt"
  bench --duration 30 --repeat "$REPEAT" --json "$OUT/bench_30hz.json" \
    | tee "$OUT/bench_30hz.txt"
  bench --duration 30 --rate 10 --transport profile --repeat "$REPEAT" \
    --json "$OUT/bench_10hz.json" | tee "$OUT/bench_10hz.txt"
  # A camera slow enough that the model idles between frames (5 Hz), float32 file: ONNX
  # Runtime threads spinning (the default until release #17) or sleeping (the default now).
  for spinning in true false; do
    bench --sizes 480x360 --rate 5 --duration 30 --transport profile --repeat "$REPEAT" \
      --precision float32 --node-param "intra_op_spinning:=$spinning" \
      --json "$OUT/bench_5hz_spinning_$spinning.json" \
      | tee "$OUT/bench_5hz_spinning_$spinning.txt"
  done
  for i in $(seq "$REPEAT"); do
    python scripts/bench_node_outputs.py
  done | tee "$OUT/node_outputs.txt"
fi
uptime | tee "$OUT/load_after.txt"

python scripts/review_screenshot.py --data data/camvid/480x360 --model models/default.onnx \
  --image 0016E5_07959 --out docs/review.png
