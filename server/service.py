"""The rerank service: for each rerank model of the repository, a scorer and a batching queue.

A request is tokenized on the tokenization thread, then queued; the batcher merges queued
requests into one model run on the inference thread (`PairScorer.run_many`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import numpy as np

from rankstill.model_repo import ModelEntry, default_model_name, list_models
from rankstill.pair_tokenizer import PairTokenizer, TokenizedPairs
from rankstill.scoring import OnnxRunner, PairScorer, Runner

from .backend import TritonRunner
from .batcher import MicroBatcher
from .config import BackendKind, ServeSettings
from .errors import RequestError
from .metrics import ServerMetrics


@dataclass(frozen=True)
class RerankQuery:
    """What every API dialect asks for."""

    query: str
    documents: list[str]
    model: str | None = None


@dataclass(frozen=True)
class Ranking:
    model: str
    logits: np.ndarray
    tokens: int
    truncated: int
    max_length: int

    @property
    def scores(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))

    def order(self) -> np.ndarray:
        return np.argsort(-self.logits, kind="stable")


@dataclass
class LoadedModel:
    entry: ModelEntry
    scorer: PairScorer
    batcher: MicroBatcher[TokenizedPairs, np.ndarray]


class RerankService:
    def __init__(self, settings: ServeSettings, metrics: ServerMetrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.default_model = settings.model or default_model_name(settings.model_repo)
        self.ready = False
        # Tokenization has a thread of its own, so it overlaps the model runs of the inference thread.
        self._tokenize_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")

    def load(self) -> None:
        for entry in list_models(self.settings.model_repo):
            if entry.task != "rerank":
                continue
            tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
            scorer = PairScorer(tokenizer, self._runner(entry), self.settings.max_batch_pairs)
            batcher = MicroBatcher(scorer.run_many, len, self.settings.max_batch_pairs, self.settings.max_queued_pairs,
                                   self.metrics.batch_observer(entry.name))
            self.models[entry.name] = LoadedModel(entry, scorer, batcher)
        if self.default_model not in self.models:
            raise LookupError(f"default model {self.default_model!r} is not a rerank model in "
                              f"{self.settings.model_repo} (found {sorted(self.models)})")

    def _runner(self, entry: ModelEntry) -> Runner:
        if self.settings.backend == BackendKind.triton:
            return TritonRunner(self.settings.triton_url, entry.name, entry.max_length, self.settings.triton_timeout)
        return OnnxRunner(entry.onnx_path, self.settings.threads)

    def is_ready(self) -> bool:
        return self.ready and all(model.scorer.runner.is_ready() for model in self.models.values())

    def start(self) -> None:
        for model in self.models.values():
            if model.scorer.runner.is_ready():  # a remote backend may come up later
                model.scorer.score(["warm-up query"], ["warm-up document"])
            model.batcher.start()
            self.metrics.queued_pairs.labels(model.entry.name).set_function(lambda b=model.batcher: b.queued)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for model in self.models.values():
            await model.batcher.stop()
        self._tokenize_thread.shutdown(wait=True)

    def resolve(self, name: str | None) -> LoadedModel:
        name = name or self.default_model
        if name not in self.models:
            raise RequestError(404, f"unknown model {name!r}; available: {sorted(self.models)}")
        return self.models[name]

    async def rank(self, query: RerankQuery) -> Ranking:
        if len(query.documents) > self.settings.max_documents:
            raise RequestError(422, f"too many documents: {len(query.documents)} > the maximum of "
                                    f"{self.settings.max_documents} per request")
        model = self.resolve(query.model)
        began = time.perf_counter()
        pairs = await asyncio.get_running_loop().run_in_executor(
            self._tokenize_thread, model.scorer.tokenize, [query.query] * len(query.documents), query.documents)
        self.metrics.stage_seconds.labels(model.entry.name, "tokenize").observe(time.perf_counter() - began)
        logits = await model.batcher.submit(pairs)
        return Ranking(model.entry.name, logits, int(pairs.lengths.sum()), int(pairs.truncated.sum()),
                       model.entry.max_length)
