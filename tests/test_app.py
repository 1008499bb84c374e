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

from conftest import FP32_MODEL, INT8_MODEL, MODEL_REPO

QUERY = "cordless drill"
DOCUMENTS = ["DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit", "Delta Bathroom Faucet in Chrome",
             "Milwaukee M18 Cordless Hammer Drill (Tool Only)", "1/2 in. Drill Bit Set (15-Piece)"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@contextlib.asynccontextmanager
async def client(**settings):
    app = create_app(load_settings(**{"model_repo": MODEL_REPO, "model": FP32_MODEL, **settings}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            yield app, http


def expected_logits(query: str, documents: list[str], model: str | None = None) -> np.ndarray:
    return PairScorer.for_entry(load_model(MODEL_REPO, model or FP32_MODEL)).score([query] * len(documents), documents)


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
    default = FP32_MODEL
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
        model = FP32_MODEL
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
    settings = load_settings(model_repo=MODEL_REPO, model=FP32_MODEL, max_documents=3, strict_models=True)
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
    async with client(model=None) as (_, http):  # the repository's own default
        info = (await http.get("/info")).json()
        ready = (await http.get("/readyz")).json()
        paths = (await http.get("/openapi.json")).json()["paths"]
        off = await http.get("/shadow/summary")
    assert ready["status"] == "ready" and set(ready["models"]) == set(info["models"])
    assert info["default_model"] == load_model(MODEL_REPO).name == INT8_MODEL and info["max_documents"] == 1000
    assert info["models"][INT8_MODEL]["variant"] == "int8" and info["models"][FP32_MODEL]["variant"] == "fp32"
    assert info["models"][INT8_MODEL]["max_length"] == load_model(MODEL_REPO).max_length
    assert {"/rerank", "/v2/rerank", "/recommend", "/metrics"} <= set(paths)
    assert off.status_code == 404 and "shadow scoring is off" in off.json()["detail"]


@pytest.mark.anyio
async def test_chunking_finds_what_truncation_cuts_off():
    """The relevant words lie past the model's window in one document: truncating misses them, chunking finds them."""
    filler = "assorted hardware store inventory notes " * 40  # far more than 64 tokens
    buried = filler + "DEWALT 20V cordless drill kit with battery"
    plain = filler + "bathroom faucet chrome finish"
    body = {"query": QUERY, "documents": [plain, buried]}
    async with client() as (_, http):
        truncated = (await http.post("/rerank", json={**body, "return_documents": False})).json()
        chunked_response = await http.post("/rerank", json={**body, "long_documents": "chunk", "return_documents": False})
    chunked = chunked_response.json()
    cut = {r["index"]: r["relevance_score"] for r in truncated["results"]}
    assert cut[0] == pytest.approx(cut[1], abs=1e-6)  # the same first 64 tokens: the model cannot tell them apart
    assert chunked["results"][0]["index"] == 1  # the drill, found in a later window
    scores = {r["index"]: r["relevance_score"] for r in chunked["results"]}
    scorer = PairScorer.for_entry(load_model(MODEL_REPO, FP32_MODEL))
    last_window = scorer.run(scorer.tokenize([QUERY], [buried], cut_left=True))[0]  # the document's last tokens
    assert scores[1] > scores[0] + 0.05
    assert scores[1] >= 1 / (1 + np.exp(-last_window)) - 1e-6  # the best window's score, the last one among them
    assert chunked_response.headers["x-truncated-documents"] == "0"
    assert chunked["usage"]["prompt_tokens"] > 2 * truncated["usage"]["prompt_tokens"]  # several windows each


@pytest.mark.anyio
async def test_chunking_is_the_server_default_when_configured():
    document = "notes " * 200 + "cordless drill"
    async with client(long_documents="chunk", chunk_overlap=8) as (_, http):
        response = await http.post("/rerank", json={"query": QUERY, "texts": [document, "faucet"], "raw_scores": True})
    assert response.headers["x-truncated-documents"] == "0"
    assert [r["index"] for r in response.json()] == [0, 1]


@pytest.mark.anyio
async def test_tei_truncate_false_and_truncation_direction():
    long_text = "cordless drill " + "filler words here " * 60 + "bathroom faucet"
    async with client() as (_, http):
        refused = await http.post("/rerank", json={"query": QUERY, "texts": [long_text, "drill"], "truncate": False})
        right = (await http.post("/rerank", json={"query": QUERY, "texts": [long_text], "raw_scores": True})).json()
        left = (await http.post("/rerank", json={"query": QUERY, "texts": [long_text], "raw_scores": True,
                                                 "truncation_direction": "Left"})).json()
        ignored_model = await http.post("/rerank", json={"query": QUERY, "texts": ["drill"], "model": "BAAI/bge-reranker-base"})
    assert refused.status_code == 413 and "[0]" in refused.json()["detail"]
    assert right[0]["score"] == pytest.approx(expected_logits(QUERY, ["cordless drill " + "filler words here " * 20])[0], abs=0.05)
    assert left[0]["score"] != pytest.approx(right[0]["score"], abs=1e-3)  # the end of the text was kept instead
    assert ignored_model.status_code == 200


@pytest.mark.anyio
async def test_cohere_v2_max_tokens_per_doc_cuts_each_document_first():
    document = "cordless drill " + "bathroom faucet " * 8  # fits the window whole
    async with client() as (_, http):
        cut = (await http.post("/v2/rerank", json={"query": QUERY, "documents": [document], "max_tokens_per_doc": 3})).json()
        whole = (await http.post("/v2/rerank", json={"query": QUERY, "documents": [document]})).json()
    three_tokens = 1 / (1 + np.exp(-expected_logits(QUERY, ["cordless drill"])[0]))  # "cordless drill" is 3 word pieces
    assert cut["results"][0]["relevance_score"] == pytest.approx(three_tokens, abs=1e-4)
    assert whole["results"][0]["relevance_score"] != pytest.approx(three_tokens, abs=1e-3)
    assert cut["meta"]["warnings"] and not whole["meta"]["warnings"]


@pytest.mark.anyio
async def test_text_that_is_not_unicode_fails_only_its_own_request():
    async with client() as (_, http):
        good = [http.post("/rerank", json={"query": f"{QUERY} {i}", "documents": DOCUMENTS}) for i in range(6)]
        bad = http.post("/rerank", content=b'{"query": "drill", "documents": ["a\\ud800b", "ok"]}',
                        headers={"content-type": "application/json"})
        responses = await asyncio.gather(*good[:3], bad, *good[3:])
    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200, 200]
    assert "Unicode" in str(responses[3].json()["detail"])


@pytest.mark.anyio
async def test_size_limits_answer_413_and_422_with_a_detail():
    async with client(max_body_bytes=2000, max_document_chars=500, max_request_tokens=300) as (_, http):
        declared = await http.post("/rerank", json={"query": QUERY, "documents": ["x" * 3000]})
        chars = await http.post("/rerank", json={"query": QUERY, "documents": ["ok", "y" * 600]})
        tokens = await http.post("/rerank", json={"query": QUERY, "documents": ["cordless drill kit"] * 60})

        async def chunks():  # no Content-Length: the limit is counted while the body arrives
            for _ in range(10):
                yield b" " * 500
        streamed = await http.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
        fine = await http.post("/rerank", json={"query": QUERY, "documents": ["drill"]})
    assert declared.status_code == 413 and "2000 bytes" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert chars.status_code == 422 and "documents [1]" in chars.json()["detail"]
    assert tokens.status_code == 422 and "tokens" in tokens.json()["detail"]
    assert fine.status_code == 200


@pytest.mark.anyio
async def test_api_keys_guard_every_route_but_the_probes():
    async with client(api_key=["key-one", "key-two"]) as (_, http):
        body = {"query": QUERY, "documents": ["drill"]}
        assert (await http.get("/healthz")).status_code == 200 and (await http.get("/readyz")).status_code == 200
        for method, path in (("post", "/rerank"), ("get", "/metrics"), ("get", "/docs"), ("get", "/info"),
                             ("get", "/openapi.json"), ("post", "/admin/reload")):
            refused = await http.request(method.upper(), path, json=body if method == "post" else None)
            assert refused.status_code == 401 and "Bearer" in refused.json()["detail"], path
            assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await http.post("/rerank", json=body, headers={"Authorization": "Bearer key-three"})
        right = await http.post("/rerank", json=body, headers={"Authorization": "Bearer key-two"})
    assert wrong.status_code == 401 and right.status_code == 200


@pytest.mark.anyio
async def test_overload_by_expected_wait_gets_503_with_retry_after_and_accepted_work_is_answered():
    async with client(max_queue_ms=1) as (app, http):
        await http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS * 25})  # measures seconds per pair
        responses = await asyncio.gather(*(http.post("/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS * 25})
                                           for i in range(12)))
    codes = [r.status_code for r in responses]
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1 and "retry after" in response.json()["detail"]
        else:
            assert len(response.json()) == len(DOCUMENTS) * 25


def copy_repo(tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(MODEL_REPO, repo)
    return repo


@pytest.mark.anyio
async def test_reload_swaps_in_a_new_version_only_after_it_loads_and_refuses_a_broken_one(tmp_path):
    import shutil

    repo = copy_repo(tmp_path)
    name = FP32_MODEL
    async with client(model_repo=repo, reload_interval=0) as (_, http):
        before = (await http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})).json()
        (repo / name / "2").mkdir()
        (repo / name / "2" / "model.onnx").write_bytes(b"half-copied")
        refused = (await http.post("/admin/reload")).json()
        assert refused["loaded"] == {} and refused["models"][name] == 1
        assert any("version 2" in key for key in refused["refused"])
        still = (await http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})).json()
        assert still == before
        # The int8 file as version 3 of the fp32 model: a different model, so different scores.
        (repo / name / "3").mkdir()
        shutil.copyfile(MODEL_REPO / f"{name}-int8" / "1" / "model.onnx", repo / name / "3" / "model.onnx")
        loaded = (await http.post("/admin/reload")).json()
        after = (await http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})).json()
        info = (await http.get("/info")).json()
    assert loaded["loaded"] == {name: 3} and info["models"][name]["version"] == 3
    int8 = expected_logits(QUERY, DOCUMENTS, INT8_MODEL)
    assert sorted(r["score"] for r in after) == pytest.approx(sorted(int8), abs=5e-3)
    assert sorted(r["score"] for r in after) != pytest.approx(sorted(r["score"] for r in before), abs=1e-4)


def test_a_half_copied_newest_version_does_not_stop_the_server_from_starting(tmp_path):
    repo = copy_repo(tmp_path)
    name = FP32_MODEL
    (repo / name / "2").mkdir()
    (repo / name / "2" / "model.onnx").write_bytes(b"half-copied")
    service = RerankService(load_settings(model_repo=repo), ServerMetrics())
    service.load()
    assert service.models[name].entry.version == 1 and f"{name} version 2" in service.refused
