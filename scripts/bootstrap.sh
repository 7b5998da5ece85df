# Sourced by run_demo.sh and run_tests.sh (from the repository root): the venv both build.
#
# ONNXRUNTIME=gpu (default: onnxruntime-gpu, with the TensorRT and CUDA providers and the CPU
# fallback) or cpu (onnxruntime: CPU only, a much smaller download) picks the ONNX Runtime
# build, i.e. the setup.py extra. Both builds install the module onnxruntime, so the other one
# is taken out first. PYTHON (default python3) creates the venv.
ONNXRUNTIME=${ONNXRUNTIME:-gpu}
case "$ONNXRUNTIME" in
  gpu) OTHER_ONNXRUNTIME=onnxruntime ;;
  cpu) OTHER_ONNXRUNTIME=onnxruntime-gpu ;;
  *) echo "ONNXRUNTIME must be gpu or cpu, got '$ONNXRUNTIME'" >&2; exit 2 ;;
esac

# bootstrap_venv VENV PIP_ARGS...: create VENV if it does not exist, then install PIP_ARGS
# into it with the versions of constraints.txt.
bootstrap_venv() {
  local venv=$1
  shift
  if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip uninstall -y -q "$OTHER_ONNXRUNTIME" >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -c constraints.txt "$@"
}
