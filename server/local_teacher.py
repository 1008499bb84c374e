"""A local shadow teacher: an ONNX teacher entry (`rankstill teacher export`) scored in this process.

It must never starve the student on a small machine, so it runs outside the event loop on one
worker thread whose OS priority is lowered (Linux schedules threads by their own nice value),
with ONNX Runtime limited to `threads` intra-op threads, and it refuses work beyond
`max_pending` jobs instead of queueing behind a slow model.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rankstill.model_repo import read_entry
from rankstill.scoring import PairScorer

TEACHER_NICE = 10  # added to the worker thread's nice value


class TeacherBusy(RuntimeError):
    """The local teacher already has as much work as it may hold."""


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TEACHER_NICE)
    except (AttributeError, OSError):  # not Linux: bounded threads still apply
        pass


class LocalTeacher:
    def __init__(self, model_dir: Path, threads: int = 1, max_pending: int = 2, chunk_pairs: int = 64):
        entry = read_entry(model_dir)
        self.teacher_id = entry.metadata.get("teacher_id", entry.name)
        # one lane: every model run stays on the low-priority worker thread
        self._scorer = PairScorer.for_entry(entry, threads, chunk_pairs, lanes=1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow-teacher", initializer=_lower_priority)
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    async def score(self, query: str, documents: list[str]) -> np.ndarray:
        with self._lock:
            if self._pending >= self._max_pending:  # earlier jobs that timed out may still be running
                raise TeacherBusy(f"local teacher has {self._pending} jobs in progress")
            self._pending += 1
        future = self._executor.submit(self._scorer.score, [query] * len(documents), documents)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _) -> None:
        with self._lock:
            self._pending -= 1

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
