"""A small slice of real Home Depot data rewritten in another schema and format, as a user's own data would be:
JSONL judgments (`q`, `pid`, `grade` on 0-4), a Parquet catalogue (`pid`, `brand`, `name`: the title cut
after its first word, so `[brand, name]` joined gives the title back) and a CSV of extra queries."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rankstill.distill.data import catalogue


def write_slice(judgments: pd.DataFrame, folder: Path, queries_per_split: int = 6, distractors: int = 300,
                extra_queries: int = 0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    picked = judgments.groupby("split")["query"].apply(lambda q: list(dict.fromkeys(q))[:queries_per_split + extra_queries])
    keep = {q for queries in picked for q in queries[:queries_per_split]}
    extra = [q for queries in picked for q in queries[queries_per_split:]]
    rows = judgments[judgments["query"].isin(keep)]
    products = catalogue(judgments)
    items = pd.concat([products[products["product_uid"].isin(set(rows["product_uid"]))], products.head(distractors)])
    items = items.drop_duplicates("product_uid")
    paths = {"judgments": folder / "judgments.jsonl", "items": folder / "catalogue.parquet"}
    with paths["judgments"].open("w") as handle:
        for query, pid, relevance in zip(rows["query"], rows["product_uid"], rows["relevance"]):
            handle.write(json.dumps({"q": query, "pid": int(pid), "grade": (float(relevance) - 1) * 2}) + "\n")
    words = items["product_title"].str.split(" ", n=1)
    pd.DataFrame({"pid": items["product_uid"].astype(int), "brand": words.str[0],
                  "name": words.str[1].fillna("")}).to_parquet(paths["items"], index=False)
    if extra:
        paths["queries"] = folder / "queries.csv"
        pd.DataFrame({"q": extra}).to_csv(paths["queries"], index=False)
    return paths


def data_section(paths: dict[str, Path], judged: bool = True) -> dict:
    section = {"items": str(paths["items"]),
               "columns": {"query": "q", "item_id": "pid", "item_text": ["brand", "name"], "label": "grade"}}
    if judged:
        section.update(judgments=str(paths["judgments"]), label_range=[0, 4])
    if "queries" in paths:
        section["queries"] = str(paths["queries"])
    return section
