#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: creates .venv, installs both packages from this
# repository (ROS 2 from the PyPI wheels), installs headless Chromium for the review app's
# browser test when apt is available, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]' -e './training[test]'

if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  echo '== installing chromium + chromium-driver for the review app browser test'
  apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo 'WARNING: could not install chromium; the browser test will be skipped'
fi

echo '== ruff'
"$VENV/bin/ruff" check .
echo '== pytest'
"$VENV/bin/python" -m pytest test training/tests "$@"
