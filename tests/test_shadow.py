"""Shadow scoring with real servers on 127.0.0.1: a real teacher server, a slow one, a failing one, none."""

import contextlib
import os
import sys
import time

import httpx
import numpy as np
import pytest

from rankstill.distill.student import StudentShape
from rankstill.distill.teacher import default_backbone
from rankstill.distill.train_student import train_student
from rankstill.label_store import LabelStore
from rankstill.local_server import free_port
from rankstill.server.shadow import agreement

from conftest import INT8_BATCH_TOLERANCE, MODEL_REPO, ROOT, running_server

sys.path.insert(0, str(ROOT / "benchmarks"))
from latency import slow_teacher  # noqa: E402

QUERY = "patio umbrella"
DOCUMENTS = ["9 ft. Aluminum Patio Umbrella in Red", "Outdoor Patio Umbrella Base", "Garden Hose Reel",
             "11 ft. Offset Patio Umbrella with Solar Lights", "Wood Deck Stain"]


def teacher_stub(*args: str):
    delay = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
    return slow_teacher(delay, fail="--fail" in args)


def shadowed_server(teacher_url: str, *extra: str):
    return running_server("--model-repo", str(MODEL_REPO), "--shadow-teacher", teacher_url,
                          "--shadow-rate", "1.0", "--shadow-timeout", "1", *extra)


def wait_for(url: str, done, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        summary = httpx.get(f"{url}/shadow/summary").json()
        if done(summary["counts"]) or time.monotonic() > deadline:
            return summary
        time.sleep(0.2)


def test_agreement_metrics_by_hand():
    student = np.array([3.0, 2.0, 1.0, 0.0])
    teacher = np.array([0.0, 1.0, 2.0, 3.0])
    reversed_order = agreement(student, teacher, k=2)
    assert reversed_order["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_order["top1"] == 0.0 and reversed_order["overlap"] == 0.0
    same = agreement(teacher * 2, teacher, k=2)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["top1"] == 1.0 and same["ndcg"] == pytest.approx(1.0)


def test_real_teacher_server_measures_agreement_and_harvests_trainable_labels(tmp_path):
    labels = tmp_path / "harvested"
    with running_server("--model-repo", str(MODEL_REPO), "--model", "rerank-student-int8") as teacher_url:
        with shadowed_server(teacher_url, "--shadow-labels", str(labels), "--shadow-teacher-id", "int8-teacher") as url:
            for i in range(8):
                body = {"query": f"{QUERY} {i}", "documents": DOCUMENTS}
                assert httpx.post(f"{url}/rerank", json=body).status_code == 200
            skipped = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, headers={"X-Shadow": "0"})
            assert skipped.status_code == 200
            summary = wait_for(url, lambda c: c.get("scored", 0) >= 8)
            metrics = httpx.get(f"{url}/metrics").text
    assert summary["counts"]["scored"] == 8 and summary["counts"]["queued"] == 8
    assert summary["kendall_tau"]["mean"] > 0.5  # the int8 teacher orders nearly like fp32
    assert 'rankstill_shadow_agreement_count{metric="kendall_tau"} 8.0' in metrics

    harvested = LabelStore(labels).read()
    assert len(harvested) == 8 * len(DOCUMENTS)
    assert set(harvested["source"]) == {"shadow"} and set(harvested["teacher_id"]) == {"int8-teacher"}
    assert harvested["student_score"].notna().all() and harvested["teacher_score"].notna().all()

    report = train_student(labels, tmp_path / "student", default_backbone(),
                           StudentShape(layers=1, hidden=64, heads=2, intermediate=128, max_length=32),
                           epochs=1, queries_per_step=4, max_items=8, lr=1e-3, bce_weight=0.1)
    assert report["train_queries"] == 8 and report["teacher_ids"] == ["int8-teacher"]
    assert (tmp_path / "student" / "model.safetensors").is_file()


@pytest.mark.parametrize("teacher", ["slow", "failing", "absent"])
def test_bad_teacher_never_changes_the_main_path(teacher):
    with running_server("--model-repo", str(MODEL_REPO)) as plain_url:
        expected = [httpx.post(f"{plain_url}/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS, "raw_scores": True}).json()
                    for i in range(6)]
    stub = {"slow": teacher_stub("--delay", "3"), "failing": teacher_stub("--fail"),
            "absent": contextlib.nullcontext(f"http://127.0.0.1:{free_port()}")}[teacher]
    with stub as teacher_url, shadowed_server(teacher_url, "--shadow-concurrency", "1", "--shadow-queue", "2") as url:
        answers = [httpx.post(f"{url}/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS, "raw_scores": True})
                   for i in range(6)]
        summary = wait_for(url, lambda c: c.get("error", 0) + c.get("dropped", 0) + c.get("skipped_circuit_open", 0) >= 6)
    for answer, reference in zip(answers, expected):
        assert answer.status_code == 200
        assert [r["index"] for r in answer.json()] == [r["index"] for r in reference]
        np.testing.assert_allclose([r["score"] for r in answer.json()], [r["score"] for r in reference], atol=1e-5)
    counts = summary["counts"]
    assert counts.get("scored", 0) == 0
    assert counts.get("error", 0) >= 1
    if teacher == "slow":
        assert counts.get("dropped", 0) >= 1  # one call in flight, two waiting: the rest are dropped


def test_local_teacher_entry_runs_in_process_and_matches_the_model(tmp_path):
    """A local ONNX teacher (here the committed int8 entry) scores shadow traffic without a second server."""
    from rankstill.model_repo import read_entry
    from rankstill.pair_tokenizer import PairTokenizer
    from rankstill.scoring import OnnxRunner

    teacher_dir = MODEL_REPO / "rerank-student-int8"
    labels = tmp_path / "harvested"
    with shadowed_server(str(teacher_dir), "--shadow-labels", str(labels)) as url:
        for i in range(4):
            assert httpx.post(f"{url}/rerank", json={"query": f"{QUERY} {i}", "documents": DOCUMENTS}).status_code == 200
        summary = wait_for(url, lambda c: c.get("scored", 0) >= 4)
    assert summary["counts"]["scored"] == 4 and summary["counts"].get("error", 0) == 0

    harvested = LabelStore(labels).read()
    assert set(harvested["teacher_id"]) == {"rerank-student-int8"}  # the entry's own name when it has no teacher_id
    entry = read_entry(teacher_dir)
    first = harvested[harvested["query"] == f"{QUERY} 0"]
    tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
    direct = OnnxRunner(entry.onnx_path, 1).run(
        tokenizer.encode([f"{QUERY} 0"] * len(first), list(first["item_text"])).as_feeds())
    np.testing.assert_allclose(first["teacher_score"], direct, atol=INT8_BATCH_TOLERANCE)


def test_shadow_settings_from_a_config_file_and_flags_override_it(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(f"model_repo: {MODEL_REPO}\nshadow:\n  teacher: {MODEL_REPO / 'rerank-student-int8'}\n"
                      "  rate: 0.0\n  concurrency: 1\n")
    with running_server("--config", str(config), "--shadow-timeout", "2") as url:
        for i in range(3):
            httpx.post(f"{url}/rerank", json={"query": f"{QUERY} {i}", "documents": DOCUMENTS})  # rate 0: none sampled
        forced = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, headers={"X-Shadow": "1"})
        assert forced.status_code == 200
        summary = wait_for(url, lambda c: c.get("scored", 0) >= 1)
    assert summary["counts"] == {"queued": 1, "scored": 1}


def test_config_file_with_unknown_settings_is_refused(tmp_path):
    import subprocess

    config = tmp_path / "serve.yaml"
    config.write_text("shadow:\n  teacherr: http://127.0.0.1:1\n")
    result = subprocess.run([sys.executable, "-m", "rankstill.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60,
                            env={**os.environ, "COLUMNS": "1000"})  # the error on one line
    assert result.returncode != 0 and "shadow.teacherr" in result.stderr and "shadow.teacher," in result.stderr
