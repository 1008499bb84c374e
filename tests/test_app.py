"""The app and the rerank service in-process (httpx.ASGITransport, the app's own lifespan), on the
committed student: dialect shapes, bad input, errors, batching metrics."""

import asyncio
import contextlib

import httpx
import numpy as np
import pytest

from rankstill.model_repo import load_model
from rankstill.scoring import PairScorer
from rankstill.server.app import create_app
from rankstill.server.config import load_settings
from rankstill.server.errors import RequestError
from rankstill.server.metrics import ServerMetrics
from rankstill.server.service import RerankQuery, RerankService

from conftest import MODEL_REPO

QUERY = "cordless drill"
DOCUMENTS = ["DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit", "Delta Bathroom Faucet in Chrome",
             "Milwaukee M18 Cordless Hammer Drill (Tool Only)", "1/2 in. Drill Bit Set (15-Piece)"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@contextlib.asynccontextmanager
async def client(**settings):
    app = create_app(load_settings(model_repo=MODEL_REPO, **settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            yield app, http


def expected_logits(query: str, documents: list[str], model: str | None = None) -> np.ndarray:
    return PairScorer.for_entry(load_model(MODEL_REPO, model)).score([query] * len(documents), documents)


@pytest.mark.anyio
async def test_every_dialect_maps_to_the_same_ranking():
    logits = expected_logits(QUERY, DOCUMENTS)
    order = list(np.argsort(-logits, kind="stable"))
    async with client() as (_, http):
        v1 = (await http.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2})).json()
        tei = (await http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})).json()
        v2 = (await http.post("/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 3})).json()
    assert [r["index"] for r in v1["results"]] == order[:2]
    assert v1["results"][0]["document"]["text"] == DOCUMENTS[order[0]] and v1["usage"]["total_tokens"] > len(DOCUMENTS)
    assert [r["index"] for r in tei] == order
    assert [r["score"] for r in tei] == pytest.approx([logits[i] for i in order], abs=1e-4)
    assert [r["index"] for r in v2["results"]] == order[:3] and v2["meta"]["warnings"] == []
    assert v2["results"][0]["relevance_score"] == pytest.approx(1 / (1 + np.exp(-logits[order[0]])), abs=1e-4)


@pytest.mark.parametrize("path, body, fragment", [
    ("/rerank", {"query": QUERY, "documents": []}, "must not be empty"),
    ("/rerank", {"query": QUERY, "texts": []}, "must not be empty"),
    ("/rerank", {"query": "   ", "documents": ["a"]}, "query must not be empty"),
    ("/rerank", {"query": QUERY, "documents": ["a", 5]}, "valid string"),
    ("/rerank", {"query": QUERY}, "exactly one of"),
    ("/rerank", {"query": QUERY, "documents": ["a"], "texts": ["a"]}, "exactly one of"),
    ("/rerank", {"query": 7, "documents": ["a"]}, "valid string"),
    ("/rerank", {"query": QUERY, "documents": "not a list"}, "valid list"),
    ("/rerank", {"query": QUERY, "documents": ["a"], "top_n": "three"}, "valid integer"),
    ("/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, "greater than or equal to 1"),
    ("/rerank", {"query": QUERY, "documents": ["x"] * 11}, "too many documents"),
    ("/rerank", ["not", "an", "object"], "exactly one of"),
    ("/v2/rerank", {"query": QUERY, "documents": [3]}, "valid string"),
    ("/v2/rerank", {"query": "", "documents": ["a"]}, "query must not be empty"),
    ("/recommend", {"history": []}, "at least 1 item"),
    ("/recommend", {"history": [1], "top_n": 0}, "greater than or equal to 1"),
])
@pytest.mark.anyio
async def test_bad_input_gets_422_with_a_detail(path, body, fragment):
    async with client(max_documents=10) as (_, http):
        response = await http.post(path, json=body)
        assert response.status_code == 422
        assert fragment in str(response.json()["detail"])
        assert (await http.post("/rerank", json={"query": QUERY, "documents": ["drill"]})).status_code == 200


@pytest.mark.anyio
async def test_malformed_json_and_unknown_model():
    async with client() as (_, http):
        response = await http.post("/rerank", content=b'{"query": "x", "documents": [',
                                   headers={"content-type": "application/json"})
        assert response.status_code == 422 and "JSON" in str(response.json()["detail"])
        response = await http.post("/recommend", json={"history": [1], "model": "nope"})
        assert response.status_code == 404 and "nope" in response.json()["detail"]


@pytest.mark.anyio
async def test_client_default_model_names_get_the_default_model_aliases_and_strict_mode():
    default = load_model(MODEL_REPO).name
    body = {"query": QUERY, "documents": DOCUMENTS}
    async with client(model_alias=[f"rerank-english-v3.0={default}-int8"]) as (_, http):
        assert (await http.post("/rerank", json={**body, "model": "rerank-v3.5"})).json()["model"] == default
        assert (await http.post("/rerank", json={**body, "model": "rerank-english-v3.0"})).json()["model"] == f"{default}-int8"
        assert (await http.post("/v1/rerank", json={**body, "model": f"{default}-int8"})).json()["model"] == f"{default}-int8"
    async with client(strict_models=True) as (_, http):
        response = await http.post("/v2/rerank", json={**body, "model": "rerank-v3.5"})
        assert response.status_code == 404 and "rerank-v3.5" in response.json()["detail"]


@pytest.mark.anyio
async def test_truncation_is_counted_in_the_header_and_cohere_v2_warnings():
    long_document = "cordless drill with battery " * 200
    async with client() as (_, http):
        v1 = await http.post("/rerank", json={"query": QUERY, "documents": [long_document, "drill"]})
        v2 = await http.post("/v2/rerank", json={"query": QUERY, "documents": [long_document, "drill"]})
    assert v1.headers["x-truncated-documents"] == "1" and v2.headers["x-truncated-documents"] == "1"
    assert "1 documents were truncated to 64 tokens" in v2.json()["meta"]["warnings"][0]
    scores = {r["index"]: r["relevance_score"] for r in v1.json()["results"]}
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-expected_logits(QUERY, [long_document])[0])), abs=1e-4)


@pytest.mark.anyio
async def test_concurrent_requests_share_model_runs_and_metrics_count_them():
    requests = [(f"{QUERY} {i}", DOCUMENTS * 5) for i in range(16)]
    async with client() as (app, http):
        responses = await asyncio.gather(*(http.post("/rerank", json={"query": q, "texts": d, "raw_scores": True})
                                           for q, d in requests))
        registry = app.state.runtime.metrics.registry
        model = load_model(MODEL_REPO).name
        merged = registry.get_sample_value("rankstill_batch_requests_sum", {"model": model})
        runs = registry.get_sample_value("rankstill_batch_requests_count", {"model": model})
        pairs = registry.get_sample_value("rankstill_batch_pairs_sum", {"model": model})
        ok = registry.get_sample_value("rankstill_requests_total", {"route": "/rerank", "status": "200"})
    for (query, documents), response in zip(requests, responses):
        got = {r["index"]: r["score"] for r in response.json()}
        assert [got[i] for i in range(len(documents))] == pytest.approx(list(expected_logits(query, documents)), abs=1e-4)
    warm_up = 1  # the lifespan's warm-up run goes through the scorer, not the batcher
    assert merged == len(requests) and pairs == sum(len(d) for _, d in requests) and ok == len(requests)
    assert runs < len(requests) + warm_up


@pytest.mark.anyio
async def test_service_ranks_through_the_batcher_and_checks_limits():
    settings = load_settings(model_repo=MODEL_REPO, max_documents=3, strict_models=True)
    service = RerankService(settings, ServerMetrics())
    service.load()
    service.start()
    try:
        ranking = await service.rank(RerankQuery(QUERY, DOCUMENTS[:3]))
        assert ranking.model == service.default_model and ranking.truncated == 0
        np.testing.assert_allclose(ranking.logits, expected_logits(QUERY, DOCUMENTS[:3]), atol=1e-4)
        assert list(ranking.order()) == list(np.argsort(-ranking.logits))
        with pytest.raises(RequestError, match="too many documents"):
            await service.rank(RerankQuery(QUERY, DOCUMENTS))
        with pytest.raises(RequestError, match="unknown model"):
            await service.rank(RerankQuery(QUERY, DOCUMENTS[:1], model="missing"))
    finally:
        await service.stop()


@pytest.mark.anyio
async def test_info_readiness_and_openapi_describe_what_is_served():
    async with client() as (_, http):
        info = (await http.get("/info")).json()
        ready = (await http.get("/readyz")).json()
        paths = (await http.get("/openapi.json")).json()["paths"]
        off = await http.get("/shadow/summary")
    assert ready["status"] == "ready" and set(ready["models"]) == set(info["models"])
    assert info["default_model"] == load_model(MODEL_REPO).name and info["max_documents"] == 1000
    assert info["models"][info["default_model"]]["max_length"] == load_model(MODEL_REPO).max_length
    assert {"/rerank", "/v2/rerank", "/recommend", "/metrics"} <= set(paths)
    assert off.status_code == 404 and "shadow scoring is off" in off.json()["detail"]
