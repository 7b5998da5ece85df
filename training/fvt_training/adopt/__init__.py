"""``fvt-train adopt``: a public ONNX model inspected, given a category head and our contract."""
