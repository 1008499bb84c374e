"""`rankstill label`: teacher labels on judged and on unlabeled (augmented) pairs.

Training queries are paired with catalogue products they were never judged against (BM25
top-k over titles): the student then learns from far more pairs than humans judged.
Judged pairs of every split are scored too, so later stages can compare student and
teacher without loading the teacher. Work is cut into fixed parts; a rerun skips the parts
already written, so an interrupted run resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from rankstill.label_store import LabelStore

from .bm25 import TitleIndex, bm25_scores_for
from .data import SPLITS, catalogue, limit_queries, load_judgments

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class LabelPlan:
    pairs: pd.DataFrame  # query, item_id, item_text, source, split, human_label, bm25_score
    part_size: int

    @property
    def part_count(self) -> int:
        return -(-len(self.pairs) // self.part_size)

    def part(self, number: int) -> pd.DataFrame:
        return self.pairs.iloc[number * self.part_size:(number + 1) * self.part_size]


def plan_pairs(judgments: pd.DataFrame, k: int, part_size: int) -> LabelPlan:
    """Every judged pair, plus up to k unjudged BM25 candidates per training query."""
    products = catalogue(judgments)
    index = TitleIndex.of_products(products)
    title_of = dict(zip(products["product_uid"], products["product_title"]))
    judged = pd.DataFrame({
        "query": judgments["query"], "item_id": judgments["product_uid"],
        "item_text": judgments["product_title"], "source": "judged",
        "split": judgments["split"], "human_label": judgments["gain"].astype("float32"),
        "bm25_score": bm25_scores_for(judgments, index),
    })
    augmented = []
    train = judgments[judgments["split"] == "train"]
    for query, group in tqdm(train.groupby("query", sort=False), desc="BM25 candidates",
                             unit="query", disable=k == 0):
        for item_id, score in index.top_k(query, k, exclude=set(group["product_uid"])):
            augmented.append((query, item_id, title_of[item_id], "bm25", "train", None, score))
    extra = pd.DataFrame(augmented, columns=judged.columns)
    pairs = pd.concat([judged, extra], ignore_index=True)
    pairs["split"] = pd.Categorical(pairs["split"], categories=SPLITS, ordered=True)
    pairs = pairs.sort_values(["split", "query", "source"], kind="stable").reset_index(drop=True)
    pairs["split"] = pairs["split"].astype(str)
    return LabelPlan(pairs, part_size)


def _check_manifest(store: LabelStore, manifest: dict) -> None:
    path = store.root / MANIFEST
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != manifest:
            raise ValueError(
                f"label store {store.root} was started with different settings "
                f"({existing}); resume with the same teacher, data and options, or use a new --out"
            )
    else:
        store.root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2))


def label(teacher, data: Path, out: Path, k: int = 8, part_size: int = 4096,
          batch_size: int = 64, max_queries: int | None = None, max_parts: int | None = None) -> LabelStore:
    """Score the plan with `teacher`; `max_parts` stops early (the rest resumes later)."""
    judgments = limit_queries(load_judgments(data), max_queries)
    plan = plan_pairs(judgments, k, part_size)
    store = LabelStore(out)
    _check_manifest(store, {
        "teacher_id": teacher.teacher_id, "teacher_version": teacher.version,
        "data": str(Path(data).name), "k": k, "part_size": part_size,
        "max_queries": max_queries, "pairs": len(plan.pairs),
    })
    todo = [n for n in range(plan.part_count) if not store.has_part(_part_name(n))]
    if max_parts is not None:
        todo = todo[:max_parts]
    done_pairs = sum(len(plan.part(n)) for n in range(plan.part_count) if store.has_part(_part_name(n)))
    bar = tqdm(total=len(plan.pairs), initial=done_pairs, desc="teacher labels", unit="pair")
    for number in todo:
        part = plan.part(number)
        scores = teacher.score(list(part["query"]), list(part["item_text"]), batch_size=batch_size)
        present = part.astype(object).where(part.notna(), None)
        columns = {name: present[name].tolist() for name in part.columns}
        columns.update(teacher_score=scores.tolist(), teacher_id=[teacher.teacher_id] * len(part),
                       teacher_version=[teacher.version] * len(part))
        store.write_part(_part_name(number), columns)
        bar.update(len(part))
    bar.close()
    return store


def _part_name(number: int) -> str:
    return f"part-{number:05d}"
