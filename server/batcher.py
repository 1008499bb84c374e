"""An asyncio queue that merges concurrent requests into model runs, in a two-stage pipeline.

Requests wait in the queue; the worker takes everything queued (up to `max_batch_size` units of
`size`, e.g. tokens) as one batch, has it assembled on the assembly thread (`prepare`: e.g. cut
into padded sub-batches) while the model still runs the previous batch, then hands it to an
inference thread (`run`) at once: up to `RUNS_IN_FLIGHT` batches are in the model together, so
a model that spreads a batch over several cores can start this batch's work on a core the last
one no longer needs (`PairScorer.run_prepared` queues them in order). When the model is idle,
the inference thread assembles the batch itself: one thread hop instead of two. A lone request
never waits for company.

Admission is by time: a request is refused at once with `Overloaded` when the work already queued
would keep the model busy for more than `max_wait_s` (measured: model seconds per unit of `size`
over recent runs, each run weighing by its size, so that a tiny run's fixed cost does not inflate
the estimate, and a run that overlapped the one before counting from that one's end), or would
overflow `max_queued` units. A request already queued is always answered. When a batch fails, each
of its requests is retried alone, so one bad request cannot fail the others it was batched with
(unless the backend itself failed: then the batch gets that error).

The batcher knows nothing of what it batches.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

from .errors import BackendError, Overloaded

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")
RATE_SMOOTHING = 0.2  # weight of the newest run in the smoothed seconds and units of recent runs
RUNS_IN_FLIGHT = 2  # batches handed to the model at once: the next one starts as cores free up


class Retired(RuntimeError):
    """The batcher was stopped (its model was replaced): submit to the new one."""


@dataclass
class _Job(Generic[Item]):
    item: Item
    size: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[Item, Prepared, Result]):
    def __init__(self, prepare: Callable[[list[Item]], Prepared], run: Callable[[Prepared], list[Result]],
                 size: Callable[[Item], int], max_batch_size: int, max_queued: int, max_wait_s: float = float("inf"),
                 on_batch: Callable[[list[Item], float], None] = lambda items, seconds: None):
        self._prepare = prepare
        self._run_model = run
        self._size = size
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self._recent_seconds = 0.0  # smoothed over the runs so far
        self._recent_units = 0.0
        self._on_batch = on_batch
        self._closed = False
        self._pending: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._assembly = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="assembly")
        self._inference = concurrent.futures.ThreadPoolExecutor(max_workers=RUNS_IN_FLIGHT, thread_name_prefix="inference")
        self._timing = threading.Lock()
        self._last_run_end = 0.0

    @property
    def queued(self) -> int:
        """Size of the requests waiting for or in a model run."""
        return self._queued

    @property
    def seconds_per_unit(self) -> float | None:
        """Model seconds per unit of `size`, measured on the runs so far (None before the first)."""
        return self._recent_seconds / self._recent_units if self._recent_units else None

    @property
    def expected_wait_s(self) -> float:
        """How long the work already queued should keep the model busy."""
        return self._queued * (self.seconds_per_unit or 0.0)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="micro-batcher")

    async def stop(self) -> None:
        """Refuse new requests (`Retired`), answer every accepted one, then stop the worker."""
        self._closed = True
        while self._queued:
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
        self._assembly.shutdown(wait=True)
        self._inference.shutdown(wait=True)

    async def submit(self, item: Item) -> Result:
        if self._worker is None:
            raise RuntimeError("batcher not started")
        if self._closed:
            raise Retired("this model was replaced")
        size = self._size(item)
        if self._queued and self._queued + size > self.max_queued:
            raise Overloaded(f"{self._queued} already queued", retry_after_s=self.expected_wait_s)
        if self._queued and self.expected_wait_s > self.max_wait_s:
            raise Overloaded(f"the queue holds {self.expected_wait_s * 1000:.0f} ms of work",
                             retry_after_s=self.expected_wait_s)
        job = _Job(item, size, asyncio.get_running_loop().create_future())
        self._queued += size
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    def _take_batch(self) -> list[_Job]:
        jobs = [self._pending.popleft()]
        size = jobs[0].size
        while self._pending and size + self._pending[0].size <= self.max_batch_size:
            jobs.append(self._pending.popleft())
            size += jobs[-1].size
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        running: collections.deque[tuple[list[_Job], asyncio.Future]] = collections.deque()
        while True:
            if not self._pending:
                self._wakeup.clear()
                if running:  # until a request comes (for the next batch) or the oldest batch is done
                    await self._first_of(self._wakeup.wait(), running[0][1])
                    if running[0][1].done():
                        await self._finish(*running.popleft())
                else:
                    await self._wakeup.wait()
                continue
            jobs = self._take_batch()
            items = [job.item for job in jobs]
            if not running:  # the model is idle: nothing to overlap, so assembly and run share one hop
                running.append((jobs, loop.run_in_executor(self._inference, self._assemble_and_run, items)))
                continue
            try:  # assembled while the batches before it are still in the model
                prepared = await loop.run_in_executor(self._assembly, self._prepare_or_error, items)
            except Exception as error:  # the executor itself failed
                prepared = error
            if len(running) == RUNS_IN_FLIGHT:
                await self._finish(*running.popleft())
            running.append((jobs, loop.run_in_executor(self._inference, self._run_jobs, items, prepared)))

    @staticmethod
    async def _first_of(waiting, model_run: asyncio.Future) -> None:
        waiting = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait({waiting, model_run}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()

    async def _finish(self, jobs: list[_Job], model_run: asyncio.Future) -> None:
        try:
            try:
                outcomes = await model_run
            except Exception as error:  # the executor itself failed: every request learns it, the worker goes on
                outcomes = [error] * len(jobs)
            for job, outcome in zip(jobs, outcomes):
                _settle(job.future, outcome)
        finally:
            self._queued -= sum(job.size for job in jobs)

    def _prepare_or_error(self, items: list[Item]) -> Prepared | Exception:
        """The assembled batch, or why it could not be assembled (each request is then retried alone)."""
        try:
            return self._prepare(items)
        except Exception as error:
            return error

    def _assemble_and_run(self, items: list[Item]) -> list[Result | BaseException]:
        return self._run_jobs(items, self._prepare_or_error(items))

    def _run_jobs(self, items: list[Item], prepared) -> list[Result | BaseException]:
        """On the inference thread: the batch at once, or each item alone if the batch fails."""
        began = time.perf_counter()
        try:
            if isinstance(prepared, Exception):
                raise prepared
            results = self._run_model(prepared)
        except Exception as error:
            if len(items) == 1 or isinstance(error, BackendError):
                return [error] * len(items)
            return [self._run_alone(item) for item in items]
        units = sum(self._size(item) for item in items)
        with self._timing:
            ended = time.perf_counter()
            seconds = ended - max(began, self._last_run_end)  # the model's time for this run alone
            self._last_run_end = ended
            if units:
                keep = 1 - RATE_SMOOTHING if self._recent_units else 0.0
                self._recent_seconds = keep * self._recent_seconds + (1 - keep) * seconds
                self._recent_units = keep * self._recent_units + (1 - keep) * units
        self._on_batch(items, seconds)
        return results

    def _run_alone(self, item: Item) -> Result | BaseException:
        try:
            return self._run_model(self._prepare([item]))[0]
        except Exception as error:
            return error


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
