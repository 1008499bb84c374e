"""The rerank service: for each rerank model of the repository, a scorer and a batching queue.

A request is tokenized on the tokenization thread, then queued; the batcher merges queued
requests into batches, assembled by `PairScorer.prepare` and run by `PairScorer.run_prepared`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from rankstill.model_repo import ModelEntry, default_model_name, list_models
from rankstill.pair_tokenizer import PairTokenizer, TokenizedPairs
from rankstill.scoring import PairScorer, PreparedBatch, Runner, onnx_runners

from .backend import TritonRunner
from .batcher import MicroBatcher, Retired
from .config import BackendKind, LongDocuments, ServeSettings
from .errors import RequestError
from .metrics import ServerMetrics

log = logging.getLogger("rankstill")
# Scored by every model version before it serves: it must answer one finite logit per pair.
CHECK_QUERY = "cordless drill"
CHECK_DOCUMENTS = ["DEWALT 20V cordless drill kit", "bathroom faucet"]


def _tokens(pairs: TokenizedPairs) -> int:
    return int(pairs.lengths.sum())


@dataclass(frozen=True)
class RerankQuery:
    """What every API dialect asks for."""

    query: str
    documents: list[str]
    model: str | None = None
    long_documents: LongDocuments | None = None  # None: the server's setting
    truncate: bool = True  # False: a pair longer than the model's window is an error (TEI's truncate=false)
    cut_left: bool = False  # truncation keeps the end of a text (TEI's truncation_direction=Left)
    document_tokens: int | None = None  # each document cut to this many tokens first (Cohere's max_tokens_per_doc)


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

    def best(self, top_n: int | None, raw: bool = False) -> tuple[list[int], list[float]]:
        """Indices of the `top_n` best documents (all: None), best first, and their scores (`raw`: logits)."""
        order = self.order()[:top_n]
        return order.tolist(), (self.logits if raw else self.scores)[order].astype(np.float64).tolist()


@dataclass
class LoadedModel:
    entry: ModelEntry
    scorer: PairScorer
    batcher: MicroBatcher[TokenizedPairs, PreparedBatch, np.ndarray]


class RerankService:
    def __init__(self, settings: ServeSettings, metrics: ServerMetrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.default_model = settings.model or default_model_name(settings.model_repo)
        self.ready = False
        self.refused: dict[str, str] = {}  # "name version N" -> why it was not loaded
        self._refused_files: set[tuple] = set()  # (path, size, mtime) of model files refused: not tried again
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        # Tokenization has a thread of its own, so it overlaps the model runs of the inference thread.
        self._tokenize_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")

    def load(self) -> None:
        """Each rerank model at its newest version that loads and passes the check: a broken or
        half-copied newest version is refused (and logged), and the version before it serves."""
        for entry in self._rerank_entries():
            model = self._load_newest(entry, newer_than=0)
            if model is not None:
                self.models[entry.name] = model
        if self.default_model not in self.models:
            raise LookupError(f"default model {self.default_model!r} is not a loadable rerank model in "
                              f"{self.settings.model_repo} (found {sorted(self.models)}; refused {self.refused})")

    def _rerank_entries(self) -> list[ModelEntry]:
        return [entry for entry in list_models(self.settings.model_repo) if entry.task == "rerank"]

    def _load_newest(self, entry: ModelEntry, newer_than: int) -> LoadedModel | None:
        for version in entry.versions():
            if version <= newer_than:
                return None
            candidate = dataclasses.replace(entry, version=version)
            stat = candidate.onnx_path.stat()
            file_key = (str(candidate.onnx_path), stat.st_size, stat.st_mtime_ns)
            if file_key in self._refused_files:
                continue
            try:
                return self._load_checked(candidate)
            except Exception as error:
                self._refused_files.add(file_key)
                self.refused[f"{entry.name} version {version}"] = f"{type(error).__name__}: {error}"
                log.error("model %s version %s refused, not served: %s", entry.name, version, error)
        return None

    def _load_checked(self, entry: ModelEntry) -> LoadedModel:
        """Load, warm up and check a model version; raises if it cannot serve."""
        tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
        scorer = PairScorer(tokenizer, self._runners(entry), self.settings.max_batch_pairs)
        if scorer.runner.is_ready():  # a remote backend may come up later
            logits = scorer.score([CHECK_QUERY] * len(CHECK_DOCUMENTS), CHECK_DOCUMENTS)
            if logits.shape != (len(CHECK_DOCUMENTS),) or not np.isfinite(logits).all():
                raise ValueError(f"the model answered {logits!r} to {len(CHECK_DOCUMENTS)} check pairs")
        batcher = MicroBatcher(scorer.prepare, scorer.run_prepared, _tokens, self.settings.max_batch_tokens,
                               self.settings.max_queued_tokens, self.settings.max_queue_ms / 1000,
                               self.metrics.batch_observer(entry.name))
        return LoadedModel(entry, scorer, batcher)

    def _runners(self, entry: ModelEntry) -> list[Runner]:
        if self.settings.backend == BackendKind.triton:
            return [TritonRunner(self.settings.triton_url, entry.name, entry.max_length, self.settings.triton_timeout)]
        return onnx_runners(entry.onnx_path, self.settings.threads, self.settings.lanes)

    def is_ready(self) -> bool:
        return self.ready and all(model.scorer.runner.is_ready() for model in self.models.values())

    def start(self) -> None:
        for model in self.models.values():
            self._activate(model)
        self.ready = True

    def _activate(self, model: LoadedModel) -> None:
        model.batcher.start()
        self.metrics.queued_tokens.labels(model.entry.name).set_function(lambda b=model.batcher: b.queued)

    async def reload(self) -> dict:
        """Load new versions from the repository; each is swapped in only after it loaded and passed
        the check, and the version it replaces answers what it had accepted."""
        async with self._reload_lock:
            loaded = {}
            for entry in await asyncio.to_thread(self._rerank_entries):
                current = self.models.get(entry.name)
                newer_than = current.entry.version if current else 0
                model = await asyncio.to_thread(self._load_newest, entry, newer_than)
                if model is None:
                    continue
                self._activate(model)
                self.models[entry.name] = model  # from here on, requests go to the new version
                loaded[entry.name] = model.entry.version
                if current is not None:
                    retiring = asyncio.create_task(current.batcher.stop())
                    self._retiring.add(retiring)
                    retiring.add_done_callback(self._retiring.discard)
                log.info("model %s: now serving version %s", entry.name, model.entry.version)
            return {"loaded": loaded, "models": self.versions(), "refused": dict(self.refused)}

    def versions(self) -> dict[str, int]:
        return {name: model.entry.version for name, model in self.models.items()}

    async def stop(self) -> None:
        """Answer what was accepted (within the shutdown deadline), then stop."""
        self.ready = False
        stopping = [model.batcher.stop() for model in self.models.values()] + list(self._retiring)
        try:
            await asyncio.wait_for(asyncio.gather(*stopping), self.settings.shutdown_timeout)
        except asyncio.TimeoutError:
            log.error("shutdown deadline passed with requests still queued")
        self._tokenize_thread.shutdown(wait=False, cancel_futures=True)

    def resolve(self, name: str | None) -> LoadedModel:
        """The model a request names, through the aliases; a name the server does not hold gets the
        default model (clients send their own default names), or 404 with --strict-models."""
        name = self.settings.aliases.get(name, name) if name else self.default_model
        if name in self.models:
            return self.models[name]
        if self.settings.strict_models:
            raise RequestError(404, f"unknown model {name!r}; available: {sorted(self.models)}")
        return self.models[self.default_model]

    async def rank(self, query: RerankQuery) -> Ranking:
        self._check_size(query)
        while True:
            model = self.resolve(query.model)
            began = time.perf_counter()
            pairs = await asyncio.get_running_loop().run_in_executor(self._tokenize_thread, self._tokenize, model, query)
            self.metrics.stage_seconds.labels(model.entry.name, "tokenize").observe(time.perf_counter() - began)
            try:
                logits = await model.batcher.submit(pairs)
                break
            except Retired:  # a new version was swapped in meanwhile: tokenize for it and queue there
                continue
        logits = pairs.per_document(logits, len(query.documents))
        return Ranking(model.entry.name, logits, _tokens(pairs), int(pairs.truncated.sum()),
                       model.entry.max_length)

    def _check_size(self, query: RerankQuery) -> None:
        if len(query.documents) > self.settings.max_documents:
            raise RequestError(422, f"too many documents: {len(query.documents)} > the maximum of "
                                    f"{self.settings.max_documents} per request")
        limit = self.settings.max_document_chars
        too_long = [i for i, document in enumerate(query.documents) if len(document) > limit]
        if len(query.query) > limit or too_long:
            what = "the query" if len(query.query) > limit else f"documents {too_long[:10]}"
            raise RequestError(422, f"{what}: more than {limit} characters (the server's max_document_chars)")

    def _tokenize(self, model: LoadedModel, query: RerankQuery) -> TokenizedPairs:
        """On the tokenization thread: the request's pairs, or a 4xx saying why there are none."""
        try:
            if (query.long_documents or self.settings.long_documents) is LongDocuments.chunk:
                pairs = model.scorer.tokenize_windows(query.query, query.documents, self.settings.chunk_overlap)
            else:
                pairs = model.scorer.tokenize([query.query] * len(query.documents), query.documents,
                                              query.document_tokens, query.cut_left)
        except ValueError as error:
            raise RequestError(422, str(error)) from None
        except Exception as error:  # the tokenizer refused this text: only this request fails
            raise RequestError(422, f"the text could not be tokenized: {error}") from None
        if not query.truncate and pairs.truncated.any():
            too_long = np.flatnonzero(pairs.truncated)
            raise RequestError(413, f"documents {too_long[:10].tolist()} do not fit the model's window of "
                                    f"{model.entry.max_length} tokens with the query (truncate=false)")
        tokens = _tokens(pairs)
        if tokens > self.settings.max_request_tokens:
            raise RequestError(422, f"the request needs {tokens} tokens > the maximum of "
                                    f"{self.settings.max_request_tokens} per request")
        return pairs
