"""The rerank service: one batching queue and engine per model of the repository."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankstill.model_repo import ModelEntry, default_model_name, list_models
from rankstill.pair_tokenizer import PairTokenizer

from .backend import Backend, OnnxRuntimeBackend, TritonBackend
from .batcher import MicroBatcher
from .engine import Scored, ScoringEngine
from .metrics import ServerMetrics
from .settings import ServerSettings


class RequestError(ValueError):
    """Bad input found after validation of the request body (maps to a 4xx)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class LoadedModel:
    entry: ModelEntry
    engine: ScoringEngine
    batcher: MicroBatcher


@dataclass
class Ranking:
    model: str
    logits: np.ndarray
    tokens: int
    truncated: int

    @property
    def scores(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))

    def order(self) -> np.ndarray:
        return np.argsort(-self.logits, kind="stable")


class RerankService:
    def __init__(self, settings: ServerSettings, metrics: ServerMetrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.default_model = settings.default_model or default_model_name(settings.model_repo)
        self.ready = False

    def load(self) -> None:
        for entry in list_models(self.settings.model_repo):
            if entry.task != "rerank":
                continue
            tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
            engine = ScoringEngine(tokenizer, self._backend(entry), chunk_pairs=self.settings.max_batch_pairs)
            batcher = MicroBatcher(engine.score, self.settings.max_batch_pairs,
                                   self.settings.max_queued_pairs, self.metrics.batch_observer(entry.name))
            self.models[entry.name] = LoadedModel(entry, engine, batcher)
        if self.default_model not in self.models:
            raise LookupError(f"default model {self.default_model!r} is not a rerank model in "
                              f"{self.settings.model_repo} (found {sorted(self.models)})")

    def _backend(self, entry: ModelEntry) -> Backend:
        if self.settings.backend == "triton":
            return TritonBackend(self.settings.triton_url, entry.name, entry.max_length,
                                 self.settings.triton_timeout_s)
        if self.settings.backend == "onnxruntime":
            return OnnxRuntimeBackend(entry.onnx_path, self.settings.threads)
        raise ValueError(f"unknown backend {self.settings.backend!r} (onnxruntime or triton)")

    def is_ready(self) -> bool:
        return self.ready and all(model.engine.backend.is_ready() for model in self.models.values())

    def start(self) -> None:
        for model in self.models.values():
            if model.engine.backend.is_ready():  # a remote backend may come up later
                model.engine.score(["warm-up query"], ["warm-up document"])
            model.batcher.start()
            self.metrics.queued_pairs.labels(model.entry.name).set_function(
                lambda b=model.batcher: b.queued_pairs)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for model in self.models.values():
            await model.batcher.stop()

    def resolve(self, name: str | None) -> LoadedModel:
        name = name or self.default_model
        if name not in self.models:
            raise RequestError(404, f"unknown model {name!r}; available: {sorted(self.models)}")
        return self.models[name]

    async def rank(self, query: str, documents: list[str], model_name: str | None) -> Ranking:
        if len(documents) > self.settings.max_documents:
            raise RequestError(422, f"too many documents: {len(documents)} > the maximum of "
                                    f"{self.settings.max_documents} per request")
        model = self.resolve(model_name)
        scored: Scored = await model.batcher.submit([query] * len(documents), documents)
        return Ranking(model.entry.name, scored.logits, int(scored.tokens.sum()), int(scored.truncated.sum()))
