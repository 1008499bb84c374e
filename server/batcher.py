"""An asyncio queue that merges concurrent requests into one model run.

While the model is busy, new requests wait in the queue; when it is free, the worker takes
everything queued (up to `max_batch_pairs`) as one batch. A lone request never waits for
company, and under load the wait is bounded by one model run. The queue is bounded in
pairs: a request that would overflow it is refused at once (the API answers 503 with
Retry-After), and a request already queued is always answered.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from dataclasses import dataclass, field
from typing import Callable

from .engine import Scored


class Overloaded(RuntimeError):
    """The queue is full; the caller should retry later."""


@dataclass
class _Job:
    queries: list[str]
    documents: list[str]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, score: Callable[[list[str], list[str]], Scored], max_batch_pairs: int = 256,
                 max_queued_pairs: int = 8192, on_batch: Callable[[int, Scored], None] | None = None):
        self._score = score
        self.max_batch_pairs = max_batch_pairs
        self.max_queued_pairs = max_queued_pairs
        self._on_batch = on_batch or (lambda requests, scored: None)
        self._pending: collections.deque[_Job] = collections.deque()
        self._queued_pairs = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # One inference thread: model runs are serialized, ONNX Runtime uses the cores inside.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @property
    def queued_pairs(self) -> int:
        return self._queued_pairs

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Answer every accepted request, then stop the worker."""
        while self._queued_pairs:
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, queries: list[str], documents: list[str]) -> Scored:
        if self._worker is None:
            raise RuntimeError("batcher not started")
        if self._queued_pairs and self._queued_pairs + len(queries) > self.max_queued_pairs:
            raise Overloaded(f"{self._queued_pairs} pairs already queued")
        job = _Job(queries, documents, asyncio.get_running_loop().create_future())
        self._queued_pairs += len(queries)
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    def _take_batch(self) -> list[_Job]:
        jobs = [self._pending.popleft()]
        pairs = len(jobs[0].queries)
        while self._pending and pairs + len(self._pending[0].queries) <= self.max_batch_pairs:
            jobs.append(self._pending.popleft())
            pairs += len(jobs[-1].queries)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs = self._take_batch()
            try:
                queries = [q for job in jobs for q in job.queries]
                documents = [d for job in jobs for d in job.documents]
                scored = await loop.run_in_executor(self._executor, self._score, queries, documents)
                self._on_batch(len(jobs), scored)
                self._answer(jobs, scored)
            except Exception as error:  # answered to every waiting request; the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                self._queued_pairs -= sum(len(job.queries) for job in jobs)

    @staticmethod
    def _answer(jobs: list[_Job], scored: Scored) -> None:
        offset = 0
        for job in jobs:
            end = offset + len(job.queries)
            if not job.future.done():  # the client may have gone away
                job.future.set_result(Scored(scored.logits[offset:end], scored.tokens[offset:end],
                                             scored.truncated[offset:end]))
            offset = end
