"""One command on a user's own data: JSONL judgments and a Parquet catalogue in another schema, a teacher behind
HTTP (a real `rankstill serve`), labelling on a local Ray instance, then the exported student served."""

import json

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.distill.dataset import DataConfig, load_dataset
from rankstill.distill.label import RayOptions, label
from rankstill.distill.teachers import TeacherConfig, build_teacher
from rankstill.label_store import LabelStore
from rankstill.model_repo import read_entry
from rankstill.scoring import PairScorer

from conftest import MODEL_REPO, running_server
from distill_slice import data_section, write_slice

TINY_STUDENT = {"layers": 1, "hidden": 64, "heads": 2, "intermediate": 128, "max_length": 48, "epochs": 2,
                "queries_per_step": 4}


@pytest.fixture(scope="module")
def ray_instance():
    import ray  # the distill extra installs ray[data]

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def paths(judgments, tmp_path_factory):
    return write_slice(judgments, tmp_path_factory.mktemp("slice"), queries_per_split=8, distractors=300, extra_queries=3)


@pytest.fixture(scope="module")
def teacher_url():
    """The committed student served by rankstill stands in for a teacher behind HTTP (TEI /rerank)."""
    with running_server("--model-repo", str(MODEL_REPO), "--model", "rerank-student") as url:
        yield url


def test_ray_engine_writes_the_labels_and_parts_of_the_local_engine(ray_instance, paths, tmp_path):
    dataset = load_dataset(DataConfig(**data_section(paths)))
    config = TeacherConfig(onnx=MODEL_REPO / "rerank-student", threads=1)
    options = dict(k=4, part_size=48, progress=False)
    local = label(build_teacher(config), dataset, tmp_path / "local", **options)
    on_ray = label(build_teacher(config), dataset, tmp_path / "ray", engine="ray", teacher_config=config,
                   ray_options=RayOptions(actors=2), **options)
    assert [p.name for p in local.parts()] == [p.name for p in on_ray.parts()] and len(local.parts()) > 3
    for a, b in zip(local.parts(), on_ray.parts()):
        assert pq.read_table(a).equals(pq.read_table(b)), a.name  # identical rows, scores to the bit
    # An interrupted local run finishes on Ray (and the other way round) into the same store.
    label(build_teacher(config), dataset, tmp_path / "mixed", max_parts=2, **options)
    label(build_teacher(config), dataset, tmp_path / "mixed", engine="ray", teacher_config=config, **options)
    mixed = LabelStore(tmp_path / "mixed")
    assert [p.name for p in mixed.parts()] == [p.name for p in local.parts()]
    assert mixed.read().equals(local.read())
    sessions = next(iter(mixed.manifest()["runs"].values()))["sessions"]
    assert [s["engine"] for s in sessions] == ["local", "ray"] and sessions[0]["parts_written"] == 2


def write_config(path, **sections) -> str:
    path.write_text(json.dumps(sections))  # JSON is YAML
    return str(path)


def test_distil_own_data_with_http_teacher_on_ray_then_serve(ray_instance, paths, teacher_url, tmp_path):
    out, repo = tmp_path / "out", tmp_path / "repo"
    config = write_config(
        tmp_path / "distill.yaml", name="slice-ranker", out=str(out), data=data_section(paths),
        teacher={"url": teacher_url, "api": "tei", "id": "served-teacher", "version": "1", "documents_per_call": 16},
        label={"candidates_per_query": 4, "engine": "ray", "part_size": 64},
        student=TINY_STUDENT, export={"model_repo": str(repo)}, benchmark={"requests": 6, "teacher_requests": 3})
    result = CliRunner().invoke(app, ["distill", config])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())

    for split in ("validation", "test"):
        quality = report["quality"][split]
        assert quality["measured_against"] == "human judgments"
        assert set(quality["ndcg@10"]) >= {"random", "bm25", "teacher", "student"}
        assert all(0 < v <= 1 for v in quality["ndcg@10"].values() if v is not None)
        assert "retention" in quality
    latency = report["latency"]
    assert latency["p50_ms"] > 0 and latency["p99_ms"] >= latency["p50_ms"] and latency["requests"] == 6
    assert latency["teacher"]["p50_ms"] > 0 and latency["candidates"] >= 50
    assert report["teacher"]["teacher_id"] == "served-teacher" and report["teacher"]["kind"] == "http"
    assert report["labelling"][0]["engine"] == "ray" and report["labelling"][0]["pairs_scored"] > 100
    assert "| validation | humans |" in result.output

    labels = LabelStore(out / "labels").read()
    assert set(labels["teacher_id"]) == {"served-teacher"} and set(labels["source"]) == {"judged", "bm25"}
    assert (labels["split"][labels["source"] == "bm25"] != "train").any()  # held-out unlabeled queries got candidates

    entry = read_entry(repo / "slice-ranker")
    assert entry.metadata["training"]["teacher_ids"] == ["served-teacher"]
    assert "judgments.jsonl" in entry.metadata["training"]["data"]
    query, documents = "cordless drill", ["DEWALT 20V cordless drill kit", "bathroom faucet", "drill bit set"]
    expected = PairScorer.for_entry(entry).score([query] * 3, documents)
    with running_server("--model-repo", str(repo), "--model", "slice-ranker") as url:
        answer = httpx.post(f"{url}/rerank", json={"query": query, "texts": documents, "raw_scores": True}).json()
    served = {r["index"]: r["score"] for r in answer}
    np.testing.assert_allclose([served[i] for i in range(3)], expected, atol=1e-4)

    again = CliRunner().invoke(app, ["distill", config])  # everything is up to date: nothing reruns
    assert again.exit_code == 0, again.output
    for stage in ("label", "student", "export", "evaluate", "benchmark"):
        assert f"[{stage}] up to date" in again.output
    assert json.loads((out / "report.json").read_text())["quality"] == report["quality"]


def test_no_judgments_distils_from_the_teacher_alone(paths, teacher_url, tmp_path):
    """The zero-shot path: a catalogue and queries, no labels; quality is agreement with the teacher."""
    out = tmp_path / "out"
    data = data_section(paths, judged=False)
    config = write_config(
        tmp_path / "distill.yaml", name="unlabelled", out=str(out), data=data,
        teacher={"url": teacher_url, "id": "served-teacher", "version": "1"},
        label={"candidates_per_query": 8, "heldout_candidates": 12}, student=TINY_STUDENT,
        export={"model_repo": str(tmp_path / "repo"), "int8": False}, benchmark={"requests": 0})
    result = CliRunner().invoke(app, ["distill", config])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    validation = report["quality"]["validation"]
    assert validation["measured_against"].startswith("no judgments: NDCG@10 with the teacher's sigmoid")
    assert validation["ndcg@10"]["teacher"] == pytest.approx(1.0)  # the teacher's order is the ideal one here
    assert validation["kendall_tau"] is not None and validation["queries"] >= 1
    assert LabelStore(out / "labels").read()["human_label"].isna().all()
    assert "| validation | teacher |" in result.output


def test_augmented_pairs_and_a_listwise_loss_from_the_config(paths, teacher_url, tmp_path):
    """`augment:` labels more training pairs with the teacher into OUT/augment and the student learns from them
    beside the main store, with the loss `student:` names; `sweep:` adds the data-size sweep and the frontier
    next to report.json; a rerun finds every stage up to date."""
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "distill.yaml", name="augmented", out=str(out), data=data_section(paths),
        teacher={"url": teacher_url, "id": "served-teacher", "version": "1"},
        label={"candidates_per_query": 2},
        augment=[{"source": "new-query", "pairs": 24, "per_query": 4}, {"source": "bm25-deep", "pairs": 16, "per_query": 2}],
        student={**TINY_STUDENT, "loss": "listwise", "temperature": 0.5},
        export={"model_repo": str(tmp_path / "repo"), "int8": False}, benchmark={"requests": 0, "candidates": 12},
        sweep={"data_sizes": [0, 16], "shapes": ["1x64"], "payloads": 2})
    result = CliRunner().invoke(app, ["distill", config])
    assert result.exit_code == 0, result.output

    augmented = LabelStore(out / "augment").read()
    counts = augmented.groupby("source").size().to_dict()
    assert counts["new-query"] == 24 and 0 < counts["bm25-deep"] <= 16  # at most 2 per training query
    assert set(augmented["split"]) == {"train"} and set(augmented["teacher_id"]) == {"served-teacher"}
    heldout = set(LabelStore(out / "labels").read().query("split != 'train'")["query"])
    assert not heldout & set(augmented["query"])  # made-up queries never leak into validation or test
    student = json.loads((out / "student" / "report.json").read_text())
    assert student["loss"] == "listwise" and student["temperature"] == 0.5
    assert {source: student["train_sources"][source] for source in counts} == counts
    report = json.loads((out / "report.json").read_text())
    assert [a["source"] for a in report["augmentation"]] == ["new-query", "bm25-deep"]
    sizes = json.loads((out / "sweep" / "data_size.json").read_text())["rows"]
    assert sizes[0]["augmented_pairs"] == 0 and sizes[1]["augmented_pairs"] >= 16
    shapes = json.loads((out / "frontier" / "frontier.json").read_text())["rows"]
    assert [row["spec"] for row in shapes] == ["1x64", "student"]
    assert shapes[1]["validation_ndcg@10"] == student["validation"]["ndcg@10"]
    assert all(row["latency"]["fp32"]["p50_ms"] > 0 for row in shapes)
    assert report["sweep"]["png"].endswith("data_size.png") and report["frontier"]["png"].endswith("frontier.png")

    again = CliRunner().invoke(app, ["distill", config])
    assert again.exit_code == 0, again.output
    for stage in ("label", "augment", "student", "export", "sweep", "frontier"):
        assert f"[{stage}] up to date" in again.output


def test_teacher_search_from_the_config_labels_with_the_best_teacher(paths, tmp_path):
    """`teacher: {search: ...}` picks the teacher by validation NDCG and labels with it, at the depth and
    max length it was chosen with; a rerun does not search again."""
    out = tmp_path / "out"
    search = {"budget_minutes": 10, "trials": 3, "layers": [1, 2], "max_lengths": [24, 32],
              "epochs": [0.5, 1.0], "checks": 2, "check_queries": 4}
    config = write_config(
        tmp_path / "distill.yaml", name="searched", out=str(out), data=data_section(paths),
        teacher={"id": "searched-teacher", "search": search}, label={"candidates_per_query": 2},
        student=TINY_STUDENT, export={"model_repo": str(tmp_path / "repo"), "int8": False}, benchmark={"requests": 0})
    result = CliRunner().invoke(app, ["distill", config])
    assert result.exit_code == 0, result.output

    found = json.loads((out / "teacher-search" / "search.json").read_text())
    best = found["best"]
    assert len(found["trials"]) == 3 and (out / "teacher-search" / "search.png").is_file()
    teacher = build_teacher(TeacherConfig(max_length=best["max_length"]), out / "teacher-search" / "best")
    assert teacher.model.config.num_hidden_layers == best["layers"]
    labels = LabelStore(out / "labels").read()
    assert set(labels["teacher_id"]) == {"searched-teacher"} and set(labels["teacher_version"]) == {teacher.version}
    sample = labels.head(5)
    np.testing.assert_allclose(teacher.score(list(sample["query"]), list(sample["item_text"])),
                               sample["teacher_score"], atol=1e-4)

    again = CliRunner().invoke(app, ["distill", config])
    assert again.exit_code == 0, again.output
    assert "[teacher] up to date" in again.output
