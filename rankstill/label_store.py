"""The teacher label store: a folder of Parquet files that any student (or pandas) can read.

One row per teacher-scored (query, item) pair, keyed by (query, item_id, teacher_id,
teacher_version). Writers add whole part files atomically, so an interrupted writer leaves only
complete parts and can resume where it stopped; readers see the union of all parts, one row per
key (the first part in name order wins). Several teachers and several writers (bulk labelling,
shadow scoring, merged stores) share one store: each row names its teacher and version, and
`manifest.json` says, per teacher, how its answers became the stored logits.
"""

from __future__ import annotations

import json
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


KEY = ["query", "item_id", "teacher_id", "teacher_version"]
MANIFEST = "manifest.json"


def teacher_key(teacher_id: str, teacher_version: str) -> str:
    return f"{teacher_id}@{teacher_version}"


class LabelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- manifest: per teacher, how scores became logits; per labelling run, its settings
    def manifest(self) -> dict:
        path = self.root / MANIFEST
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        if manifest and "teachers" not in manifest:  # a store written before versions: one run, one teacher
            manifest = {"format": 2, "teachers": {}, "runs": {"legacy": manifest}}
        manifest.setdefault("format", 2)
        manifest.setdefault("teachers", {})
        manifest.setdefault("runs", {})
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(temporary, path)

    def register_teacher(self, description: dict) -> dict:
        """Record a teacher (id, version, kind, conversion); the same id and version must mean the same conversion."""
        manifest = self.manifest()
        key = teacher_key(description["teacher_id"], description["teacher_version"])
        known = manifest["teachers"].get(key)
        if known is not None and known.get("conversion") != description.get("conversion"):
            raise ValueError(f"label store {self.root} already holds teacher {key} with conversion "
                             f"{known.get('conversion')!r}, not {description.get('conversion')!r}: give the teacher another version")
        manifest["teachers"][key] = {**(known or {}), **description}
        self.write_manifest(manifest)
        return manifest

    def keys(self, teacher_id: str | None = None, teacher_version: str | None = None) -> set[tuple]:
        """(query, item_id) of every row of one teacher (and version), or (query, item_id, id, version) of all."""
        parts = self.parts()
        if not parts:
            return set()
        filters = [(name, "=", value) for name, value in (("teacher_id", teacher_id), ("teacher_version", teacher_version))
                   if value is not None]
        table = pq.read_table(parts, schema=SCHEMA, columns=KEY, filters=filters or None)
        columns = ["query", "item_id"] if teacher_id is not None and teacher_version is not None else KEY
        return set(zip(*(table.column(name).to_pylist() for name in columns)))

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

    def read(self, split: str | None = None, teacher_id: str | None = None, teacher_version: str | None = None):
        """All labels as a pandas DataFrame (one row per key), optionally one split and/or one teacher.

        `teacher_id` may be `id@version`."""
        parts = self.parts()
        if not parts:
            raise FileNotFoundError(f"label store {self.root} holds no Parquet parts")
        if teacher_id and "@" in teacher_id and teacher_version is None:
            teacher_id, teacher_version = teacher_id.rsplit("@", 1)
        filters = [(name, "=", value) for name, value in
                   (("split", split), ("teacher_id", teacher_id), ("teacher_version", teacher_version)) if value]
        frame = pq.read_table(parts, schema=SCHEMA, filters=filters or None).to_pandas()
        return frame.drop_duplicates(KEY).reset_index(drop=True)

    def teachers(self) -> list[str]:
        """`id@version` of every teacher with rows in the store."""
        if not self.parts():
            return []
        table = pq.read_table(self.parts(), schema=SCHEMA, columns=["teacher_id", "teacher_version"])
        return sorted({teacher_key(i, v) for i, v in zip(table.column(0).to_pylist(), table.column(1).to_pylist())})
