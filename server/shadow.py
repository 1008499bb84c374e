"""Shadow scoring: copy a sample of live requests to the teacher and measure agreement.

Runs entirely beside the main path: the request handler only offers a job to a bounded
queue after the response is sent (a full queue drops the job and counts it). Workers call
the teacher with a timeout and a concurrency limit; a circuit breaker stops calling a
teacher that keeps failing. For every answered job the agreement between the student's
order and the teacher's scores is recorded (Prometheus histograms and a rolling summary),
and the pairs with both scores go to the Parquet label store for retraining.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from prometheus_client import Counter, Histogram

from rankstill.metrics import kendall_tau, ndcg_at_k

from .config import ShadowSettings

AGREEMENT_BUCKETS = (-1, -0.5, 0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1)


def agreement(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> dict[str, float | None]:
    """How closely the student's order follows the teacher's scores (teacher logits)."""
    top_student = set(np.argsort(-student, kind="stable")[:k])
    top_teacher = set(np.argsort(-teacher, kind="stable")[:k])
    return {
        "ndcg": ndcg_at_k(student, 1.0 / (1.0 + np.exp(-teacher)), k),
        "kendall_tau": kendall_tau(student, teacher),
        "top1": float(np.argmax(student) == np.argmax(teacher)),
        "overlap": len(top_student & top_teacher) / min(k, student.size),
    }


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float):
        self.failures_to_open = failures
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.opened_at: float | None = None

    def allows(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.cooldown_s:
            self.opened_at = None  # half-open: let one call try
            return True
        return False

    def record(self, ok: bool) -> None:
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if self.consecutive_failures >= self.failures_to_open:
            self.opened_at = time.monotonic()

    @property
    def open(self) -> bool:
        return self.opened_at is not None


@dataclass
class _Job:
    model: str
    query: str
    documents: list[str]
    student_logits: np.ndarray


class RemoteTeacher:
    teacher_id = "shadow-teacher"

    def __init__(self, url: str, timeout_s: float):
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s)

    async def score(self, query: str, documents: list[str]) -> np.ndarray:
        response = await self._client.post("/rerank", json={"query": query, "texts": documents, "raw_scores": True})
        response.raise_for_status()
        scores = np.empty(len(documents), dtype=np.float32)
        answered = response.json()
        if len(answered) != len(documents):
            raise ValueError(f"teacher answered {len(answered)} scores for {len(documents)} documents")
        for result in answered:
            scores[result["index"]] = result["score"]
        return scores

    async def close(self) -> None:
        await self._client.aclose()


class ShadowScorer:
    def __init__(self, settings: ShadowSettings, registry, teacher: RemoteTeacher | None = None):
        self.settings = settings
        self.teacher = teacher or self._teacher_for(settings)
        self.teacher_id = settings.teacher_id or self.teacher.teacher_id
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown)
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task] = []
        self._rows: list[dict] = []
        self._parts_written = 0
        self._recent: collections.deque[dict] = collections.deque(maxlen=1000)
        self.counts = collections.Counter()
        self.jobs = Counter("rankstill_shadow_jobs", "Shadow jobs by outcome", ["outcome"], registry=registry)
        self.teacher_seconds = Histogram("rankstill_shadow_teacher_seconds", "Teacher call latency", registry=registry)
        self.agreement = Histogram("rankstill_shadow_agreement", "Student-teacher agreement per shadowed request",
                                   ["metric"], buckets=AGREEMENT_BUCKETS, registry=registry)

    @staticmethod
    def _teacher_for(settings: ShadowSettings):
        if settings.is_remote:
            return RemoteTeacher(settings.teacher, settings.timeout)
        from .local_teacher import LocalTeacher

        return LocalTeacher(Path(settings.teacher), settings.threads, max_pending=settings.concurrency)

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.queue)
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.settings.concurrency)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self.flush()
        await self.teacher.close()

    def wants(self, header: str | None) -> bool:
        """Whether to shadow a request: its X-Shadow header forces (1) or suppresses (0), else the sample rate."""
        return header == "1" or (header != "0" and random.random() < self.settings.rate)

    def offer(self, model: str, query: str, documents: list[str], student_logits: np.ndarray) -> bool:
        """Queue a job without ever waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Job(model, query, documents, student_logits))
        except asyncio.QueueFull:
            self._count("dropped")
            return False
        self._count("queued")
        return True

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.jobs.labels(outcome).inc()

    async def _work(self) -> None:
        while True:
            await self._shadow(await self._queue.get())

    async def _shadow(self, job: _Job) -> None:
        if not self.breaker.allows():
            self._count("skipped_circuit_open")
            return
        began = time.perf_counter()
        try:
            teacher = await asyncio.wait_for(self.teacher.score(job.query, job.documents), self.settings.timeout)
        except Exception:  # a slow, failing or absent teacher only costs shadow metrics
            self.breaker.record(ok=False)
            self._count("error")
            return
        self.breaker.record(ok=True)
        self.teacher_seconds.observe(time.perf_counter() - began)
        self._count("scored")
        measured = agreement(job.student_logits, teacher, self.settings.k)
        for metric, value in measured.items():
            if value is not None:
                self.agreement.labels(metric).observe(value)
        self._recent.append(measured)
        await self._store(job, teacher)

    async def _store(self, job: _Job, teacher: np.ndarray) -> None:
        if self.settings.labels is None:
            return
        for document, student_score, teacher_score in zip(job.documents, job.student_logits, teacher):
            self._rows.append({
                "query": job.query, "item_id": hashlib.sha1(document.encode()).hexdigest()[:16],
                "item_text": document, "teacher_score": float(teacher_score),
                "teacher_id": self.teacher_id, "teacher_version": self.settings.teacher,
                "source": "shadow", "split": "train", "human_label": None, "bm25_score": None,
                "student_score": float(student_score), "student_model": job.model,
            })
        if len(self._rows) >= self.settings.flush_rows:
            await self.flush()

    async def flush(self) -> None:
        if not self._rows or self.settings.labels is None:
            return
        from rankstill.label_store import LabelStore  # pyarrow only when a store is configured

        rows, self._rows = self._rows, []
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        name = f"shadow-{time.strftime('%Y%m%d-%H%M%S')}-{self._parts_written:05d}"
        self._parts_written += 1
        await asyncio.to_thread(LabelStore(self.settings.labels).write_part, name, columns)

    def summary(self) -> dict:
        recent = list(self._recent)
        summary = {"counts": dict(self.counts), "circuit_open": self.breaker.open,
                   "queued_now": self._queue.qsize() if self._queue else 0, "window": len(recent)}
        for metric in ("ndcg", "kendall_tau", "top1", "overlap"):
            values = np.array([m[metric] for m in recent if m[metric] is not None], dtype=np.float64)
            summary[metric] = None if values.size == 0 else {
                "mean": float(values.mean()), "p10": float(np.percentile(values, 10)),
                "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90))}
        return summary
