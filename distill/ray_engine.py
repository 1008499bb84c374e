"""`rankstill label --engine ray`: the labelling plan's parts scored by an actor pool of teachers on Ray Data.

Each part of the plan becomes one block; `map_batches` hands whole blocks to a fixed pool of
`TeacherActor`s (each builds its own teacher once: a model on its GPU where the cluster has
GPUs, or an HTTP client), and the driver writes each part into the label store as soon as all of
its scores are back. A teacher sees exactly the pairs it would see in the local engine, in the same
order and grouping, so both engines write the same labels, and the same resumable parts.

On a cluster, connect with `address` ("auto" inside a Ray head pod, or `ray://HEAD:10001`);
the actors need this package and the teacher's files (or its URL) on every worker.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd


class TeacherActor:
    """One teacher per actor, built once; scores each part of a batch as one call, like the local engine."""

    def __init__(self, factory: Callable, batch_size: int):
        self.teacher = factory()
        self.batch_size = batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scores = np.empty(len(batch), dtype=np.float32)
        parts = batch["part"].to_numpy()
        for number in dict.fromkeys(parts):
            rows = np.flatnonzero(parts == number)
            scores[rows] = self.teacher.score(list(batch["query"].iloc[rows]), list(batch["item_text"].iloc[rows]),
                                              batch_size=self.batch_size)
        return pd.DataFrame({"part": batch["part"].to_numpy(), "row": batch["row"].to_numpy(), "teacher_score": scores})


def connect(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)


def score_parts_on_ray(work: dict[int, pd.DataFrame], factory: Callable, write: Callable, batch_size: int,
                       options, local_teacher: bool) -> None:
    """Score `work` (part number → pairs) on Ray; `write(number, part, scores)` is called once per part."""
    import ray
    import ray.data

    for number, part in work.items():
        if len(part) == 0:  # every pair already in the store: an empty part marks it done
            write(number, part, np.empty(0, dtype=np.float32))
    busy = {number: part for number, part in work.items() if len(part)}
    if not busy:
        return
    connect(options.address)
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if local_teacher and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    blocks = [pd.DataFrame({"part": number, "row": np.arange(len(part)), "query": part["query"].to_numpy(),
                            "item_text": part["item_text"].to_numpy()}) for number, part in busy.items()]
    dataset = ray.data.from_pandas(blocks)
    scored = dataset.map_batches(TeacherActor, fn_constructor_kwargs={"factory": factory, "batch_size": batch_size},
                                 batch_size=None, batch_format="pandas",
                                 compute=ray.data.ActorPoolStrategy(size=options.actors),
                                 num_cpus=options.cpus_per_actor, num_gpus=gpus or None)
    scores = {number: np.full(len(part), np.nan, dtype=np.float32) for number, part in busy.items()}
    remaining = {number: len(part) for number, part in busy.items()}
    for batch in scored.iter_batches(batch_format="pandas", batch_size=None):
        for number, group in batch.groupby("part", sort=False):
            number = int(number)
            scores[number][group["row"].to_numpy()] = group["teacher_score"].to_numpy()
            remaining[number] -= len(group)
            if remaining[number] == 0:
                write(number, busy[number], scores.pop(number))
    if scores:
        raise RuntimeError(f"Ray returned no scores for parts {sorted(scores)}")
