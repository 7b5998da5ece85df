"""ONNX files: ``fvt-train export``, its graph rewrites, parity check, variants, contract v2."""
