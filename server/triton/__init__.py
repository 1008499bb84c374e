"""Serving `model_repo/` from a real Triton Inference Server."""
