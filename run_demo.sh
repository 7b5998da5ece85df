#!/usr/bin/env bash
# The main job on a fresh machine: creates .venv, installs the node package (ROS 2 from the
# PyPI wheels), then runs the segmentation node on the bundled recording with the bundled
# model. Extra arguments go to the `demo` command (see `demo --help`). ONNXRUNTIME=cpu installs
# the small CPU-only ONNX Runtime instead of onnxruntime-gpu (scripts/onnxruntime_build.sh).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/onnxruntime_build.sh

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
remove_other_onnxruntime "$VENV"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[kilted,$ONNXRUNTIME]"
exec "$VENV/bin/demo" "$@"
