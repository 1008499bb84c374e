"""The teacher label store: a folder of Parquet files that any student (or pandas) can read.

One row per teacher-scored (query, item) pair. Writers add whole part files atomically, so
an interrupted writer leaves only complete parts and can resume where it stopped; readers see
the union of all parts. Several teachers and several writers (bulk labelling, shadow
scoring) can share one store: each row names its teacher.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("query", pa.string()),
    ("item_id", pa.string()),
    ("item_text", pa.string()),
    ("teacher_score", pa.float32()),  # the teacher's logit; higher = more relevant
    ("teacher_id", pa.string()),
    ("teacher_version", pa.string()),
    ("source", pa.string()),  # judged | bm25 | shadow
    ("split", pa.string()),  # train | validation | test
    ("human_label", pa.float32()),  # (relevance - 1) / 2 where humans judged the pair, else null
    ("bm25_score", pa.float32()),  # null where unknown
    ("student_score", pa.float32()),  # shadow scoring: the served student's logit, else null
    ("student_model", pa.string()),  # shadow scoring: which model answered, else null
])


class LabelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def part_path(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    def has_part(self, name: str) -> bool:
        return self.part_path(name).is_file()

    def write_part(self, name: str, columns: dict) -> Path:
        """Write one part atomically (temporary file, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        columns = {name: columns.get(name, [None] * len(next(iter(columns.values())))) for name in SCHEMA.names}
        table = pa.Table.from_pydict(columns, schema=SCHEMA)
        final = self.part_path(name)
        temporary = final.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        return final

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("*.parquet"))

    def read(self, split: str | None = None, teacher_id: str | None = None):
        """All labels as a pandas DataFrame, optionally one split and/or one teacher."""
        parts = self.parts()
        if not parts:
            raise FileNotFoundError(f"label store {self.root} holds no Parquet parts")
        filters = []
        if split:
            filters.append(("split", "=", split))
        if teacher_id:
            filters.append(("teacher_id", "=", teacher_id))
        table = pq.read_table(parts, schema=SCHEMA, filters=filters or None)
        return table.to_pandas()
