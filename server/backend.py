"""Inference backends behind one small interface: token id batches in, one logit per pair out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort


class Backend(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch] for input_ids / attention_mask / token_type_ids [batch, seq]."""


class OnnxRuntimeBackend:
    """The embedded default: the model runs in-process in ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: Path, threads: int | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        used = {name: value for name, value in feeds.items() if name in self._input_names}
        return self._session.run(None, used)[0].reshape(-1)
