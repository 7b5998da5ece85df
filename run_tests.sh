#!/usr/bin/env bash
# Run the test suite on a fresh machine: creates a venv, installs the packages from this
# repository with the versions of constraints.txt (ROS 2 from the PyPI wheels of one distro),
# then runs ruff and pytest. Extra arguments go to pytest.
#
#   ./run_tests.sh [--distro kilted|jazzy] [pytest arguments]
#
# kilted (default): venv .venv, the node and the training package (TensorFlow included, about
#   1.5 GB), Debian's chromium for the review app's browser test; pytest test training/tests.
# jazzy: venv .venv-jazzy, the node package on the ros-jazzy-* wheels; pytest test. The
#   training package has no ROS code and is tested once, in the kilted run.
# ONNXRUNTIME=gpu (default) or cpu picks the ONNX Runtime build (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")"

DISTRO=kilted
if [ "${1:-}" = --distro ]; then
  DISTRO=${2:-}
  shift 2 || shift
fi
source scripts/bootstrap.sh
case "$DISTRO" in
  kilted)
    VENV=${VENV:-.venv}
    PACKAGES=(-e ".[kilted,$ONNXRUNTIME,tools,test]" -e "./training[$ONNXRUNTIME,test]")
    TESTS=(test training/tests) ;;
  jazzy)
    VENV=${VENV:-.venv-jazzy}
    PACKAGES=(-e ".[jazzy,$ONNXRUNTIME,tools,test]")
    TESTS=(test) ;;
  *) echo "run_tests.sh: --distro must be kilted or jazzy, got '$DISTRO'" >&2; exit 2 ;;
esac

echo "== installing into $VENV (ROS 2 $DISTRO, onnxruntime build: $ONNXRUNTIME)"
bootstrap_venv "$VENV" "${PACKAGES[@]}"

if [ "$DISTRO" = kilted ] && ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo '== installing chromium + chromium-driver for the review app browser test'
    if ! { apt-get update -qq >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
           >/dev/null; }; then
      echo 'WARNING: could not install chromium; the browser test will be SKIPPED'
    fi
  else
    echo 'WARNING: no chromedriver and no root apt-get to install it; the review app browser' \
         'test will be SKIPPED (apt-get install -y chromium chromium-driver)'
  fi
fi

echo '== ruff'
"$VENV/bin/ruff" check .
echo "== pytest (ROS 2 $DISTRO)"
"$VENV/bin/python" -m pytest "${TESTS[@]}" "$@"
