"""The `/rerank` server: FastAPI over a batching queue over ONNX Runtime (no torch here)."""
