"""The Triton backend: a `rankstill.scoring.Runner` whose model runs in a Triton Inference Server.

(The in-process ONNX Runtime runner is `rankstill.scoring.OnnxRunner`.)
"""

from __future__ import annotations

import numpy as np

from .errors import BackendTimeout, BackendUnavailable


def length_buckets(max_length: int, step: int = 16) -> list[int]:
    """Sequence widths to pad to: multiples of `step` up to `max_length` (and max_length itself)."""
    return sorted({*range(step, max_length, step), max_length})


class TritonRunner:
    """Token ids go to Triton over gRPC, padded to a few fixed widths: Triton's dynamic batcher
    merges only requests whose tensors have the same shape."""

    def __init__(self, url: str, model_name: str, max_length: int, timeout_s: float):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url)
        self.model_name = model_name
        self.buckets = length_buckets(max_length)
        self.timeout_s = timeout_s

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        width = feeds["input_ids"].shape[1]
        target = next((b for b in self.buckets if b >= width), width)
        inputs = []
        for name, value in feeds.items():
            padded = np.pad(value, ((0, 0), (0, target - width)))
            tensor = self._grpc.InferInput(name, list(padded.shape), "INT64")
            tensor.set_data_from_numpy(padded)
            inputs.append(tensor)
        try:
            result = self._client.infer(self.model_name, inputs, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            if "deadline" in str(error).lower() or "timeout" in str(error).lower():
                raise BackendTimeout(f"Triton did not answer within {self.timeout_s} s") from error
            raise BackendUnavailable(f"Triton error: {error.message()}") from error
        return result.as_numpy("scores").reshape(-1)

    def is_ready(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_model_ready(self.model_name, client_timeout=2.0))
        except InferenceServerException:
            return False
