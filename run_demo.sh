#!/usr/bin/env bash
# The main job on a fresh machine: creates .venv, installs the node package (ROS 2 from the
# PyPI wheels), then runs the segmentation node on the bundled recording with the bundled
# model. Extra arguments go to the `demo` command (see `demo --help`).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[ros-pypi]'
exec "$VENV/bin/demo" "$@"
