"""`POST /recommend` on the committed MovieLens-100K student, over real HTTP, checked against ONNX Runtime directly."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from rankstill.model_repo import load_model
from rankstill.scoring import onnx_session

from conftest import MODEL_REPO, running_server


@pytest.fixture(scope="module")
def server():
    with running_server("--model-repo", str(MODEL_REPO)) as url:
        yield url


@pytest.fixture(scope="module")
def recommender():
    entry = load_model(MODEL_REPO, task="recommend")
    catalogue = json.loads(entry.items_path.read_text())
    return entry, [item["id"] for item in catalogue], {item["id"]: item["title"] for item in catalogue}


def direct_scores(entry, history_index: list[int]) -> np.ndarray:
    window, pad = entry.metadata["window"], entry.metadata["num_items"]
    session = onnx_session(entry.onnx_path, 1)
    history = np.array([history_index + [pad] * (window - len(history_index))], dtype=np.int64)
    return session.run(["scores"], {"history": history, "lengths": np.array([len(history_index)], dtype=np.int64)})[0][0]


def test_committed_recommender_beats_random_order_on_the_test_split(recommender, seq_data):
    entry, ids, _ = recommender
    assert len(ids) == entry.metadata["num_items"] == seq_data.num_items
    test = seq_data.split("test")
    session = onnx_session(entry.onnx_path, 1)
    scores = session.run(["scores"], {"history": test.history, "lengths": test.lengths})[0]
    rows, positions = np.nonzero(np.arange(test.history.shape[1]) < test.lengths[:, None])
    scores[rows, test.history[rows, positions]] = -np.inf  # the history is never recommended
    top20 = np.argsort(-scores, axis=1)[:, :20]
    hit_rate = float((top20 == test.targets[:, None]).any(axis=1).mean())
    assert hit_rate > 3 * 20 / len(ids)  # random order: 20 / 1682 ≈ 0.012


def test_recommend_ranks_the_catalogue_like_the_model_and_skips_the_history(server, recommender):
    entry, ids, titles = recommender
    history = [ids[49], ids[171], ids[180]]  # catalogue ids: Star Wars, The Empire Strikes Back, Return of the Jedi
    answer = httpx.post(f"{server}/recommend", json={"history": history, "top_n": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == entry.name and len(body["results"]) == 5
    scores = direct_scores(entry, [49, 171, 180])
    scores[[49, 171, 180]] = -np.inf
    expected = [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
    assert [r["id"] for r in body["results"]] == expected
    assert all(r["title"] == titles[r["id"]] for r in body["results"])
    assert not set(history) & {r["id"] for r in body["results"]}

    kept = httpx.post(f"{server}/recommend", json={"history": history, "candidates": history + [ids[0]],
                                                   "exclude_history": False}).json()
    assert sorted(r["id"] for r in kept["results"]) == sorted(history + [ids[0]])


def test_recommend_within_candidates(server, recommender):
    _, ids, _ = recommender
    candidates = [ids[0], ids[1], ids[2], ids[99]]
    body = httpx.post(f"{server}/recommend", json={"history": [ids[0], ids[5]], "candidates": candidates, "top_n": 10}).json()
    returned = [r["id"] for r in body["results"]]
    assert sorted(returned) == sorted([ids[1], ids[2], ids[99]])  # ids[0] is in the history
    assert [r["score"] for r in body["results"]] == sorted((r["score"] for r in body["results"]), reverse=True)


@pytest.mark.parametrize("body, status, words", [
    ({"history": []}, 422, "at least 1"),
    ({"history": [999999]}, 404, "unknown item ids in history: [999999]"),
    ({"history": [1], "candidates": [1, -5]}, 404, "unknown item ids in candidates: [-5]"),
    ({"history": ["one"]}, 422, "history"),
    ({"history": [1], "top_n": 0}, 422, "top_n"),
    ({"history": [1], "model": "nope"}, 404, "unknown recommend model"),
])
def test_bad_recommend_requests_get_clear_4xx(server, body, status, words):
    answer = httpx.post(f"{server}/recommend", json=body)
    assert answer.status_code == status
    assert words in json.dumps(answer.json())


# ---------------------------------------------------------------- the same models through a real Triton

@pytest.fixture(scope="module")
def repo_with_caser(seq_data, tmp_path_factory):
    """model_repo/ plus a Caser recommender (its graph reads no `lengths`), exported as `rankstill seq export` does."""
    import torch

    from rankstill.distill.seqrec.models import SeqShape, build_model
    from rankstill.distill.seqrec.stage import save_checkpoint
    from rankstill.export.seq_export import export_recommender

    repo = tmp_path_factory.mktemp("repo")
    for child in MODEL_REPO.iterdir():
        (repo / child.name).symlink_to(child) if child.is_dir() else (repo / child.name).write_bytes(child.read_bytes())
    torch.manual_seed(0)
    caser = build_model(SeqShape(kind="caser", num_items=seq_data.num_items, hidden=16)).eval()
    student = tmp_path_factory.mktemp("caser")
    save_checkpoint(caser, student, {"valid": {}, "test": {}})
    export_recommender(student, seq_data.folder, repo, "rec-caser", False, parity_rows=64)
    return repo


def test_caser_config_lists_exactly_the_graph_inputs(repo_with_caser):
    entry = load_model(repo_with_caser, "rec-caser", task="recommend")
    graph_inputs = [i.name for i in onnx_session(entry.onnx_path, 1).get_inputs()]
    config = (entry.directory / "config.pbtxt").read_text()
    assert graph_inputs == ["history"] and entry.metadata["inputs"] == ["history"]
    assert 'name: "history"' in config and "lengths" not in config
    sasrec = (MODEL_REPO / load_model(MODEL_REPO, task="recommend").name / "config.pbtxt").read_text()
    assert 'name: "lengths"' in sasrec


def test_recommend_through_triton_matches_in_process(repo_with_caser, recommender, tmp_path):
    from rankstill.server.triton.launcher import running_triton

    from conftest import ROOT

    python = ROOT / ".venv-triton" / "bin" / "python"
    assert python.exists(), "run `make triton-env` first (make test does)"
    _, ids, _ = recommender
    bodies = [{"history": [ids[49], ids[171], ids[180]], "top_n": 20},
              {"history": [ids[0]], "top_n": 5, "model": "rec-caser"},
              {"history": [ids[i] for i in range(10)], "top_n": 10, "candidates": ids[:200], "model": "rec-caser"}]
    with running_triton(repo_with_caser, tmp_path / "triton", python) as triton:
        assert {"recommend-sasrec", "rec-caser"} <= set(triton.models)
        with running_server("--model-repo", str(repo_with_caser), "--backend", "triton", "--triton-url", triton.grpc_url) as url:
            via_triton = [httpx.post(f"{url}/recommend", json=body) for body in bodies]
            with ThreadPoolExecutor(8) as pool:  # concurrent requests, merged by Triton's dynamic batcher
                concurrent = list(pool.map(lambda _: httpx.post(f"{url}/recommend", json=bodies[0]).json(), range(16)))
    with running_server("--model-repo", str(repo_with_caser)) as url:
        in_process = [httpx.post(f"{url}/recommend", json=body).json() for body in bodies]
    for triton_answer, local in zip(via_triton, in_process):
        assert triton_answer.status_code == 200, triton_answer.text
        assert [r["id"] for r in triton_answer.json()["results"]] == [r["id"] for r in local["results"]]
        np.testing.assert_allclose([r["score"] for r in triton_answer.json()["results"]],
                                   [r["score"] for r in local["results"]], rtol=1e-5, atol=1e-5)
    assert all([r["id"] for r in c["results"]] == [r["id"] for r in in_process[0]["results"]] for c in concurrent)


def test_recommend_with_triton_down_is_a_clear_503(tmp_path):
    from rankstill.local_server import free_port

    with running_server("--model-repo", str(MODEL_REPO), "--backend", "triton", "--triton-url", f"127.0.0.1:{free_port()}",
                        "--triton-timeout", "2", wait_for="/healthz") as url:
        answer = httpx.post(f"{url}/recommend", json={"history": [1, 2]}, timeout=30)
    assert answer.status_code in (503, 504) and "Triton" in answer.json()["detail"]


def test_a_history_longer_than_the_window_is_read_from_its_most_recent_items(server, recommender):
    entry, ids, _ = recommender
    window = entry.metadata["window"]
    older, recent = ids[200:205], ids[10:10 + window]
    long_answer = httpx.post(f"{server}/recommend", json={"history": older + recent, "top_n": 20}).json()
    recent_answer = httpx.post(f"{server}/recommend", json={"history": recent, "top_n": 30}).json()
    returned = [r["id"] for r in long_answer["results"]]
    assert not set(older + recent) & set(returned)  # the whole history is excluded
    expected = [r["id"] for r in recent_answer["results"] if r["id"] not in older][:20]
    assert returned == expected  # the model read only the most recent `window` items
