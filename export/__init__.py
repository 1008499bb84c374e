"""Student → ONNX (parity-checked, optional int8) → Triton model repository entry."""
