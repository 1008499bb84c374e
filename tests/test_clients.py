"""Real rerank clients, configured as their users configure them, against a real `rankstill serve`.

Each client is pointed at the test server's base URL and otherwise left on its defaults: no model
name is changed where the client has a default (the Cohere v1 SDK, LlamaIndex's and Haystack's TEI
rankers send none); where the client requires one (Cohere v2, LangChain) it gets Cohere's own
`rerank-v3.5`, as a user copying Cohere's docs would write, which the server answers with its
default model. What each client returns is checked against what the server's own TEI shape
(`raw_scores`) says for the same pairs over plain httpx, and the route each client called is read
from the server's request counter (`/metrics`).

Clients (see `../shared/CLIENTS.md`): `cohere.Client` (POST /v1/rerank), `cohere.ClientV2`
(POST /v2/rerank), `langchain_cohere.CohereRerank` (cohere.ClientV2 underneath), LlamaIndex's
`TextEmbeddingInference` (POST /rerank, TEI) and Haystack's `HuggingFaceTEIRanker` (POST /rerank,
TEI; in `huggingface-api-haystack` since Haystack 3).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter

import cohere
import httpx
import pytest
from haystack import Document as HaystackDocument
from haystack.utils import Secret
from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker
from haystack_integrations.components.rankers.huggingface_api.ranker import TruncationDirection
from langchain_cohere import CohereRerank
from langchain_core.documents import Document as LangChainDocument
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

from conftest import FP32_MODEL, MODEL_REPO, running_server

QUERY = "cordless drill"
# In an order the model does not keep: a client that ignored `index` would pair the wrong scores.
DOCUMENTS = ["Delta Bathroom Faucet in Chrome", "DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit",
             "Behr Premium Plus White Interior Paint", "1/2 in. Drill Bit Set (15-Piece)",
             "Milwaukee M18 Cordless Hammer Drill (Tool Only)"]
COHERE_MODEL = "rerank-v3.5"  # what Cohere's docs tell users to write; the server does not hold it
DUMMY_KEY = "not-needed"  # the Cohere SDK refuses to start without a key; this server has none
API_KEY = "s3cret-test-key"
SCORE_TOLERANCE = 1e-5  # the same server and model; only what a request is batched with differs


@pytest.fixture(scope="module")
def server():
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server():
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL, "--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def default_model(server):
    return httpx.get(f"{server}/info").json()["default_model"]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reference(server: str, query: str = QUERY, documents: list[str] = DOCUMENTS, headers=None, **options):
    """The server's own answer over plain httpx (TEI shape, raw logits): (order best first, logit per index)."""
    response = httpx.post(f"{server}/rerank", json={"query": query, "texts": documents, "raw_scores": True, **options},
                          headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert sorted(r["index"] for r in answer) == list(range(len(documents)))
    logits = {r["index"]: r["score"] for r in answer}
    return [r["index"] for r in answer], logits


def route_counts(server: str, headers=None) -> Counter:
    text = httpx.get(f"{server}/metrics", headers=headers).text
    return Counter({(route, status): float(value) for route, status, value in
                    re.findall(r'^rankstill_requests_total\{route="([^"]*)",status="([^"]*)"\} (\S+)$', text, re.M)
                    if route != "/metrics"})


@contextlib.contextmanager
def calls(server: str, headers=None):
    """Yields a Counter filled, on exit, with the (route, status) of each request the server got meanwhile."""
    seen = Counter()
    before = route_counts(server, headers)
    yield seen
    seen.update({k: int(v) for k, v in (route_counts(server, headers) - before).items()})


def test_reference_order_is_not_the_input_order(server):
    order, logits = reference(server)
    assert order != list(range(len(DOCUMENTS)))
    assert sorted(logits.values(), reverse=True) == [logits[i] for i in order]
    assert len(set(logits.values())) == len(DOCUMENTS)  # no ties: the order is well defined


def test_cohere_v1_sdk_on_its_defaults(server, default_model):
    client = cohere.Client(api_key=DUMMY_KEY, base_url=server)
    order, logits = reference(server)
    with calls(server) as seen:
        response = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=3)  # no model: the SDK sends none
    assert seen == {("/v1/rerank", "200"): 1}
    assert [r.index for r in response.results] == order[:3]
    for result in response.results:
        assert result.relevance_score == pytest.approx(sigmoid(logits[result.index]), abs=SCORE_TOLERANCE)
    assert response.model == default_model  # Jina-style field, kept by the SDK's lenient models


def test_cohere_v1_sdk_return_documents_and_document_objects(server):
    client = cohere.Client(api_key=DUMMY_KEY, base_url=server)
    order, logits = reference(server)
    with_text = client.rerank(query=QUERY, documents=[{"text": d} for d in DOCUMENTS], return_documents=True,
                              max_chunks_per_doc=10)
    assert [r.index for r in with_text.results] == order  # no top_n: every document
    assert [r.document.text for r in with_text.results] == [DOCUMENTS[i] for i in order]
    for result in with_text.results:
        assert result.relevance_score == pytest.approx(sigmoid(logits[result.index]), abs=SCORE_TOLERANCE)
    without = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=2, return_documents=False)
    assert [r.index for r in without.results] == order[:2]
    assert all(r.document is None for r in without.results)


def test_cohere_v2_sdk(server):
    client = cohere.ClientV2(api_key=DUMMY_KEY, base_url=server)
    order, logits = reference(server)
    with calls(server) as seen:
        response = client.rerank(model=COHERE_MODEL, query=QUERY, documents=DOCUMENTS, top_n=3)
    assert seen == {("/v2/rerank", "200"): 1}
    assert [r.index for r in response.results] == order[:3]
    for result in response.results:
        assert result.relevance_score == pytest.approx(sigmoid(logits[result.index]), abs=SCORE_TOLERANCE)
    assert response.id and response.meta.api_version.version == "2"
    everything = client.rerank(model=COHERE_MODEL, query=QUERY, documents=DOCUMENTS)
    assert [r.index for r in everything.results] == order


def test_cohere_v2_sdk_max_tokens_per_doc(server):
    """Haystack's Cohere ranker sends 4096 (no cut here); a small value cuts each document to its first tokens."""
    client = cohere.ClientV2(api_key=DUMMY_KEY, base_url=server)
    long_documents = [d + " with accessories" * 40 for d in DOCUMENTS]
    order, logits = reference(server, documents=long_documents)  # each pair cut to the model's window
    response = client.rerank(model=COHERE_MODEL, query=QUERY, documents=long_documents, max_tokens_per_doc=4096)
    assert [r.index for r in response.results] == order
    for result in response.results:
        assert result.relevance_score == pytest.approx(sigmoid(logits[result.index]), abs=SCORE_TOLERANCE)
    cut = client.rerank(model=COHERE_MODEL, query=QUERY, documents=long_documents, max_tokens_per_doc=3)
    assert sorted(r.index for r in cut.results) == list(range(len(DOCUMENTS)))
    assert max(abs(r.relevance_score - sigmoid(logits[r.index])) for r in cut.results) > 1e-3


def test_langchain_cohere_rerank(server):
    # The base URL is one of CohereRerank's own fields (it builds a cohere.ClientV2 with it).
    reranker = CohereRerank(base_url=server, cohere_api_key=DUMMY_KEY, model=COHERE_MODEL)
    order, logits = reference(server)
    documents = [LangChainDocument(page_content=d, metadata={"position": i}) for i, d in enumerate(DOCUMENTS)]
    with calls(server) as seen:
        compressed = reranker.compress_documents(documents, QUERY)  # top_n defaults to 3
    assert seen == {("/v2/rerank", "200"): 1}
    assert [d.metadata["position"] for d in compressed] == order[:3]
    assert [d.page_content for d in compressed] == [DOCUMENTS[i] for i in order[:3]]
    for document in compressed:
        expected = sigmoid(logits[document.metadata["position"]])
        assert document.metadata["relevance_score"] == pytest.approx(expected, abs=SCORE_TOLERANCE)
    ranked = reranker.rerank(DOCUMENTS, QUERY, top_n=None)  # LangChain sends max_tokens_per_doc: null
    assert [r["index"] for r in ranked] == order


def test_langchain_cohere_rerank_with_a_client_of_ones_own(server):
    reranker = CohereRerank(client=cohere.ClientV2(api_key=DUMMY_KEY, base_url=server), model=COHERE_MODEL, top_n=2)
    order, _ = reference(server)
    compressed = reranker.compress_documents([LangChainDocument(page_content=d) for d in DOCUMENTS], QUERY)
    assert [d.page_content for d in compressed] == [DOCUMENTS[i] for i in order[:2]]


def test_llama_index_tei_reranker(server):
    reranker = TextEmbeddingInference(base_url=server)  # top_n 5, model_name "API" (not sent)
    order, logits = reference(server)
    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}"), score=0.0) for i, d in enumerate(DOCUMENTS[::-1])]
    nodes_in_order = DOCUMENTS[::-1]
    with calls(server) as seen:
        ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert seen == {("/rerank", "200"): 1}
    assert [n.node.text for n in ranked] == [DOCUMENTS[i] for i in order]
    for node in ranked:
        expected = sigmoid(logits[DOCUMENTS.index(node.node.text)])  # TEI's default: sigmoid scores
        assert node.score == pytest.approx(expected, abs=SCORE_TOLERANCE)
    assert nodes_in_order == [n.node.text for n in nodes]  # untouched order of the caller's list
    assert [n.node.text for n in TextEmbeddingInference(base_url=server, top_n=2).postprocess_nodes(
        nodes, query_str=QUERY)] == [DOCUMENTS[i] for i in order[:2]]


def test_haystack_tei_ranker(server, monkeypatch):
    for variable in ("HF_API_TOKEN", "HF_TOKEN"):  # its default token comes from these: none here
        monkeypatch.delenv(variable, raising=False)
    ranker = HuggingFaceTEIRanker(url=server)  # top_k 10, raw_scores False
    order, logits = reference(server)
    documents = [HaystackDocument(content=d) for d in DOCUMENTS]
    with calls(server) as seen:
        ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    assert seen == {("/rerank", "200"): 1}
    assert [d.content for d in ranked] == [DOCUMENTS[i] for i in order]
    for document in ranked:
        assert document.score == pytest.approx(sigmoid(logits[DOCUMENTS.index(document.content)]), abs=SCORE_TOLERANCE)
    raw = HuggingFaceTEIRanker(url=server, top_k=2, raw_scores=True).run(query=QUERY, documents=documents)["documents"]
    assert [d.content for d in raw] == [DOCUMENTS[i] for i in order[:2]]
    for document in raw:
        assert document.score == pytest.approx(logits[DOCUMENTS.index(document.content)], abs=SCORE_TOLERANCE)


def test_haystack_tei_ranker_truncation_direction(server):
    """Haystack sends `truncate: true, truncation_direction: Left` when asked: the end of a long text is kept."""
    filler = "garden hose nozzle with brass fittings " * 20
    documents = [filler + "cordless drill driver kit", filler + "bathroom faucet chrome", "cordless drill"]
    ranker = HuggingFaceTEIRanker(url=server, raw_scores=True, token=None)
    _, left = reference(server, documents=documents, truncate=True, truncation_direction="Left")
    _, right = reference(server, documents=documents)
    assert abs(left[0] - right[0]) > 1e-3  # the server honours the direction
    ranked = ranker.run(query=QUERY, documents=[HaystackDocument(content=d) for d in documents],
                        truncation_direction=TruncationDirection.LEFT)["documents"]
    assert [d.content for d in ranked] == sorted(documents, key=lambda d: -left[documents.index(d)])
    for document in ranked:
        assert document.score == pytest.approx(left[documents.index(document.content)], abs=SCORE_TOLERANCE)


def test_clients_surface_the_servers_detail(server):
    """A request the server refuses (more documents than --max-documents) reaches the user with its `detail`."""
    too_many = ["drill"] * 1001
    with pytest.raises(cohere.UnprocessableEntityError) as refused:
        cohere.ClientV2(api_key=DUMMY_KEY, base_url=server).rerank(model=COHERE_MODEL, query=QUERY, documents=too_many)
    assert "too many documents" in str(refused.value.body["detail"])
    with pytest.raises(cohere.UnprocessableEntityError) as refused_v1:
        cohere.Client(api_key=DUMMY_KEY, base_url=server).rerank(query=QUERY, documents=too_many)
    assert "too many documents" in str(refused_v1.value.body["detail"])
    with pytest.raises(RuntimeError, match="too many documents"):
        HuggingFaceTEIRanker(url=server, token=None).run(
            query=QUERY, documents=[HaystackDocument(content=f"drill {i}") for i in range(1001)])


# With --api-key: each client given the key the way its docs say.

def keyed_clients(url: str, key: str):
    return {
        "cohere v1": lambda: [r.index for r in cohere.Client(api_key=key, base_url=url).rerank(
            query=QUERY, documents=DOCUMENTS).results],
        "cohere v2": lambda: [r.index for r in cohere.ClientV2(api_key=key, base_url=url).rerank(
            model=COHERE_MODEL, query=QUERY, documents=DOCUMENTS).results],
        "langchain": lambda: [r["index"] for r in CohereRerank(
            base_url=url, cohere_api_key=key, model=COHERE_MODEL).rerank(DOCUMENTS, QUERY, top_n=None)],
        # LlamaIndex sends auth_token as the whole Authorization header.
        "llama-index": lambda: [DOCUMENTS.index(n.node.text) for n in TextEmbeddingInference(
            base_url=url, auth_token=f"Bearer {key}").postprocess_nodes(
            [NodeWithScore(node=TextNode(text=d)) for d in DOCUMENTS], query_str=QUERY)],
        "haystack": lambda: [DOCUMENTS.index(d.content) for d in HuggingFaceTEIRanker(
            url=url, token=Secret.from_token(key), max_retries=1).run(
            query=QUERY, documents=[HaystackDocument(content=d) for d in DOCUMENTS])["documents"]],
    }


@pytest.mark.parametrize("client", list(keyed_clients("", "")))
def test_clients_with_an_api_key(keyed_server, client):
    order, _ = reference(keyed_server, headers={"Authorization": f"Bearer {API_KEY}"})
    assert keyed_clients(keyed_server, API_KEY)[client]() == order
    refused = {"cohere v1": cohere.UnauthorizedError, "cohere v2": cohere.UnauthorizedError,
               "langchain": cohere.UnauthorizedError, "haystack": RuntimeError,
               # LlamaIndex never checks the status: it fails on the error body (a dict, not a list).
               "llama-index": (AssertionError, TypeError, KeyError)}[client]
    with pytest.raises(refused):
        keyed_clients(keyed_server, "wrong-key")[client]()
