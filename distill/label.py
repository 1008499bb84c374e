"""`rankstill label`: teacher labels on judged and on unlabeled (augmented) pairs.

The plan: every judged pair (all splits, so later stages compare student and teacher without
loading the teacher), plus, for each training query, the catalogue items it was never judged
against that BM25 ranks highest (the student then learns from far more pairs than were judged),
plus BM25 candidates of held-out queries that have no judgments (where the student's agreement
with the teacher is measured when nobody judged anything).

The plan is cut into fixed parts written atomically into a shared label store: a rerun skips the
parts already written (an interrupted run resumes), and a pair the store already holds from the
same teacher and version is never scored or stored twice. Two engines run the same plan and
write the same parts: `local` (this process) and `ray` (Ray Data `map_batches` over an actor pool
of teachers, on a laptop or a cluster).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankstill.label_store import LabelStore

from .bm25 import TitleIndex, bm25_scores_for
from .data import SPLITS
from .dataset import Columns, DataConfig, Dataset, load_dataset
from .teachers import describe

# Home Depot's CSV (`rankstill label --data`): one example of a data description.
HOMEDEPOT_COLUMNS = Columns(query="query", item_id="product_uid", item_text="product_title", label="relevance")
PLAN_COLUMNS = ["query", "item_id", "item_text", "source", "split", "human_label", "bm25_score"]


def homedepot(path: str | Path) -> DataConfig:
    if not Path(path).is_file():
        raise FileNotFoundError(f"judgment file {path} not found: pass --data pointing at "
                                "shared/data/homedepot/pairs.csv.gz (see shared/DATA.md)")
    return DataConfig(judgments=Path(path), columns=HOMEDEPOT_COLUMNS, label_range=(1, 3),
                      description="Home Depot Product Search Relevance (Kaggle 2016), split by query")


@dataclass(frozen=True)
class LabelPlan:
    pairs: pd.DataFrame  # query, item_id, item_text, source, split, human_label, bm25_score
    part_size: int

    @property
    def part_count(self) -> int:
        return -(-len(self.pairs) // self.part_size)

    def part(self, number: int) -> pd.DataFrame:
        return self.pairs.iloc[number * self.part_size:(number + 1) * self.part_size]

    @property
    def plan_id(self) -> str:
        """Names the plan: the same data and options give the same parts."""
        digest = hashlib.sha256(pd.util.hash_pandas_object(self.pairs[["query", "item_id", "split", "source"]],
                                                           index=False).to_numpy().tobytes())
        digest.update(str(self.part_size).encode())
        return digest.hexdigest()[:10]


def plan_pairs(dataset: Dataset, k: int, part_size: int, heldout_k: int = 20) -> LabelPlan:
    """Every judged pair; up to k unjudged BM25 candidates per training query; up to `heldout_k`
    per held-out (validation, test) query without judgments."""
    items = dataset.items
    index = TitleIndex(list(items["item_id"]), list(items["item_text"]))
    text_of = dict(zip(items["item_id"], items["item_text"]))
    frames = []
    judged_of: dict[str, set] = {}
    if dataset.has_judgments:
        judgments = dataset.judgments
        frames.append(pd.DataFrame({
            "query": judgments["query"], "item_id": judgments["item_id"], "item_text": judgments["item_text"],
            "source": "judged", "split": judgments["split"], "human_label": judgments["gain"].astype("float32"),
            "bm25_score": bm25_scores_for(judgments, index, "item_id"),
        }))
        judged_of = {query: set(group) for query, group in judgments.groupby("query", sort=False)["item_id"]}
    augmented = []
    queries = dataset.queries
    wanted = queries[(queries["split"] == "train") | ~queries["query"].isin(judged_of)]
    for query, split in tqdm(list(zip(wanted["query"], wanted["split"])), desc="BM25 candidates", unit="query",
                             disable=k == 0 or wanted.empty):
        for item_id, score in index.top_k(query, k if split == "train" else heldout_k,
                                          exclude=judged_of.get(query, set())):
            augmented.append((query, item_id, text_of[item_id], "bm25", split, None, score))
    frames.append(pd.DataFrame(augmented, columns=PLAN_COLUMNS))
    pairs = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=PLAN_COLUMNS)
    pairs["split"] = pd.Categorical(pairs["split"], categories=SPLITS, ordered=True)
    pairs = pairs.sort_values(["split", "query", "source"], kind="stable").reset_index(drop=True)
    pairs["split"] = pairs["split"].astype(str)
    return LabelPlan(pairs, part_size)


@dataclass
class RayOptions:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # None: the running Ray instance, or a local one; "auto" or ray://host:10001 for a cluster
    actors: int = 1  # teachers working at once (each holds its own model or HTTP client)
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs and the teacher is local, else 0
    cpus_per_actor: float = 1.0


def label(teacher, data, out: Path, k: int = 8, part_size: int = 4096, batch_size: int = 64,
          max_queries: int | None = None, max_parts: int | None = None, engine: str = "local",
          teacher_config=None, ray_options: RayOptions | None = None, heldout_k: int = 20,
          strict: bool = False, progress: bool = True) -> LabelStore:
    """Score the plan with `teacher` into the store at `out`; `max_parts` stops early (the rest resumes later).

    `data`: a Dataset, a DataConfig, or a path to Home Depot's CSV. `teacher_config` (a TeacherConfig)
    lets Ray actors build their own teacher; without it the teacher object itself is shipped to them.
    """
    if isinstance(data, (str, Path)):
        data = homedepot(data)
    if isinstance(data, DataConfig):
        data = load_dataset(data, strict=strict)
    dataset = data.limit_queries(max_queries)
    plan = plan_pairs(dataset, k, part_size, heldout_k)
    store = LabelStore(out)
    teacher_info = describe(teacher)
    teacher_tag = hashlib.sha1(f"{teacher.teacher_id}@{teacher.version}".encode()).hexdigest()[:8]
    run_id = f"{teacher_tag}-{plan.plan_id}"
    part_name = lambda n: f"label-{run_id}-{n:05d}"  # noqa: E731

    manifest = store.register_teacher(teacher_info)
    run = manifest["runs"].get(run_id) or {
        "teacher": f"{teacher.teacher_id}@{teacher.version}", "data": dataset.summary(), "engine": engine,
        "options": {"candidates_per_query": k, "heldout_candidates": heldout_k, "part_size": part_size,
                    "max_queries": max_queries}, "pairs_planned": len(plan.pairs), "parts": plan.part_count}
    manifest["runs"][run_id] = run
    store.write_manifest(manifest)

    todo = [n for n in range(plan.part_count) if not store.has_part(part_name(n))]
    if max_parts is not None:
        todo = todo[:max_parts]
    # Pairs this teacher (same version) already labelled, in other runs or merged stores, are not scored again.
    done_keys = store.keys(teacher.teacher_id, teacher.version)
    work = {}
    for number in todo:
        part = plan.part(number)
        fresh = [(q, i) not in done_keys for q, i in zip(part["query"], part["item_id"])]
        work[number] = part[fresh]
        done_keys.update(zip(part["query"], part["item_id"]))
    total = sum(len(part) for part in work.values())
    began = time.perf_counter()
    bar = tqdm(total=total, desc=f"teacher labels ({engine})", unit="pair", disable=not progress)

    def write(number: int, part: pd.DataFrame, scores: np.ndarray) -> None:
        present = part.astype(object).where(part.notna(), None)
        columns = {name: present[name].tolist() for name in part.columns}
        columns.update(teacher_score=np.asarray(scores, dtype=np.float32).tolist(),
                       teacher_id=[teacher.teacher_id] * len(part), teacher_version=[teacher.version] * len(part))
        store.write_part(part_name(number), columns)
        bar.update(len(part))

    if engine == "local":
        for number, part in work.items():
            scores = teacher.score(list(part["query"]), list(part["item_text"]), batch_size=batch_size) if len(part) \
                else np.empty(0, dtype=np.float32)
            write(number, part, scores)
    elif engine == "ray":
        from .ray_engine import score_parts_on_ray

        factory = _factory(teacher, teacher_config)
        score_parts_on_ray(work, factory, write, batch_size, ray_options or RayOptions(),
                           local_teacher=not getattr(teacher, "kind", "").startswith(("http", "llm")))
    else:
        raise ValueError(f"unknown engine {engine!r}: local or ray")
    bar.close()
    seconds = time.perf_counter() - began
    manifest = store.manifest()
    manifest["runs"][run_id].setdefault("sessions", []).append({
        "engine": engine, "pairs_scored": total, "parts_written": len(work), "seconds": round(seconds, 2),
        "pairs_per_s": round(total / seconds, 1) if seconds > 0 and total else None,
        "teacher_stats": dict(getattr(teacher, "stats", {}) or {}), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    manifest["runs"][run_id]["complete"] = all(store.has_part(part_name(n)) for n in range(plan.part_count))
    store.write_manifest(manifest)
    return store


def _factory(teacher, teacher_config):
    """A picklable way for a Ray actor to get its own teacher."""
    if teacher_config is not None:
        from functools import partial

        from .teachers import build_teacher

        checkpoint = getattr(teacher, "path", None) if teacher_config.kind == "train" else None
        return partial(build_teacher, teacher_config, checkpoint)
    return lambda: teacher
