"""A user's own data, described by a small YAML section, read and checked before anything is written.

    data:
      judgments: data/judgments.jsonl      # optional: query, item id, graded label
      items: data/catalogue.parquet        # optional when the judgments carry item texts
      queries: data/queries.csv            # optional: extra unlabeled queries
      columns: {query: q, item_id: pid, item_text: [brand, title], label: grade}
      label_range: [1, 3]                  # label 1 -> gain 0, label 3 -> gain 1

Files are CSV (also .tsv, .csv.gz), Parquet or JSON Lines (also .jsonl.gz), told apart by their
suffix. Item text is one column or several joined with a space. Relative paths are taken from the
current directory. Every problem names the file, the column and the rows (1-based data rows, the
header not counted); empty texts are skipped and counted unless `strict`, which refuses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .data import SPLITS, split_of

SHOWN_ROWS = 8  # rows named in one error message


class DataError(ValueError):
    """The data does not match its description; the message names file, column and rows."""


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field("query", description="Query text column (judgments and queries files).")
    item_id: str = Field("item_id", description="Item id column (judgments and items files).")
    item_text: str | list[str] = Field("item_text", description="Item text column, or several joined with a space.")
    label: str = Field("label", description="Graded relevance column of the judgments.")

    @property
    def text_columns(self) -> list[str]:
        return [self.item_text] if isinstance(self.item_text, str) else list(self.item_text)


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation_pct: int = Field(10, ge=0, le=50, description="Share of queries held out for validation (by query hash).")
    test_pct: int = Field(10, ge=0, le=50, description="Share of queries held out for test (by query hash).")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judgments: Path | None = Field(None, description="Judged (query, item, label) rows.")
    items: Path | None = Field(None, description="Item catalogue (id and text columns).")
    queries: Path | None = Field(None, description="Extra queries without judgments.")
    columns: Columns = Field(default_factory=Columns)
    label_range: tuple[float, float] | None = Field(None, description="[lowest, highest] label: mapped to gain 0 and 1.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    description: str | None = Field(None, description="What the data is (written into the model's metadata).")

    @field_validator("label_range")
    @classmethod
    def _ordered(cls, value):
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"label_range must be [low, high] with low < high, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _enough(self):
        if self.judgments is None and self.items is None:
            raise ValueError("data needs an item catalogue (`items`) or judgments that carry item texts")
        if self.judgments is None and self.queries is None:
            raise ValueError("without judgments, data needs `queries` to label")
        if self.judgments is not None and self.label_range is None:
            raise ValueError("judgments need `label_range: [low, high]` (the labels that mean gain 0 and gain 1)")
        return self

    def files(self) -> dict[str, Path]:
        return {name: path for name, path in (("judgments", self.judgments), ("items", self.items),
                                              ("queries", self.queries)) if path is not None}

    def fingerprint(self) -> str:
        """Changes when the description or any file's size or modification time changes."""
        digest = hashlib.sha256(self.model_dump_json().encode())
        for name, path in sorted(self.files().items()):
            stat = Path(path).stat() if Path(path).is_file() else None
            digest.update(f"{name}:{path}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}".encode())
        return digest.hexdigest()[:16]


@dataclass
class Dataset:
    """Checked data: judgments (query, item_id, item_text, label, gain, split), the catalogue
    (item_id, item_text) and every query with its split (source: judged or unlabeled)."""

    judgments: pd.DataFrame | None
    items: pd.DataFrame
    queries: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    description: str | None = None
    items_from_judgments: bool = False  # no catalogue file: the catalogue is the judged items

    @property
    def has_judgments(self) -> bool:
        return self.judgments is not None and len(self.judgments) > 0

    def summary(self) -> dict:
        queries = self.queries.groupby("split").size().reindex(list(SPLITS), fill_value=0)
        return {"judgments": 0 if self.judgments is None else len(self.judgments), "items": len(self.items),
                "queries": {split: int(n) for split, n in queries.items()}, "skipped": dict(self.skipped)}

    def limit_queries(self, max_queries: int | None) -> "Dataset":
        """Keep the first `max_queries` queries of each split (quick runs and tests)."""
        if not max_queries:
            return self
        keep = set(self.queries.groupby("split", sort=False)["query"].apply(lambda q: list(q)[:max_queries]).explode())
        judgments = None if self.judgments is None else self.judgments[self.judgments["query"].isin(keep)].reset_index(drop=True)
        items = self.items
        if self.items_from_judgments:
            items = judgments[["item_id", "item_text"]].drop_duplicates("item_id").reset_index(drop=True)
        return Dataset(judgments, items, self.queries[self.queries["query"].isin(keep)].reset_index(drop=True),
                       self.skipped, self.description, self.items_from_judgments)


def read_table(path: Path, role: str) -> pd.DataFrame:
    """A CSV, Parquet or JSON Lines file as strings-or-numbers columns; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.{role}: file {path} not found (relative paths are taken from {Path.cwd()})")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
            return pd.read_json(path, lines=not name.endswith(".json") or _looks_like_lines(path), dtype=False)
        if name.endswith((".tsv", ".tsv.gz")):
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as error:
        raise DataError(f"data.{role}: cannot read {path}: {error}") from error
    raise DataError(f"data.{role}: {path} is not .csv, .tsv, .parquet or .jsonl (optionally .gz)")


def _looks_like_lines(path: Path) -> bool:
    with path.open("rb") as handle:
        return not handle.read(1).lstrip().startswith(b"[")


def _rows(mask: pd.Series) -> str:
    rows = [int(i) + 1 for i in mask[mask].index[:SHOWN_ROWS]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(map(str, rows)) + (f" and {more} more" if more > 0 else "")


def _require_columns(frame: pd.DataFrame, path: Path, role: str, wanted: list[str]) -> None:
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise DataError(f"data.{role}: {path} lacks column(s) {missing} (columns there: {list(frame.columns)}); "
                        "set data.columns to map yours")


def _text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The text of `columns` joined with a space (blank parts left out); texts are otherwise kept as they are."""
    parts = [frame[c].astype("string").fillna("") for c in columns]
    if len(parts) == 1:
        return parts[0].astype(object)
    joined = [" ".join(p for p in row if p.strip()) for row in zip(*parts)]
    return pd.Series(joined, index=frame.index, dtype=object)


def _blank(text: pd.Series) -> pd.Series:
    return text.str.strip().eq("")


def _ids(frame: pd.DataFrame, column: str) -> pd.Series:
    values = frame[column]
    if pd.api.types.is_float_dtype(values) and values.dropna().eq(values.dropna().round()).all():
        values = values.astype("Int64")  # JSON numbers: 12.0 and 12 are the same id
    return values.astype("string").str.strip().astype(object)


class _Checker:
    def __init__(self, strict: bool):
        self.strict = strict
        self.skipped: dict[str, int] = {}

    def empties(self, frame: pd.DataFrame, mask: pd.Series, path: Path, role: str, column) -> pd.DataFrame:
        if not mask.any():
            return frame
        where = f"data.{role}: {path}, column {column!r}: {int(mask.sum())} empty value(s) at rows {_rows(mask)}"
        if self.strict:
            raise DataError(where + " (refused with --strict)")
        self.skipped[f"{role}: empty {column}"] = int(mask.sum())
        return frame[~mask]


def load_dataset(config: DataConfig, strict: bool = False) -> Dataset:
    """Read and check every file of `config`; raises DataError naming file, column and rows."""
    columns, check = config.columns, _Checker(strict)
    items = _load_items(config, check) if config.items is not None else None
    judgments = _load_judgments(config, check, items) if config.judgments is not None else None
    if items is None:  # the catalogue is the judged items (the first text of an id)
        items = judgments[["item_id", "item_text"]].drop_duplicates("item_id").reset_index(drop=True)
    queries = []
    if judgments is not None:
        queries.append(pd.DataFrame({"query": judgments["query"].drop_duplicates(), "source": "judged"}))
    if config.queries is not None:
        path = config.queries
        frame = read_table(path, "queries")
        _require_columns(frame, path, "queries", [columns.query])
        frame = frame.reset_index(drop=True)
        text = _text(frame, [columns.query])
        frame = check.empties(frame.assign(query=text), _blank(text), path, "queries", columns.query)
        queries.append(pd.DataFrame({"query": frame["query"].drop_duplicates(), "source": "unlabeled"}))
    queries = pd.concat(queries, ignore_index=True).drop_duplicates("query").reset_index(drop=True)
    queries["split"] = [split_of(q, config.split.validation_pct, config.split.test_pct) for q in queries["query"]]
    if judgments is not None:
        judgments["split"] = [split_of(q, config.split.validation_pct, config.split.test_pct) for q in judgments["query"]]
    return Dataset(judgments, items, queries, check.skipped, config.description, config.items is None)


def _load_items(config: DataConfig, check: _Checker) -> pd.DataFrame:
    path, columns = config.items, config.columns
    frame = read_table(path, "items").reset_index(drop=True)
    _require_columns(frame, path, "items", [columns.item_id, *columns.text_columns])
    ids, text = _ids(frame, columns.item_id), _text(frame, columns.text_columns)
    missing_id = ids.isna() | ids.eq("")
    if missing_id.any():
        raise DataError(f"data.items: {path}, column {columns.item_id!r}: no id at rows {_rows(missing_id)}")
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        raise DataError(f"data.items: {path}, column {columns.item_id!r}: {int(ids.duplicated().sum())} duplicate id(s) "
                        f"at rows {_rows(duplicated)} (e.g. {ids[duplicated].iloc[0]!r})")
    frame = pd.DataFrame({"item_id": ids, "item_text": text})
    frame = check.empties(frame, _blank(text), path, "items", "+".join(columns.text_columns))
    return frame.reset_index(drop=True)


def _load_judgments(config: DataConfig, check: _Checker, items: pd.DataFrame | None) -> pd.DataFrame:
    path, columns = config.judgments, config.columns
    frame = read_table(path, "judgments").reset_index(drop=True)
    carries_text = all(c in frame.columns for c in columns.text_columns)
    wanted = [columns.query, columns.item_id, columns.label] + (columns.text_columns if items is None else [])
    _require_columns(frame, path, "judgments", wanted)
    out = pd.DataFrame({"query": _text(frame, [columns.query]), "item_id": _ids(frame, columns.item_id)})
    missing_id = out["item_id"].isna() | out["item_id"].eq("")
    if missing_id.any():
        raise DataError(f"data.judgments: {path}, column {columns.item_id!r}: no id at rows {_rows(missing_id)}")
    label = pd.to_numeric(frame[columns.label], errors="coerce")
    bad = label.isna()
    if bad.any():
        raise DataError(f"data.judgments: {path}, column {columns.label!r}: not a number at rows {_rows(bad)}")
    low, high = config.label_range
    outside = (label < low) | (label > high)
    if outside.any():
        raise DataError(f"data.judgments: {path}, column {columns.label!r}: {int(outside.sum())} label(s) outside "
                        f"label_range [{low:g}, {high:g}] at rows {_rows(outside)} (e.g. {label[outside].iloc[0]:g})")
    out["label"] = label.astype(float)
    out["gain"] = (out["label"] - low) / (high - low)
    if items is not None:
        known = out["item_id"].isin(set(items["item_id"]))
        unknown = ~known
        if unknown.any() and not carries_text:
            raise DataError(f"data.judgments: {path}, column {columns.item_id!r}: {int(unknown.sum())} id(s) not in the "
                            f"catalogue {config.items} at rows {_rows(unknown)} (e.g. {out['item_id'][unknown].iloc[0]!r})")
        text_of = dict(zip(items["item_id"], items["item_text"]))
        out["item_text"] = out["item_id"].map(text_of)
        if carries_text:
            out.loc[unknown, "item_text"] = _text(frame, columns.text_columns)[unknown]
        out["item_text"] = out["item_text"].fillna("")
    else:
        out["item_text"] = _text(frame, columns.text_columns)
    out = check.empties(out, _blank(out["query"]), path, "judgments", columns.query)
    out = check.empties(out, _blank(out["item_text"]), path, "judgments",
                        "+".join(columns.text_columns) if items is None else f"{columns.item_id} (catalogue text)")
    duplicated = out.duplicated(["query", "item_id"], keep=False)
    if duplicated.any():
        raise DataError(f"data.judgments: {path}, columns {columns.query!r}, {columns.item_id!r}: the same (query, item) "
                        f"judged more than once at rows {_rows(duplicated)}; average them first")
    return out.reset_index(drop=True)[["query", "item_id", "item_text", "label", "gain"]]
