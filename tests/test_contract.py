"""The server's contract with the outside, against a real `rankstill serve` on 127.0.0.1:

(a) schemathesis, with all its checks, against the server's own /openapi.json;
(b) a corpus of malformed requests: each is answered with a 4xx whose JSON body has `detail`, the
    server stays alive after each, and good requests sent between them (and alongside them, all
    at once) are still answered correctly;
(c) every status code and content type a documented operation answered during (a) and (b), and
    while its backend is down or silent, is in /openapi.json for that operation.
"""

from __future__ import annotations

import json
import math
import random
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
import pytest

from conftest import FP32_MODEL, MODEL_REPO, running_server
from rankstill.local_server import free_port

QUERY = "cordless drill"
DOCUMENTS = ["Delta Bathroom Faucet in Chrome", "DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit",
             "Behr Premium Plus White Interior Paint", "Milwaukee M18 Cordless Hammer Drill (Tool Only)"]
HISTORY = [50, 172, 181]  # MovieLens ids the committed recommender knows
API_KEY = "contract-test-key"
REQUEST_TIMEOUT_S = 2  # the server's --request-timeout: a body that never completes is cut off after this
JSON = {"content-type": "application/json"}
SCORE_TOLERANCE = 1e-5  # good requests are compared with themselves on the fp32 student (see conftest)

# schemathesis: bounded so that the run takes well under a minute on two slow cores.
SCHEMATHESIS_EXAMPLES = 200
SCHEMATHESIS_SEED = 1


# Servers

@pytest.fixture(scope="module")
def server():
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL,
                        "--request-timeout", str(REQUEST_TIMEOUT_S)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server():
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL, "--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def openapi(server):
    response = httpx.get(f"{server}/openapi.json")
    assert response.status_code == 200
    return response.json()


# Good requests, with the answers the server gave them before any bad request was sent

@dataclass
class Good:
    url: str
    headers: dict
    logits: dict[int, float]  # TEI raw scores per document index
    order: list[int]
    recommended: list[dict]

    @classmethod
    def of(cls, url: str, headers: dict | None = None) -> "Good":
        headers = headers or {}
        tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True},
                         headers=headers, timeout=30)
        assert tei.status_code == 200, tei.text
        recommend = httpx.post(f"{url}/recommend", json={"history": HISTORY}, headers=headers, timeout=30)
        assert recommend.status_code == 200, recommend.text
        return cls(url, headers, {r["index"]: r["score"] for r in tei.json()}, [r["index"] for r in tei.json()],
                   recommend.json()["results"])

    def check(self, kind: int, client: httpx.Client | None = None) -> None:
        """Send good request number `kind` (0-3) and assert it is answered as before."""
        post = (client or httpx).post
        if kind == 0:
            response = post(f"{self.url}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True},
                            headers=self.headers, timeout=30)
            assert response.status_code == 200, response.text
            assert [r["index"] for r in response.json()] == self.order
            for result in response.json():
                assert result["score"] == pytest.approx(self.logits[result["index"]], abs=SCORE_TOLERANCE)
        elif kind in (1, 2):
            path, extra = ("/v1/rerank", {"top_n": 2}) if kind == 1 else ("/v2/rerank", {"model": "rerank-v3.5"})
            response = post(f"{self.url}{path}", json={"query": QUERY, "documents": DOCUMENTS, **extra},
                            headers=self.headers, timeout=30)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["index"] for r in results] == self.order[: len(results)]
            for result in results:
                expected = 1 / (1 + math.exp(-self.logits[result["index"]]))
                assert result["relevance_score"] == pytest.approx(expected, abs=SCORE_TOLERANCE)
        else:
            response = post(f"{self.url}/recommend", json={"history": HISTORY}, headers=self.headers, timeout=30)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["id"] for r in results] == [r["id"] for r in self.recommended]
            assert [r["score"] for r in results] == pytest.approx([r["score"] for r in self.recommended], abs=1e-5)


@pytest.fixture(scope="module")
def good(server):
    return Good.of(server)


@pytest.fixture(scope="module")
def keyed_good(keyed_server):
    return Good.of(keyed_server, {"Authorization": f"Bearer {API_KEY}"})


# The corpus of malformed requests

LAX = ("the server coerces a value of the wrong JSON type (pydantic's lax mode) and answers 200; the schema "
       "says otherwise, so schemathesis' negative_data_rejection check fails too (ST201). Fix: strict types")
TRANSPORT = ("answered by the HTTP layer with no JSON `detail` (uvicorn's text/plain 'Invalid HTTP request received.' "
             "or the request deadline's empty 408), a status /openapi.json does not list")


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict = field(default_factory=lambda: dict(JSON))
    status: int | None = None  # the exact status expected; otherwise any 4xx
    on: str = "main"  # "keyed": the server started with --api-key
    raw: bytes | None = None  # bytes sent as they are on a socket instead of an HTTP request
    xfail: str | None = None  # a server problem: the reason, until the server is fixed

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.id, marks=marks)


def dumps(value) -> bytes:
    return json.dumps(value).encode()  # ASCII with \\uXXXX escapes, lone surrogates included


def corpus() -> list[Bad]:
    cases: list[Bad] = []

    def add(*args, **kwargs):
        cases.append(Bad(*args, **kwargs))

    # Every rerank dialect on every path that speaks it: (label, path, list field, valid body).
    dialects = [
        ("jina", "/rerank", "documents", {"query": QUERY, "documents": DOCUMENTS}),
        ("jina-v1", "/v1/rerank", "documents", {"query": QUERY, "documents": DOCUMENTS}),
        ("tei", "/rerank", "texts", {"query": QUERY, "texts": DOCUMENTS}),
        ("cohere-v2", "/v2/rerank", "documents", {"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS}),
    ]
    for label, path, items, body in dialects:
        def variant(name, status=None, xfail=None, **changes):
            changed = {**body, **changes}
            add(f"{label}-{name}", "POST", path, dumps({k: v for k, v in changed.items() if v is not DROP}),
                status=status, xfail=xfail)

        variant("no-query", 422, query=DROP)
        variant(f"no-{items}", 422, **{items: DROP})
        variant("query-null", 422, query=None)
        variant("query-int", 422, query=5)
        variant("query-list", 422, query=[QUERY])
        variant("query-empty", 422, query="")
        variant("query-blank", 422, query=" \t\n ")
        variant("query-lone-surrogate", 422, query="a\ud800b")
        variant(f"{items}-empty", 422, **{items: []})
        variant(f"{items}-a-string", 422, **{items: "drill"})
        variant(f"{items}-int-item", 422, **{items: ["drill", 7]})
        variant(f"{items}-null-item", 422, **{items: ["drill", None]})
        variant(f"{items}-lone-low-surrogate", 422, **{items: ["drill", "a\udfffb"]})
        variant(f"{items}-trailing-high-surrogate", 422, **{items: ["drill\udbff"]})
        variant(f"{items}-1001", 422, **{items: ["drill"] * 1001})
        variant("query-100001-chars", 422, query="d" * 100_001)
        variant(f"{items}-100001-chars", 422, **{items: ["drill", "d" * 100_001]})
        variant("model-int", 422, model=5)
        variant("long-documents-unknown", 422, long_documents="summarize")
        variant("nested-garbage", 422, query={"a": {"b": [1, {"c": None}]}}, **{items: [[{"x": [[]]}], {"y": {}}]})
        if label != "tei":
            variant("top-n-zero", 422, top_n=0)
            variant("top-n-negative", 422, top_n=-1)
            variant("top-n-fraction", 422, top_n=2.5)
            variant("top-n-string", 422, top_n="2")
            variant("top-n-true", 422, top_n=True)
        if label == "tei":
            variant("raw-scores-string", 422, raw_scores="yes")
            variant("truncate-not-bool", 422, truncate="maybe")
            variant("truncation-direction-unknown", 422, truncation_direction="Up")
            variant("truncate-false-too-long", 413, truncate=False, texts=["drill " * 200])
        if label.startswith("jina"):
            variant("return-documents-int", 422, return_documents=0)
            variant("document-object-without-text", 422, documents=[{"title": "drill"}])
            variant("document-object-text-int", 422, documents=[{"text": 3}])
        if label == "cohere-v2":
            variant("max-tokens-zero", 422, max_tokens_per_doc=0)
            variant("max-tokens-negative", 422, max_tokens_per_doc=-4)
            variant("max-tokens-string", 422, max_tokens_per_doc="10")
            variant("texts-instead-of-documents", 422, documents=DROP, texts=DOCUMENTS)

    both = {"query": QUERY, "documents": DOCUMENTS, "texts": DOCUMENTS}
    for path in ("/rerank", "/v1/rerank"):
        add(f"both-documents-and-texts{path}", "POST", path, dumps(both), status=422)
        add(f"neither-documents-nor-texts{path}", "POST", path, dumps({"query": QUERY}), status=422)

    # Bodies that are not a JSON object, or not JSON, or not what the content type says.
    for path in ("/rerank", "/v1/rerank", "/v2/rerank", "/recommend"):
        name = path.strip("/").replace("/", "-")
        for label, body in [("empty-body", b""), ("json-array", b"[1, 2]"), ("json-string", b'"drill"'),
                            ("json-number", b"42"), ("json-null", b"null"), ("json-true", b"true"),
                            ("truncated-json", b'{"query": "drill", '), ("single-quoted", b"{'query': 'drill'}"),
                            ("unquoted-keys", b"{query: drill}"), ("trailing-garbage", b'{"query": "a"} }'),
                            ("nan-top-n", b'{"query": "a", "documents": ["b"], "top_n": NaN}'),
                            ("infinite-top-n", b'{"query": "a", "documents": ["b"], "top_n": 1e400}'),
                            ("invalid-utf8", b'{"query": "\xff\xfe", "documents": ["b"]}'),
                            ("deep-nesting", b"[" * 50_000 + b"]" * 50_000),
                            ("5000-digit-number", b'{"query": "a", "documents": ["b"], "top_n": 1' + b"0" * 5000 + b"}")]:
            add(f"{name}-{label}", "POST", path, body)
        add(f"{name}-no-content-type", "POST", path, b"", headers={})
        add(f"{name}-form-urlencoded", "POST", path, b"query=drill&documents=drill",
            headers={"content-type": "application/x-www-form-urlencoded"})
        add(f"{name}-latin1-charset", "POST", path, '{"query": "perceuse \xe0 batterie", "documents": ["b"]}'.encode(
            "latin-1"), headers={"content-type": "application/json; charset=latin-1"})
        add(f"{name}-gzip-garbage", "POST", path, b"\x1f\x8b not gzip", headers={**JSON, "content-encoding": "gzip"})
        add(f"{name}-9mb-body", "POST", path, dumps({"query": QUERY, "documents": ["d" * 9_000_000]}), status=413)
    add("rerank-text-plain", "POST", "/rerank", dumps({"query": QUERY, "documents": DOCUMENTS}),
        headers={"content-type": "text/plain"})
    add("v2-multipart", "POST", "/v2/rerank", b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\nx\r\n--b--\r\n',
        headers={"content-type": "multipart/form-data; boundary=b"})

    # /recommend
    for label, body, status, xfail in [
        ("no-history", {}, 422, None), ("history-empty", {"history": []}, 422, None),
        ("history-string", {"history": "50"}, 422, None), ("history-null-item", {"history": [50, None]}, 422, None),
        ("history-fraction", {"history": [50.5]}, 422, None), ("history-string-id", {"history": ["50"]}, 422, None),
        ("history-unknown-id", {"history": [-1]}, 404, None), ("history-huge-id", {"history": [10**30]}, 404, None),
        ("history-int64-overflow", {"history": [2**63]}, 404, None),
        ("candidates-empty", {"history": HISTORY, "candidates": []}, 422, None),
        ("candidates-unknown", {"history": HISTORY, "candidates": [0, -5]}, 404, None),
        ("top-n-zero", {"history": HISTORY, "top_n": 0}, 422, None),
        ("top-n-over-1000", {"history": HISTORY, "top_n": 1001}, 422, None),
        ("top-n-string", {"history": HISTORY, "top_n": "5"}, 422, None),
        ("exclude-history-not-bool", {"history": HISTORY, "exclude_history": "maybe"}, 422, None),
        ("unknown-field", {"history": HISTORY, "user": 7}, 422, None),
        ("unknown-model", {"history": HISTORY, "model": "no-such-recommender"}, 404, None),
        ("nested-garbage", {"history": [[50]], "candidates": {"a": [1]}}, 422, None),
    ]:
        add(f"recommend-{label}", "POST", "/recommend", dumps(body), status=status, xfail=xfail)

    # Unknown paths and wrong methods.
    for path in ("/", "/v3/rerank", "/RERANK", "/rerank%00", "//rerank", "/v2/rerank/extra", "/recommend/../rerank2"):
        add(f"unknown-path-{path}", "POST", path, dumps({"query": QUERY, "documents": DOCUMENTS}), status=404)
    add("unknown-path-get", "GET", "/v1/models", None, headers={}, status=404)
    for method, path in [("GET", "/rerank"), ("PUT", "/v1/rerank"), ("DELETE", "/v2/rerank"), ("PATCH", "/rerank"),
                         ("GET", "/recommend"), ("OPTIONS", "/rerank"), ("POST", "/healthz"), ("POST", "/info"),
                         ("DELETE", "/metrics"), ("GET", "/admin/reload"), ("PUT", "/openapi.json")]:
        add(f"wrong-method-{method}-{path}", method, path, None, headers={}, status=405)

    # With --api-key: every route but the probes wants the key.
    for method, path, body in [("POST", "/rerank", {"query": QUERY, "documents": DOCUMENTS}),
                               ("POST", "/v1/rerank", {"query": QUERY, "texts": DOCUMENTS}),
                               ("POST", "/v2/rerank", {"query": QUERY, "documents": DOCUMENTS}),
                               ("POST", "/recommend", {"history": HISTORY}), ("GET", "/info", None),
                               ("GET", "/metrics", None), ("POST", "/admin/reload", None), ("GET", "/openapi.json", None)]:
        add(f"no-key-{method}-{path}", method, path, None if body is None else dumps(body), on="keyed", status=401)
    for label, value in [("wrong-key", "Bearer nope"), ("basic-scheme", f"Basic {API_KEY}"), ("bare-key", API_KEY),
                         ("empty-bearer", "Bearer"), ("key-with-suffix", f"Bearer {API_KEY}x")]:
        add(f"{label}-rerank", "POST", "/rerank", dumps({"query": QUERY, "texts": DOCUMENTS}),
            headers={**JSON, "authorization": value}, on="keyed", status=401)

    # Malformed at the HTTP level.
    head = b"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    add("http-body-shorter-than-content-length", "POST", "/rerank", raw=head + b"Content-Length: 100\r\n\r\n{\"query\": ")
    add("http-content-length-not-a-number", "POST", "/rerank", raw=head + b"Content-Length: ten\r\n\r\n{}")
    add("http-broken-chunked-encoding", "POST", "/rerank", raw=head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}")
    return cases


DROP = object()  # a field left out of the body
CORPUS = corpus()
POSITION = {case.id: i for i, case in enumerate(CORPUS)}
ANSWERS: dict[str, "Answer"] = {}  # case id -> what the server answered, kept for the documentation check


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict


def send(case: Bad, url: str) -> Answer:
    if case.raw is not None:
        return send_raw(case.raw, url)
    response = httpx.request(case.method, url + case.path, content=case.body, headers=case.headers, timeout=30)
    return Answer(response.status_code, response.headers.get("content-type", ""), response.content,
                  dict(response.headers))


def send_raw(data: bytes, url: str) -> Answer:
    """Bytes on a fresh connection; the first response read back (the server may close the connection)."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=REQUEST_TIMEOUT_S + 10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines and lines[0].startswith("HTTP/1.1 "), f"no HTTP response: {received[:200]!r}"
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return Answer(int(lines[0].split()[1]), headers.get("content-type", ""), body, headers)


def detail_of(answer: Answer):
    assert answer.content_type.split(";")[0].strip() == "application/json", \
        f"{answer.status} with content type {answer.content_type!r}: {answer.body[:200]!r}"
    body = json.loads(answer.body)
    assert isinstance(body, dict) and body.get("detail"), f"no `detail` in {answer.status} {body!r}"
    return body["detail"]


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS) >= 100
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    assert {case.path for case in CORPUS} >= {"/rerank", "/v1/rerank", "/v2/rerank", "/recommend"}


@pytest.mark.parametrize("case", [case.param() for case in CORPUS])
def test_malformed_request_gets_4xx_with_detail(case: Bad, good, keyed_good):
    target = keyed_good if case.on == "keyed" else good
    answer = ANSWERS[case.id] = send(case, target.url)
    assert 400 <= answer.status < 500, f"{case.id}: {answer.status} {answer.body[:300]!r}"
    if case.status is not None:
        assert answer.status == case.status, f"{case.id}: {answer.status} {answer.body[:300]!r}"
    detail_of(answer)
    if answer.status == 405:
        assert answer.headers.get("allow"), "a 405 says which methods the route has"
    if answer.status == 401:
        assert answer.headers.get("www-authenticate", "").lower().startswith("bearer")
    # Alive, and a good request of each kind in turn is answered as before.
    assert httpx.get(f"{target.url}/healthz", timeout=10).status_code == 200
    target.check(POSITION[case.id] % 4)


def test_good_requests_unharmed_by_bad_ones_sent_alongside(good):
    """All the corpus at once (8 connections) with good requests mixed in: no good request fails, no
    bad one gets a 5xx or a reset."""
    bad = [case for case in CORPUS if case.on == "main" and case.raw is None]
    work = [("bad", case) for case in bad] + [("good", kind % 4) for kind in range(60)]
    random.Random(0).shuffle(work)  # interleaved, the same way every run

    def run(item):
        what, payload = item
        with httpx.Client() as client:
            if what == "good":
                good.check(payload, client)
                return None
            response = client.request(payload.method, good.url + payload.path, content=payload.body,
                                      headers=payload.headers, timeout=60)
            return (payload.id, response.status_code) if response.status_code >= 500 else None

    with ThreadPoolExecutor(8) as pool:
        server_errors = [r for r in pool.map(run, work) if r is not None]
    assert server_errors == []
    assert httpx.get(f"{good.url}/healthz").status_code == 200


# (c) statuses and content types against /openapi.json

def undocumented(openapi: dict, method: str, path: str, status: int, content_type: str, has_body: bool) -> str | None:
    """Why this answer is not in the OpenAPI document, or None. Only documented operations are judged:
    an unknown path or method has no operation to document it (those get 404/405 with `detail`)."""
    operation = openapi["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    responses = operation["responses"]
    spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
    if spec is None:
        return f"{method} {path} → {status} {content_type!r}: status not documented (documented: {sorted(responses)})"
    media = {m.split(";")[0].strip() for m in spec.get("content", {})}
    if has_body and content_type.split(";")[0].strip() not in media:
        return f"{method} {path} → {status} {content_type!r}: content type not documented for {status} (documented: {sorted(media)})"
    return None


def test_every_status_the_corpus_got_is_documented(openapi, good, keyed_good):
    problems: dict[str, list[str]] = {}
    for case in CORPUS:  # answered already above, unless only this test was selected
        answer = ANSWERS.get(case.id) or send(case, (keyed_good if case.on == "keyed" else good).url)
        problem = undocumented(openapi, case.method, case.path, answer.status, answer.content_type, bool(answer.body))
        if problem:
            problems.setdefault(problem, []).append(case.id)
    assert not problems, "\n".join(f"{problem}, e.g. {', '.join(ids[:6])}" for problem, ids in sorted(problems.items()))


@pytest.fixture(scope="module")
def backend_answers():
    """What the documented operations answer while the backend (Triton) refuses connections, and while
    it accepts them and never answers."""
    answers = []
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    silent_at = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        for triton in (f"127.0.0.1:{free_port()}", silent_at):
            with running_server("--model-repo", str(MODEL_REPO), "--backend", "triton", "--triton-url", triton,
                                "--triton-timeout", "1", wait_for="/healthz") as url:
                requests = [("POST", "/rerank", {"query": QUERY, "texts": DOCUMENTS}),
                            ("POST", "/recommend", {"history": HISTORY})]
                if triton != silent_at:  # (a silent backend costs seconds per call)
                    requests += [("GET", "/readyz", None),
                                 ("POST", "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS}),
                                 ("POST", "/v2/rerank", {"query": QUERY, "documents": DOCUMENTS})]
                for method, path, body in requests:
                    response = httpx.request(method, url + path, json=body, timeout=30)
                    answers.append((method, path, response))
    finally:
        silent.close()
    return answers


def test_backend_down_or_silent_is_503_or_504_with_detail(backend_answers):
    statuses = {}
    for method, path, response in backend_answers:
        statuses.setdefault(path, []).append(response.status_code)
        if path != "/readyz":
            assert response.status_code in (503, 504), response.text
            assert response.json()["detail"]
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1
    assert statuses["/readyz"] == [503]
    assert statuses["/rerank"] == [503, 504]
    assert statuses["/recommend"] == [503, 504]


def test_backend_down_answers_are_documented(backend_answers, openapi):
    problems = {undocumented(openapi, method, path, r.status_code, r.headers.get("content-type", ""), bool(r.content))
                for method, path, r in backend_answers}
    problems.discard(None)
    assert not problems, "\n".join(sorted(problems))


# (a) schemathesis

@pytest.fixture(scope="module")
def schemathesis_run(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    har = folder / "run.har.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "run", f"{server}/openapi.json",
               "--checks", "all", "--max-examples", str(SCHEMATHESIS_EXAMPLES), "--seed", str(SCHEMATHESIS_SEED),
               "--workers", "1", "--continue-on-failure", "--generation-database", "none",
               "--suppress-health-check", "all", "--request-timeout", "30",
               "--report", "har", "--report-har-path", str(har)]
    # In a folder of its own: no schemathesis.toml or example database of the checkout is read.
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    entries = json.loads(har.read_text())["log"]["entries"] if har.is_file() else []
    return run, entries


def failures_of(run: subprocess.CompletedProcess) -> str:
    output = run.stdout + run.stderr
    start = output.find("=== FAILURES")
    return output[output.rfind("\n", 0, start) + 1:] if start >= 0 else output[-6000:]


def test_schemathesis_all_checks_pass(schemathesis_run):
    run, _ = schemathesis_run
    assert run.returncode == 0, failures_of(run)


def test_schemathesis_got_no_server_error_and_reached_the_models(schemathesis_run, openapi):
    run, entries = schemathesis_run
    assert entries, failures_of(run)
    errors = [(e["request"]["method"], e["request"]["url"], e["response"]["status"]) for e in entries
              if e["response"]["status"] >= 500]
    assert errors == []
    answered = {(e["request"]["method"], urlparse(e["request"]["url"]).path) for e in entries
                if e["response"]["status"] == 200}
    for path in ("/rerank", "/v1/rerank", "/v2/rerank", "/recommend"):
        assert ("POST", path) in answered, f"schemathesis never got a 200 from POST {path}"
    operations = {(m.upper(), p) for p, ops in openapi["paths"].items() for m in ops}
    assert operations <= {(e["request"]["method"], urlparse(e["request"]["url"]).path) for e in entries}


def test_every_status_schemathesis_got_is_documented(schemathesis_run, openapi):
    _, entries = schemathesis_run
    assert entries
    problems = set()
    for entry in entries:
        response = entry["response"]
        problem = undocumented(openapi, entry["request"]["method"], urlparse(entry["request"]["url"]).path,
                               response["status"], response["content"].get("mimeType", ""),
                               bool(response["content"].get("size") or response["content"].get("text")))
        if problem:
            problems.add(problem)
    assert not problems, "\n".join(sorted(problems))
