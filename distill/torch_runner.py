"""A PyTorch sequence-classification model as a `rankstill.scoring.Runner`, so that training-time
scoring (validation, export parity references, teacher labels) batches and pads exactly as the
server does."""

from __future__ import annotations

import inspect

import numpy as np
import torch


def resolve_device(device: str) -> str:
    """`auto` is the GPU where PyTorch sees one, else the CPU; other names pass through (cpu, cuda, cuda:1)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchRunner:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._accepted = set(inspect.signature(model.forward).parameters)  # decoders take no token_type_ids
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: torch.from_numpy(value).to(self.device) for name, value in feeds.items() if name in self._accepted}
        return self.model(**inputs).logits[:, 0].float().cpu().numpy()

    def is_ready(self) -> bool:
        return True
