"""Student-quality tooling on a handful of real Home Depot queries: augmentation sources into a label store,
training with the new losses / auxiliary head / extra stores, the data-size subset, teacher-layer init."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from distill_slice import data_section, write_slice
from rankstill.distill.augment import augment, plan_augmentation, title_queries
from rankstill.distill.dataset import DataConfig, load_dataset
from rankstill.distill.label import label
from rankstill.distill.student import StudentShape, build_student
from rankstill.distill.sweep import augmented_subset, parse_shape
from rankstill.distill.teacher import default_backbone
from rankstill.distill.train_student import train_student
from rankstill.label_store import LabelStore


class WordOverlapTeacher:
    """Shared words minus one plus a fixed jitter: a deterministic stand-in for a fine-tuned teacher."""

    teacher_id, version, kind = "overlap", "1", "checkpoint"

    def score(self, queries, documents, batch_size=64):
        out = []
        for q, d in zip(queries, documents):
            shared = len(set(q.lower().split()) & set(d.lower().split()))
            out.append(shared - 1.0 + int(hashlib.sha1(f"{q}|{d}".encode()).hexdigest()[:6], 16) / 0xFFFFFF)
        return np.array(out, np.float32)


@pytest.fixture(scope="module")
def stores(judgments, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    dataset = load_dataset(DataConfig(**data_section(write_slice(judgments, root / "slice", queries_per_split=6))))
    teacher = WordOverlapTeacher()
    label(teacher, dataset, root / "labels", k=4, progress=False)
    for source in ("bm25-deep", "random", "new-query"):
        augment(teacher, dataset, root / "aug", source, pairs=24, per_query=4, skip=4)
    return dataset, root


def test_title_queries_are_spans_of_titles():
    rng = np.random.default_rng(0)
    titles = ["DEWALT 20V MAX Cordless Drill Kit", "Behr Premium Plus 1 gal. White Interior Paint"]
    phrases = title_queries(titles, 6, rng)
    assert phrases and all(any(p in t.lower() for t in titles) for p in phrases)
    assert all(1 <= len(p.split()) <= 4 for p in phrases)


def test_augmentation_sources_land_in_the_store_without_leaks(stores):
    dataset, root = stores
    frame = LabelStore(root / "aug").read()
    assert set(frame["source"]) == {"bm25-deep", "random", "new-query"}
    assert (frame["split"] == "train").all() and frame["human_label"].isna().all()
    heldout = set(dataset.queries.loc[dataset.queries["split"] != "train", "query"].str.lower())
    assert not heldout & set(frame.loc[frame["source"] == "new-query", "query"])
    judged = set(zip(dataset.judgments["query"], dataset.judgments["item_id"]))
    assert not judged & set(zip(frame["query"], frame["item_id"]))
    # deeper BM25 candidates are not the ones `label -k 4` already took
    main = LabelStore(root / "labels").read(split="train")
    taken = set(zip(main.loc[main["source"] == "bm25", "query"], main.loc[main["source"] == "bm25", "item_id"]))
    deep = frame[frame["source"] == "bm25-deep"]
    assert not taken & set(zip(deep["query"], deep["item_id"]))


def test_augmented_subset_is_nested_and_keeps_the_main_store(stores):
    _, root = stores
    frame = LabelStore(root / "labels").read(split="train")
    frame = pd.concat([frame, LabelStore(root / "aug").read()], ignore_index=True)
    base = augmented_subset(frame, 0)
    small, large = augmented_subset(frame, 20), augmented_subset(frame, 50)
    assert set(base["source"]) <= {"judged", "bm25"} and len(base) == (~frame["source"].isin(["bm25-deep", "random", "new-query"])).sum()
    assert 20 <= len(small) - len(base) < 20 + 8
    keys = lambda f: set(zip(f["query"], f["item_id"], f["source"]))  # noqa: E731
    assert keys(small) <= keys(large)


@pytest.mark.parametrize("loss, aux", [("listwise", False), ("ranknet", True)])
def test_training_with_other_losses_extra_stores_and_aux_head(stores, tmp_path, loss, aux):
    _, root = stores
    shape = StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32)
    report = train_student(root / "labels", tmp_path / "student", default_backbone(), shape, epochs=1,
                           queries_per_step=4, max_items=8, lr=1e-3, bce_weight=0.1, max_steps=3, progress=False,
                           loss=loss, temperature=2.0, extra_labels=[root / "aug"], aux_head=aux)
    assert report["loss"] == loss and report["aux_head"] is aux
    assert set(report["train_sources"]) >= {"judged", "new-query"}
    assert report["validation"]["ndcg@10"]["student"] is not None
    assert (tmp_path / "student" / "model.safetensors").is_file()


@pytest.mark.parametrize("select, key", [("teacher", lambda r: r["agreement"]["kendall_tau"]),
                                         ("ndcg", lambda r: r["ndcg@10"]["student"])])
def test_kept_epoch_is_the_best_by_the_chosen_rule_and_every_epoch_is_written(stores, tmp_path, select, key):
    from rankstill.distill.train_student import heldout, quality_report

    _, root = stores
    shape = StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32)
    report = train_student(root / "labels", tmp_path / "student", default_backbone(), shape, epochs=4,
                           queries_per_step=2, max_items=8, lr=3e-3, bce_weight=0.1, progress=False, select=select)
    history = report["history"]
    assert len(history) == 4 and report["select"] == select
    assert len({key(epoch) for epoch in history}) > 1  # the epochs differ, so the choice means something
    assert key(report["validation"]) == max(key(epoch) for epoch in history)
    scores = pd.read_parquet(tmp_path / "student" / "validation_scores.parquet")
    assert list(scores.columns[-4:]) == ["epoch_1", "epoch_2", "epoch_3", "epoch_4"]
    validation = heldout(LabelStore(root / "labels"), "validation", None).reset_index(drop=True)
    assert scores["item_id"].tolist() == validation["item_id"].tolist()
    for number, epoch in enumerate(history, 1):  # the file holds the scores each epoch's report was computed from
        again = quality_report(validation, {"student": scores[f"epoch_{number}"].to_numpy()})
        assert again["agreement"] == pytest.approx(epoch["agreement"])
    with pytest.raises(ValueError, match="select must be one of"):
        train_student(root / "labels", tmp_path / "bad", default_backbone(), shape, epochs=1, queries_per_step=2,
                      max_items=8, lr=1e-3, bce_weight=0.1, progress=False, select="loss")


def test_weight_average_is_what_is_kept_and_leaves_training_unchanged(stores, tmp_path):
    _, root = stores
    shape = StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32)

    def trained(name, ema_decay):
        train_student(root / "labels", tmp_path / name, default_backbone(), shape, epochs=1, queries_per_step=2,
                      max_items=8, lr=3e-3, bce_weight=0.1, max_steps=4, progress=False, ema_decay=ema_decay)
        return load_file(tmp_path / name / "model.safetensors")

    last, no_memory, long_memory = trained("last", None), trained("ema-0", 1e-12), trained("ema-1", 1 - 1e-9)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    # an average that forgets at once is the last step's weights: the steps themselves were the same
    assert torch.allclose(no_memory[key], last[key], atol=1e-6)
    # one that never forgets stays at the first step's weights, away from the last step's
    assert not torch.allclose(long_memory[key], last[key], atol=1e-4)


def test_student_from_backbone_layers_copies_them():
    backbone = default_backbone()
    shape = parse_shape("2x384@0,4")
    assert (shape.heads, shape.intermediate, shape.init_layers) == (6, 1536, "0,4")
    student = build_student(StudentShape(layers=2, hidden=384, heads=12, intermediate=1536, init_layers="0,4"), backbone)
    weights = {k.removeprefix("bert."): v for k, v in load_file(str(backbone / "model.safetensors")).items()}
    state = student.state_dict()
    for student_layer, backbone_layer in ((0, 0), (1, 4)):
        key = "encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(state["bert." + key.format(student_layer)], weights[key.format(backbone_layer)])
    assert torch.equal(state["bert.embeddings.word_embeddings.weight"], weights["embeddings.word_embeddings.weight"])
    with pytest.raises(ValueError, match="init_layers"):
        build_student(StudentShape(layers=2, hidden=128, heads=2, intermediate=512, init_layers="0,1"), backbone)


def test_sweep_data_size_from_the_cli_writes_json_and_png(stores, tmp_path):
    import json

    from typer.testing import CliRunner

    from rankstill.cli import _split_specs, app

    assert _split_specs("1x128,2x128,3x384@0,2,4") == ["1x128", "2x128", "3x384@0,2,4"]
    _, root = stores
    result = CliRunner().invoke(app, ["sweep", "data-size", "--labels", str(root / "labels"), "--extra-labels", str(root / "aug"),
                                      "--sizes", "0,20", "--layers", "1", "--hidden", "64", "--epochs", "1", "--max-steps", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "data_size.json").read_text())["rows"]
    assert [row["augmented_pairs"] for row in rows][0] == 0 and rows[1]["augmented_pairs"] >= 20
    assert (tmp_path / "data_size.png").stat().st_size > 0

    def rerun(*extra):
        result = CliRunner().invoke(app, ["sweep", "data-size", "--labels", str(root / "labels"), "--extra-labels",
                                          str(root / "aug"), "--layers", "1", "--hidden", "64", "--epochs", "1",
                                          "--max-steps", "1", "--out", str(tmp_path), *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / "data_size.json").read_text())["rows"]

    def trained_at(size):
        return (tmp_path / f"n{size}" / "report.json").stat().st_mtime_ns

    first = {size: trained_at(size) for size in (0, 20)}
    resumed = rerun("--sizes", "0,20,40")  # same settings: the two points done are kept, one more is trained
    assert resumed[:2] == rows and resumed[2]["requested_pairs"] == 40
    assert {size: trained_at(size) for size in (0, 20)} == first
    rerun("--sizes", "0", "--seed", "1")  # other settings: trained again
    assert trained_at(0) != first[0]


def test_frontier_exports_and_times_a_student_trained_elsewhere_beside_a_new_shape(stores, tmp_path):
    import json

    from rankstill.distill.sweep import frontier

    _, root = stores
    training = dict(epochs=1, queries_per_step=4, max_items=8, lr=1e-3, bce_weight=0.1, max_steps=2, progress=False)
    elsewhere = tmp_path / "elsewhere"
    report = train_student(root / "labels", elsewhere, default_backbone(),
                           StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32), **training)
    validation = LabelStore(root / "labels").read(split="validation")
    payloads = [(validation["query"].iloc[0], list(validation["item_text"].iloc[:12]))]
    training.pop("progress")
    result = frontier(root / "labels", [], tmp_path / "frontier", ["1x64"], default_backbone(), None, training,
                      payloads, trained=[elsewhere])
    trained_row = result["rows"][1]
    assert [row["spec"] for row in result["rows"]] == ["1x64", "elsewhere"]
    assert trained_row["validation_ndcg@10"] == report["validation"]["ndcg@10"]
    assert trained_row["checkpoint"] == str(elsewhere)
    assert (tmp_path / "frontier" / "model_repo" / "t-elsewhere" / "1" / "model.onnx").is_file()
    assert all(row["latency"]["fp32"]["p50_ms"] > 0 for row in result["rows"])
    assert json.loads((tmp_path / "frontier" / "frontier.json").read_text())["rows"][1]["spec"] == "elsewhere"
    assert (tmp_path / "frontier" / "frontier.png").stat().st_size > 0


class AffineTeacher(WordOverlapTeacher):
    """Another teacher id whose logits are `scale` × the overlap teacher's + `shift`."""

    version = "1"

    def __init__(self, teacher_id: str, scale: float, shift: float):
        self.teacher_id, self.scale, self.shift = teacher_id, scale, shift

    def score(self, queries, documents, batch_size=64):
        return self.scale * super().score(queries, documents) + self.shift


def test_an_ensemble_target_averages_standardised_teachers_on_the_first_ones_scale(judgments, tmp_path):
    from rankstill.distill.train_student import heldout, quality_report, read_labels

    dataset = load_dataset(DataConfig(**data_section(write_slice(judgments, tmp_path / "slice", queries_per_split=6))))
    for teacher in (WordOverlapTeacher(), AffineTeacher("scaled", 3.0, 1.0), AffineTeacher("reversed", -2.0, 0.5)):
        label(teacher, dataset, tmp_path / "labels", k=4, progress=False)
    store = LabelStore(tmp_path / "labels")
    alone = read_labels(store, "train", "overlap").sort_values(["query", "item_id"]).reset_index(drop=True)
    same = read_labels(store, "train", "overlap,scaled").sort_values(["query", "item_id"]).reset_index(drop=True)
    assert set(same["teacher_id"]) == {"ensemble(overlap+scaled)"} and len(same) == len(alone)
    np.testing.assert_allclose(same["teacher_score"], alone["teacher_score"], atol=1e-4)  # an affine copy adds nothing
    opposite = read_labels(store, "validation", "overlap,reversed")
    # a teacher and its reverse cancel out: every pair gets the first teacher's mean
    first_mean = read_labels(store, "validation", "overlap")["teacher_score"].mean()
    np.testing.assert_allclose(opposite["teacher_score"], first_mean, atol=1e-4)
    report = train_student(tmp_path / "labels", tmp_path / "student", default_backbone(),
                           StudentShape(layers=1, hidden=32, heads=2, intermediate=64, max_length=32), epochs=1,
                           queries_per_step=4, max_items=8, lr=1e-3, bce_weight=0.1, max_steps=2, progress=False,
                           teacher="overlap,scaled")
    assert report["teachers"] == ["ensemble(overlap+scaled)@"]
    single = heldout(store, "validation", "overlap")
    assert report["validation"]["ndcg@10"]["teacher"] == pytest.approx(  # the same order as the teacher alone
        quality_report(single, {"student": np.zeros(len(single))})["ndcg@10"]["teacher"])
