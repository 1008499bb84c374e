"""Home Depot relevance judgments: loading and a deterministic split by query."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

SPLITS = ("train", "validation", "test")
COLUMNS = ("query", "product_uid", "product_title", "relevance")


def load_judgments(path: str | Path) -> pd.DataFrame:
    """Read the judged pairs; adds `gain` = (relevance - 1) / 2 in [0, 1] and `split`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"judgment file {path} not found: pass --data pointing at "
            "shared/data/homedepot/pairs.csv.gz (see shared/DATA.md)"
        )
    frame = pd.read_csv(path, dtype={"query": str, "product_title": str})
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    frame = frame.dropna(subset=["query", "product_title"]).reset_index(drop=True)
    frame["product_uid"] = frame["product_uid"].astype(str)
    frame["gain"] = (frame["relevance"].astype(float) - 1.0) / 2.0
    frame["split"] = frame["query"].map(split_of)
    return frame


def split_of(query: str, validation_pct: int = 10, test_pct: int = 10) -> str:
    """Assign a query to a split by a stable hash, so a query never crosses splits."""
    bucket = int(hashlib.md5(query.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < validation_pct:
        return "validation"
    if bucket < validation_pct + test_pct:
        return "test"
    return "train"


def catalogue(judgments: pd.DataFrame) -> pd.DataFrame:
    """Distinct products (product_uid, product_title) across all judgments."""
    return (
        judgments[["product_uid", "product_title"]]
        .drop_duplicates("product_uid")
        .reset_index(drop=True)
    )


def limit_queries(frame: pd.DataFrame, max_queries: int | None) -> pd.DataFrame:
    """Keep the first `max_queries` distinct queries of each split (for quick runs and tests)."""
    if not max_queries:
        return frame
    keep = frame.groupby("split")["query"].apply(lambda q: list(dict.fromkeys(q))[:max_queries])
    allowed = {query for queries in keep for query in queries}
    return frame[frame["query"].isin(allowed)].reset_index(drop=True)
