#!/usr/bin/env bash
# GPU check (under 5 minutes): on a machine with an NVIDIA GPU, install what the node's GPU
# providers need into a venv, then run scripts/gpu_check.py: TensorRT fp32/fp16/int8 and CUDA,
# engine build time, cached restart time, parity with the CPU and per-frame latency.
# Without an NVIDIA GPU it says so and exits 0.
#
#   scripts/gpu_check.sh            (VENV=/tmp/fvt-gpu-venv by default; reused when present)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi missing or lists none); nothing to check."
  exit 0
fi
nvidia-smi -L

VENV=${VENV:-/tmp/fvt-gpu-venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Only the inference core runs (no rclpy): ONNX Runtime and its GPU libraries, plus what the
# recording, the int8 quantization and the v2 rewrite read. onnxruntime-gpu 1.31
# (constraints.txt) links CUDA 13, cuDNN 9 and TensorRT 10 (libnvinfer.so.10), hence the pins.
"$VENV/bin/python" -m pip install -q -c constraints.txt 'onnxruntime-gpu[cuda,cudnn]' \
  'nvidia-cublas>=13,<14' 'tensorrt-cu13>=10.13,<11' numpy opencv-python-headless rosbags \
  onnx ml_dtypes pyyaml
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The pip CUDA/cuDNN/TensorRT libraries are not on the loader's path: name their folders.
LIBS=$(find "$SITE/nvidia" "$SITE/tensorrt_libs" -name 'lib*.so*' -printf '%h\n' 2>/dev/null \
  | sort -u | paste -sd:)
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHONPATH=.:training timeout 280 "$VENV/bin/python" scripts/gpu_check.py "$@"
