"""Inference backends behind one small interface: token id batches in, one logit per pair out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort


class BackendUnavailable(RuntimeError):
    """The inference server cannot be reached or refused the request (maps to 503)."""


class BackendTimeout(RuntimeError):
    """The inference server did not answer in time (maps to 504)."""


class Backend(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch] for input_ids / attention_mask / token_type_ids [batch, seq]."""

    def is_ready(self) -> bool:
        """Whether the model can serve now."""


class OnnxRuntimeBackend:
    """The embedded default: the model runs in-process in ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: Path, threads: int | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads must not spin: tokenization and the event loop need the same few cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        used = {name: value for name, value in feeds.items() if name in self._input_names}
        return self._session.run(None, used)[0].reshape(-1)

    def is_ready(self) -> bool:
        return True


def length_buckets(max_length: int, step: int = 16) -> list[int]:
    """Sequence widths to pad to: multiples of `step` up to `max_length` (and max_length itself)."""
    return sorted({*range(step, max_length, step), max_length})


class TritonBackend:
    """The model runs in a Triton Inference Server, reached over gRPC.

    Token ids are padded to a few fixed widths: Triton's dynamic batcher merges only
    requests whose tensors have the same shape.
    """

    def __init__(self, url: str, model_name: str, max_length: int, timeout_s: float = 10.0):
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
