"""Server settings (CLI flags map onto these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .shadow import ShadowSettings


@dataclass(frozen=True)
class ServerSettings:
    model_repo: Path = Path("model_repo")
    default_model: str | None = None  # None: the repository's default
    default_recommend_model: str | None = None  # None: the repository's default recommender
    max_documents: int = 1000  # per request
    max_batch_pairs: int = 256  # pairs merged into one model run
    max_queued_pairs: int = 8192  # beyond this, requests get 503 + Retry-After
    threads: int | None = None  # ONNX Runtime intra-op threads; None: all cores
    retry_after_seconds: int = 1
    backend: str = "onnxruntime"  # onnxruntime (in-process) | triton
    triton_url: str = "127.0.0.1:8001"  # gRPC address of a Triton server (backend=triton)
    triton_timeout_s: float = 10.0
    shadow: ShadowSettings | None = None  # copy a sample of requests to a teacher
