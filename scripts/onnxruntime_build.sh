# Sourced by run_demo.sh and run_tests.sh. ONNXRUNTIME=gpu (default: onnxruntime-gpu, with the
# TensorRT and CUDA providers and the CPU fallback) or cpu (onnxruntime: CPU only, a much
# smaller download) picks the ONNX Runtime build, i.e. the setup.py extra. Both builds install
# the module onnxruntime, so remove_other_onnxruntime VENV takes the other one out first.
ONNXRUNTIME=${ONNXRUNTIME:-gpu}
case "$ONNXRUNTIME" in
  gpu) OTHER_ONNXRUNTIME=onnxruntime ;;
  cpu) OTHER_ONNXRUNTIME=onnxruntime-gpu ;;
  *) echo "ONNXRUNTIME must be gpu or cpu, got '$ONNXRUNTIME'" >&2; exit 2 ;;
esac

remove_other_onnxruntime() {
  "$1/bin/python" -m pip uninstall -y -q "$OTHER_ONNXRUNTIME" >/dev/null 2>&1 || true
}
