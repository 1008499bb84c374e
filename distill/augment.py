"""`rankstill augment`: more teacher-labelled training pairs, from three sources, into a label store.

- `bm25-deep`: BM25 candidates of each training query below the ones `rankstill label` took
  (ranks `skip` .. `skip + per_query`), never a judged item;
- `random`: random catalogue items for each training query (easy negatives);
- `new-query`: new queries made from the catalogue (a span of 1-4 words of an item title, taken
  towards its end where titles name the product type), each with its BM25 top `per_query` items.
  A made-up query that is also a validation or test query is dropped, so nothing leaks.

Every pair goes into the store with `split = "train"`, `source` as above and no human label; `rankstill
train --extra-labels STORE` (and `rankstill sweep data-size`) read them beside the main store.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankstill.label_store import LabelStore

from .bm25 import TitleIndex
from .label import PLAN_COLUMNS
from .teachers import describe

SOURCES = ("bm25-deep", "random", "new-query")
_WORD = re.compile(r"[a-z0-9][a-z0-9.\-/]*")


def title_queries(titles: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct query-like phrases: 1-4 consecutive lower-cased words of random titles,
    ending at one of a title's last three words (where the product type usually is)."""
    found: dict[str, None] = {}
    attempts = 0
    while len(found) < count and attempts < count * 20:
        attempts += 1
        words = _WORD.findall(titles[rng.integers(len(titles))].lower())
        if len(words) < 2:
            continue
        end = len(words) - int(rng.integers(min(3, len(words))))
        length = int(rng.integers(1, min(4, end) + 1))
        phrase = " ".join(words[end - length:end])
        if len(phrase) >= 3 and not phrase.replace(".", "").isdigit():
            found.setdefault(phrase, None)
    return list(found)


def plan_augmentation(dataset, source: str, pairs: int, per_query: int = 8, skip: int = 8,
                      seed: int = 0) -> pd.DataFrame:
    """About `pairs` unlabelled training pairs from `source` (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: one of {', '.join(SOURCES)}")
    rng = np.random.default_rng(seed)
    items = dataset.items
    ids, titles = list(items["item_id"]), list(items["item_text"])
    text_of = dict(zip(ids, titles))
    queries = dataset.queries
    judged_of: dict[str, set] = {}
    if dataset.has_judgments:
        judged_of = {q: set(g) for q, g in dataset.judgments.groupby("query", sort=False)["item_id"]}
    index = TitleIndex(ids, titles) if source != "random" else None
    rows = []
    if source == "new-query":
        heldout = set(queries.loc[queries["split"] != "train", "query"].str.lower())
        known = set(queries["query"].str.lower())
        wanted = [q for q in title_queries(titles, 2 * pairs // per_query + 10, rng) if q not in heldout and q not in known]
        for query in tqdm(wanted, desc="new queries", unit="query"):
            for item_id, score in index.top_k(query, per_query):
                rows.append((query, item_id, text_of[item_id], source, "train", None, score))
            if len(rows) >= pairs:
                break
    else:
        train = list(queries.loc[queries["split"] == "train", "query"])
        rng.shuffle(train)
        for query in tqdm(train, desc=source, unit="query"):
            exclude = judged_of.get(query, set())
            if source == "bm25-deep":
                ranked = index.top_k(query, skip + per_query, exclude=exclude)[skip:]
                rows.extend((query, i, text_of[i], source, "train", None, s) for i, s in ranked)
            else:
                picks = [ids[j] for j in rng.choice(len(ids), per_query, replace=False) if ids[j] not in exclude]
                rows.extend((query, i, text_of[i], source, "train", None, None) for i in picks)
            if len(rows) >= pairs:
                break
    return pd.DataFrame(rows[:pairs], columns=PLAN_COLUMNS)


def augment(teacher, dataset, out, source: str, pairs: int, per_query: int = 8, skip: int = 8,
            seed: int = 0, part_size: int = 4096, batch_size: int = 64) -> dict:
    """Plan `pairs` pairs from `source`, score them with `teacher` into the store at `out` (resumable by part)."""
    plan = plan_augmentation(dataset, source, pairs, per_query, skip, seed)
    store = LabelStore(out)
    store.register_teacher(describe(teacher))
    tag = hashlib.sha1(f"{teacher.teacher_id}@{teacher.version}/{source}/{per_query}/{skip}/{seed}/{pairs}".encode()).hexdigest()[:10]
    done = store.keys(teacher.teacher_id, teacher.version)
    plan = plan[[(q, i) not in done for q, i in zip(plan["query"], plan["item_id"])]].reset_index(drop=True)
    bar = tqdm(total=len(plan), desc=f"teacher labels ({source})", unit="pair")
    for number, start in enumerate(range(0, len(plan), part_size)):
        name = f"augment-{source}-{tag}-{number:05d}"
        part = plan.iloc[start:start + part_size]
        if store.has_part(name):
            bar.update(len(part))
            continue
        scores = teacher.score(list(part["query"]), list(part["item_text"]), batch_size=batch_size)
        present = part.astype(object).where(part.notna(), None)
        columns = {column: present[column].tolist() for column in part.columns}
        columns.update(teacher_score=np.asarray(scores, dtype=np.float32).tolist(),
                       teacher_id=[teacher.teacher_id] * len(part), teacher_version=[teacher.version] * len(part))
        store.write_part(name, columns)
        bar.update(len(part))
    bar.close()
    return {"source": source, "pairs": int(len(plan)), "queries": int(plan["query"].nunique()), "store": str(out)}
