#!/usr/bin/env bash
# The main job on a fresh machine: creates .venv, installs the node package (ROS 2 from the
# PyPI wheels), then runs the segmentation node on the bundled recording with the bundled
# model. Extra arguments go to the `demo` command (see `demo --help`). ONNXRUNTIME=cpu installs
# the small CPU-only ONNX Runtime instead of onnxruntime-gpu (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh

VENV=${VENV:-.venv}
bootstrap_venv "$VENV" -e ".[kilted,$ONNXRUNTIME,tools]"
exec "$VENV/bin/demo" "$@"
