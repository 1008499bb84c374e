"""Remote teachers: every HTTP shape, retries through injected faults, and a real `rankstill serve` as the teacher."""

import math
import time

import numpy as np
import pytest

from rankstill.distill.dataset import DataConfig, load_dataset
from rankstill.distill.label import label
from rankstill.distill.teachers import OnnxTeacher, TeacherConfig, TeacherError, build_teacher, yes_no_logit

from conftest import MODEL_REPO, running_server
from distill_slice import data_section, write_slice
from teacher_standin import Faults, running_standin, standin_logit

SHAPES = {"tei": {"api": "tei"}, "cohere": {"api": "cohere", "model": "standin"}, "jina": {"api": "jina", "model": "standin"},
          "vllm": {"api": "vllm", "model": "standin"}}
FAULTS = ["429", "429", "429", "ok", "500", "timeout", "slow", "ok", "429", "500"]


@pytest.fixture(scope="module")
def dataset(judgments, tmp_path_factory):
    paths = write_slice(judgments, tmp_path_factory.mktemp("slice"), queries_per_split=3, distractors=100)
    return load_dataset(DataConfig(**data_section(paths)))


def remote(url: str, kind: str, **options) -> TeacherConfig:
    # The stand-in's faults cycle over all calls in flight, so one call's tries land on slots that depend on
    # timing; 7 of FAULTS' 10 slots fail, and with 8 retries a call could (rarely) draw failures only.
    fast = dict(timeout=0.4, backoff=0.01, max_backoff=0.05, concurrency=3, documents_per_call=4, max_retries=40,
                id="standin", version="1")
    if kind == "llm":
        return TeacherConfig(llm_url=url + "/v1", model="standin", **{**fast, **options})
    return TeacherConfig(url=url, **{**SHAPES[kind], **fast, **options})


def labels_of(config: TeacherConfig, dataset, out):
    teacher = build_teacher(config)
    frame = label(teacher, dataset, out, k=3, part_size=16, progress=False).read()
    return frame.sort_values(["query", "item_id"]).reset_index(drop=True), teacher


@pytest.mark.parametrize("kind", ["tei", "cohere", "jina", "vllm", "llm"])
def test_faults_are_retried_and_labels_equal_a_fault_free_run(kind, dataset, tmp_path):
    with running_standin() as (url, _):
        clean, _ = labels_of(remote(url, kind), dataset, tmp_path / "clean")
    with running_standin(Faults(FAULTS, hang=0.8, slow=0.05)) as (url, faults):
        faulty, teacher = labels_of(remote(url, kind), dataset, tmp_path / "faulty")
    assert {"429", "500", "timeout", "slow"} <= set(faults.seen)
    assert teacher.stats["retries"] >= 6 and teacher.stats["timeouts"] >= 1 and teacher.stats["http_429"] >= 3
    assert len(faulty) == len(clean) > 20
    assert faulty[["query", "item_id"]].equals(clean[["query", "item_id"]])
    np.testing.assert_array_equal(faulty["teacher_score"].to_numpy(), clean["teacher_score"].to_numpy())
    # Stored as logits whatever the shape: probabilities and P(yes) are converted back.
    expected = [standin_logit(q, t) for q, t in zip(clean["query"], clean["item_text"])]
    np.testing.assert_allclose(clean["teacher_score"], expected, atol=1e-3 if kind != "tei" else 1e-5)


def test_calls_carry_several_documents_of_one_query_and_run_concurrently(dataset, tmp_path):
    with running_standin(Faults(["slow"], slow=0.1)) as (url, faults):
        labels_of(remote(url, "tei", concurrency=4, documents_per_call=5), dataset, tmp_path / "labels")
    assert max(faults.documents_per_call) == 5 and sum(faults.documents_per_call) > 20
    assert faults.max_inflight >= 3


def test_retry_after_is_honoured(tmp_path):
    with running_standin(Faults(["429", "ok"], retry_after="1")) as (url, faults):
        teacher = build_teacher(remote(url, "tei"))
        began = time.perf_counter()
        scores = teacher.score(["drill"], ["cordless drill"])
        waited = time.perf_counter() - began
    assert faults.seen == ["429", "ok"] and waited >= 1.0  # backoff alone would be 0.05 s at most
    assert scores[0] == pytest.approx(standin_logit("drill", "cordless drill"), abs=1e-5)


def test_retries_give_up_and_other_client_errors_stop_at_once():
    with running_standin(Faults(["500"])) as (url, faults):
        with pytest.raises(TeacherError, match="still failing after 3 tries .*HTTP 500"):
            build_teacher(remote(url, "tei", max_retries=2)).score(["q"], ["d"])
        assert faults.count == 3
    with running_standin() as (url, faults):
        with pytest.raises(TeacherError, match="422"):
            build_teacher(remote(url, "cohere", model=None)).score(["q"], ["d"])
        assert faults.count == 1  # one call: a 422 is not retried


def test_yes_no_logit_from_top_logprobs():
    p = 0.8
    assert yes_no_logit({" yes": math.log(p * 0.5), "Yes": math.log(p * 0.5), " no": math.log(1 - p)}) == \
        pytest.approx(math.log(p / (1 - p)))
    assert yes_no_logit({" maybe": -0.1}) == pytest.approx(0.0)  # neither: both at the floor


def test_a_real_rankstill_server_as_teacher_matches_the_model_in_process(dataset, tmp_path):
    entry = MODEL_REPO / "rerank-student"
    local, _ = labels_of(TeacherConfig(onnx=entry, threads=1), dataset, tmp_path / "local")
    with running_server("--model-repo", str(MODEL_REPO), "--model", "rerank-student") as url:
        tei, _ = labels_of(TeacherConfig(url=url, api="tei", id="served", version="1"), dataset, tmp_path / "tei")
        cohere, _ = labels_of(TeacherConfig(url=url, api="cohere", model="rerank-student", id="served", version="2"),
                              dataset, tmp_path / "cohere")
    assert len(tei) == len(local) == len(cohere)
    np.testing.assert_allclose(tei["teacher_score"], local["teacher_score"], atol=1e-4)
    np.testing.assert_allclose(cohere["teacher_score"], local["teacher_score"], atol=1e-3)
    assert isinstance(build_teacher(TeacherConfig(checkpoint=entry)), OnnxTeacher)  # an entry passed as checkpoint


def test_teacher_config_names_one_source():
    with pytest.raises(ValueError, match="one of"):
        TeacherConfig(url="http://x", onnx="y")
    with pytest.raises(ValueError, match="model"):
        TeacherConfig(llm_url="http://x")
