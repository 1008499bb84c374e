"""The shared, versioned label store: keys, no duplicates on relabelling, several teachers, stats, merge,
and two students trained from one store."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.distill.dataset import DataConfig, load_dataset
from rankstill.distill.label import label
from rankstill.distill.label_tools import merge, stats
from rankstill.distill.teachers import OnnxTeacher
from rankstill.label_store import KEY, LabelStore

from conftest import MODEL_REPO
from distill_slice import data_section, write_slice

FP32, INT8 = MODEL_REPO / "rerank-student", MODEL_REPO / "rerank-student-int8"


@pytest.fixture(scope="module")
def dataset(judgments, tmp_path_factory):
    paths = write_slice(judgments, tmp_path_factory.mktemp("slice"), queries_per_split=4, distractors=120)
    return load_dataset(DataConfig(**data_section(paths)))


@pytest.fixture(scope="module")
def shared_store(dataset, tmp_path_factory):
    """One store, two teachers (the committed fp32 and int8 entries stand in for two real teachers)."""
    root = tmp_path_factory.mktemp("store") / "labels"
    label(OnnxTeacher(FP32, threads=1), dataset, root, k=3, part_size=32, progress=False)
    label(OnnxTeacher(INT8, threads=1, teacher_id="int8-teacher"), dataset, root, k=3, part_size=32, progress=False)
    return root


def test_relabelling_with_the_same_teacher_adds_only_new_pairs(dataset, tmp_path):
    teacher = OnnxTeacher(FP32, threads=1)
    store = label(teacher, dataset, tmp_path / "labels", k=2, part_size=32, progress=False)
    first = store.read()
    parts = len(store.parts())
    label(teacher, dataset, tmp_path / "labels", k=2, part_size=32, progress=False)  # same plan: nothing to do
    assert len(store.parts()) == parts and len(store.read()) == len(first)

    label(teacher, dataset, tmp_path / "labels", k=4, part_size=32, progress=False)  # a wider plan
    second = store.read()
    assert not second.duplicated(KEY).any()
    raw = sum(pq.read_metadata(p).num_rows for p in store.parts())
    assert raw == len(second)  # no row was stored twice, not merely hidden by read()
    assert len(second) > len(first)
    assert set(map(tuple, first[["query", "item_id"]].values)) <= set(map(tuple, second[["query", "item_id"]].values))
    runs = store.manifest()["runs"]
    assert len(runs) == 2 and all(run["complete"] for run in runs.values())
    key = f"{teacher.teacher_id}@{teacher.version}"
    assert store.manifest()["teachers"][key]["conversion"].startswith("identity")


def test_a_teacher_version_keeps_its_conversion(dataset, tmp_path):
    store = LabelStore(tmp_path / "labels")
    store.register_teacher({"teacher_id": "t", "teacher_version": "1", "conversion": "identity"})
    with pytest.raises(ValueError, match="another version"):
        store.register_teacher({"teacher_id": "t", "teacher_version": "1", "conversion": "logit of p"})


def test_stats_count_pairs_per_split_source_and_teacher(shared_store, tmp_path):
    report = stats(shared_store)
    frame = LabelStore(shared_store).read()
    assert report["pairs"] == len(frame) and len(report["teachers"]) == 2
    teachers = report["teachers"]
    assert sum(t["pairs"] for t in teachers.values()) == len(frame)
    for key, teacher in teachers.items():
        assert sum(teacher["score"]["histogram"]["counts"]) == teacher["pairs"]
        assert set(teacher["per_split"]) == {"train", "validation", "test"}
        assert set(teacher["per_source"]) == {"judged", "bm25"}
    result = CliRunner().invoke(app, ["labels", "stats", str(shared_store), "--png", str(tmp_path / "hist.png")])
    assert result.exit_code == 0, result.output
    assert "int8-teacher@" in result.output and "train / bm25 /" in result.output
    assert (tmp_path / "hist.png").stat().st_size > 5000


def test_merge_keeps_one_row_per_key_and_refuses_conflicting_conversions(dataset, shared_store, tmp_path):
    only_fp32 = label(OnnxTeacher(FP32, threads=1), dataset, tmp_path / "fp32", k=5, part_size=64, progress=False)
    merged = tmp_path / "merged"
    summary = merge([shared_store, only_fp32.root], merged)
    combined = LabelStore(merged).read()
    assert not combined.duplicated(KEY).any()
    expected = {tuple(r) for r in LabelStore(shared_store).read()[KEY].values} | \
        {tuple(r) for r in only_fp32.read()[KEY].values}
    assert {tuple(r) for r in combined[KEY].values} == expected
    assert summary["already_present"] > 0 and summary["pairs"] == len(expected)
    again = merge([only_fp32.root], merged)  # merging again adds nothing
    assert again["added"] == 0 and len(LabelStore(merged).read()) == len(expected)
    assert len(LabelStore(merged).manifest()["teachers"]) == 2

    clash = LabelStore(tmp_path / "clash")
    frame = only_fp32.read().head(3)
    clash.write_part("p", {name: frame[name].tolist() for name in ["query", "item_id", "item_text", "teacher_score",
                                                                  "teacher_id", "teacher_version", "source", "split"]})
    key = next(iter(only_fp32.manifest()["teachers"].values()))
    clash.register_teacher({**key, "conversion": "something else"})
    with pytest.raises(ValueError, match="conversion"):
        merge([clash.root], merged)
    result = CliRunner().invoke(app, ["labels", "merge", str(only_fp32.root), "--out", str(tmp_path / "via-cli")])
    assert result.exit_code == 0 and json.loads(result.output)["added"] == len(only_fp32.read())


def test_two_students_from_one_store(shared_store, tmp_path):
    from rankstill.distill.student import StudentShape
    from rankstill.distill.teacher import default_backbone
    from rankstill.distill.train_student import train_student

    shape = StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32)
    with pytest.raises(ValueError, match="several teachers"):
        train_student(shared_store, tmp_path / "mixed", default_backbone(), shape, 1, 4, 8, 1e-3, 0.1, progress=False)
    reports = {}
    for teacher in ("rerank-student", "int8-teacher"):
        reports[teacher] = train_student(shared_store, tmp_path / teacher, default_backbone(), shape, epochs=1,
                                         queries_per_step=4, max_items=8, lr=1e-3, bce_weight=0.1, teacher=teacher,
                                         progress=False)
    store = LabelStore(shared_store)
    for teacher, report in reports.items():
        assert report["teacher_ids"] == [teacher]
        per_query = store.read(split="train", teacher_id=teacher).groupby("query").size()
        assert per_query.max() > 8 and report["train_pairs"] == int(per_query.sum())  # every pair takes its turn
        assert report["validation"]["ndcg@10"]["student"] is not None
    # The two teachers' stored logits differ, so the two students learned from different targets.
    fp32 = store.read(teacher_id="rerank-student").sort_values(["query", "item_id"])["teacher_score"].to_numpy()
    int8 = store.read(teacher_id="int8-teacher").sort_values(["query", "item_id"])["teacher_score"].to_numpy()
    assert len(fp32) == len(int8) and not np.array_equal(fp32, int8)
