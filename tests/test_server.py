"""The real server (uvicorn on 127.0.0.1) with the committed default student, over real HTTP."""

import asyncio
import re

import cohere
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from rankstill.model_repo import load_model

from conftest import FP32_MODEL, INT8_BATCH_TOLERANCE, INT8_MODEL, MODEL_REPO, running_server

QUERY = "cordless drill"
DOCUMENTS = ["DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit", "Delta Bathroom Faucet in Chrome",
             "Milwaukee M18 Cordless Hammer Drill (Tool Only)", "Behr Premium Plus White Interior Paint",
             "1/2 in. Drill Bit Set (15-Piece)"]


@pytest.fixture(scope="module")
def server():
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL) as url:
        yield url


def reference_logits(query: str, documents: list[str], model: str | None = None) -> np.ndarray:
    """One pair at a time, no padding, straight from tokenizers + ONNX Runtime."""
    entry = load_model(MODEL_REPO, model or FP32_MODEL)
    tokenizer = Tokenizer.from_file(str(entry.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(entry.max_length)
    session = ort.InferenceSession(str(entry.onnx_path), providers=["CPUExecutionProvider"])
    logits = []
    for document in documents:
        encoding = tokenizer.encode(query, document)
        feeds = {"input_ids": [encoding.ids], "attention_mask": [encoding.attention_mask],
                 "token_type_ids": [encoding.type_ids]}
        logits.append(session.run(None, {k: np.array(v, dtype=np.int64) for k, v in feeds.items()})[0][0, 0])
    return np.array(logits)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_jina_cohere_v1_shape_sorted_with_correct_scores(server):
    body = {"query": QUERY, "documents": DOCUMENTS[:4] + [{"text": DOCUMENTS[4]}], "top_n": 3}
    response = httpx.post(f"{server}/rerank", json=body)
    assert response.status_code == 200
    answer = response.json()
    expected = sigmoid(reference_logits(QUERY, DOCUMENTS))
    assert answer["model"] == FP32_MODEL
    assert [r["index"] for r in answer["results"]] == list(np.argsort(-expected)[:3])
    for result in answer["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=1e-4)
        assert result["document"]["text"] == DOCUMENTS[result["index"]]
    assert answer["usage"]["total_tokens"] > len(DOCUMENTS)
    # The trained student puts the two drills above the faucet and the paint.
    assert set(np.argsort(-expected)[:2]) <= {0, 2, 4}


def test_tei_shape_is_a_bare_array_never_cut(server):
    response = httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True,
                                                    "return_text": True, "top_n": 1})
    assert response.status_code == 200
    answer = response.json()
    assert isinstance(answer, list) and len(answer) == len(DOCUMENTS)
    expected = reference_logits(QUERY, DOCUMENTS)
    assert [r["index"] for r in answer] == list(np.argsort(-expected))
    for result in answer:
        assert result["score"] == pytest.approx(expected[result["index"]], abs=1e-4)
        assert result["text"] == DOCUMENTS[result["index"]]
    plain = httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()
    assert "text" not in plain[0] and 0 < plain[0]["score"] < 1


def test_official_cohere_v2_client_works_unchanged(server):
    client = cohere.ClientV2(api_key="not-needed", base_url=server)
    answer = client.rerank(model=FP32_MODEL, query=QUERY, documents=DOCUMENTS, top_n=2)
    expected = sigmoid(reference_logits(QUERY, DOCUMENTS))
    assert [r.index for r in answer.results] == list(np.argsort(-expected)[:2])
    assert answer.results[0].relevance_score == pytest.approx(expected.max(), abs=1e-4)


def test_named_int8_model_is_served_too(server):
    name = INT8_MODEL
    answer = httpx.post(f"{server}/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": name}).json()
    assert answer["model"] == name
    expected = sigmoid(reference_logits(QUERY, DOCUMENTS, name))
    for result in answer["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=INT8_BATCH_TOLERANCE)


def test_over_long_documents_are_truncated_and_counted(server):
    long_document = "cordless drill with battery " * 200
    response = httpx.post(f"{server}/rerank", json={"query": QUERY, "documents": [long_document, "drill"]})
    assert response.status_code == 200
    assert response.headers["x-truncated-documents"] == "1"
    expected = sigmoid(reference_logits(QUERY, [long_document, "drill"]))
    scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    assert scores[0] == pytest.approx(expected[0], abs=1e-4)


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M))


def test_concurrent_requests_are_batched_and_each_answered_correctly(server):
    before = httpx.get(f"{server}/metrics").text
    requests = [(f"{QUERY} {i}", DOCUMENTS * 10) for i in range(24)]

    async def fire():
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*[client.post("/rerank", json={"query": q, "texts": d, "raw_scores": True})
                                          for q, d in requests])

    responses = asyncio.run(fire())
    after = httpx.get(f"{server}/metrics").text
    for (query, documents), response in zip(requests, responses):
        assert response.status_code == 200
        got = {r["index"]: r["score"] for r in response.json()}
        expected = reference_logits(query, documents[:5])
        assert [got[i] for i in range(5)] == pytest.approx(list(expected), abs=1e-4)
    batches = _metric(after, "rankstill_batch_requests_count") - _metric(before, "rankstill_batch_requests_count")
    merged = _metric(after, "rankstill_batch_requests_sum") - _metric(before, "rankstill_batch_requests_sum")
    assert merged == len(requests)
    assert batches < len(requests)  # some requests shared a model run


def test_health_readiness_docs_and_metrics(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").status_code == 200
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/rerank", "/v2/rerank", "/metrics"} <= set(paths)
    assert httpx.get(f"{server}/docs").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    assert 'rankstill_requests_total{route="/rerank",status="200"}' in metrics
    assert "rankstill_stage_seconds_bucket" in metrics


def test_overload_gets_503_with_retry_after_and_accepted_work_is_answered():
    with running_server("--model-repo", str(MODEL_REPO), "--max-queued-tokens", "2000", "--max-batch-tokens", "2000") as url:
        async def fire():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(*[client.post("/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS * 20})
                                              for i in range(20)])

        responses = asyncio.run(fire())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "overloaded" in response.json()["detail"]
        else:
            assert len(response.json()) == 100
