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
        width = feeds["input_ids"].shape[1]
        target = next((b for b in self.buckets if b >= width), width)
        inputs = []
        for name, value in feeds.items():
            padded = np.pad(value, ((0, 0), (0, target - width)))
            tensor = self._grpc.InferInput(name, list(padded.shape), "INT64")
            tensor.set_data_from_numpy(padded)
            inputs.append(tensor)
        return triton_infer(self._client, self.model_name, inputs, self.timeout_s).as_numpy("scores").reshape(-1)

    def is_ready(self) -> bool:
        return triton_model_ready(self._client, self.model_name)


def triton_infer(client, model_name: str, inputs: list, timeout_s: float):
    """One Triton inference; its failures as the server's backend errors (504 for time-outs, else 503)."""
    from tritonclient.utils import InferenceServerException

    try:
        return client.infer(model_name, inputs, client_timeout=timeout_s)
    except InferenceServerException as error:
        if "deadline" in str(error).lower() or "timeout" in str(error).lower():
            raise BackendTimeout(f"Triton did not answer within {timeout_s} s") from error
        raise BackendUnavailable(f"Triton error: {error.message()}") from error


def triton_model_ready(client, model_name: str) -> bool:
    from tritonclient.utils import InferenceServerException

    try:
        return bool(client.is_model_ready(model_name, client_timeout=2.0))
    except InferenceServerException:
        return False
