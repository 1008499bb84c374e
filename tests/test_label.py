import numpy as np
import pytest
import torch

from rankstill.distill.label import label
from rankstill.distill.teacher import HFTeacher, default_backbone
from rankstill.label_store import LabelStore


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return HFTeacher(default_backbone(), max_length=48)


def test_labelling_resumes_after_interruption(teacher, data_path, tmp_path):
    options = dict(k=3, part_size=64, max_queries=6)
    partial = label(teacher, data_path, tmp_path / "resumed", max_parts=2, **options)
    assert len(partial.parts()) == 2
    label(teacher, data_path, tmp_path / "resumed", **options)
    resumed = partial.read()
    fresh = label(teacher, data_path, tmp_path / "fresh", **options).read()

    assert not resumed.duplicated(["query", "item_id"]).any()
    assert len(resumed) == len(fresh)
    merged = resumed.merge(fresh, on=["query", "item_id"], suffixes=("", "_fresh"))
    assert len(merged) == len(fresh)
    np.testing.assert_allclose(merged["teacher_score"], merged["teacher_score_fresh"], atol=1e-5)


def test_label_store_content(teacher, data_path, tmp_path, judgments):
    store = label(teacher, data_path, tmp_path / "labels", k=3, part_size=256, max_queries=5)
    labels = store.read()
    assert set(labels["teacher_id"]) == {teacher.teacher_id}
    augmented = labels[labels["source"] == "bm25"]
    judged = labels[labels["source"] == "judged"]
    # Augmented pairs are training queries with products they were never judged against.
    assert len(augmented) > 0 and set(augmented["split"]) == {"train"}
    judged_keys = set(zip(judgments["query"], judgments["product_uid"]))
    assert not any(key in judged_keys for key in zip(augmented["query"], augmented["item_id"]))
    assert augmented["human_label"].isna().all() and judged["human_label"].notna().all()
    assert set(judged["split"]) == {"train", "validation", "test"}
    assert store.read(split="validation")["split"].eq("validation").all()


def test_other_settings_add_a_run_without_duplicating_pairs(teacher, data_path, tmp_path):
    store = label(teacher, data_path, tmp_path / "labels", k=2, part_size=256, max_queries=3)
    before = store.read()
    label(teacher, data_path, tmp_path / "labels", k=5, part_size=256, max_queries=3)
    after = store.read()
    assert not after.duplicated(["query", "item_id", "teacher_id", "teacher_version"]).any()
    assert len(after) > len(before) and len(store.manifest()["runs"]) == 2
    again = after.merge(before, on=["query", "item_id"], suffixes=("", "_before"))
    np.testing.assert_array_equal(again["teacher_score"], again["teacher_score_before"])  # kept, not rescored
