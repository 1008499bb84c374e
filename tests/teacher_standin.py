"""A stand-in remote teacher on 127.0.0.1 that speaks TEI, Cohere/Jina, vLLM /score and OpenAI completions,
and misbehaves on schedule: 429 bursts (with Retry-After), 500s, answers slower than the client's
time-out, and slowness. Its scores are a fixed function of (query, document), so a run through
faults must give exactly the labels of a fault-free run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rankstill.local_server import free_port


def standin_logit(query: str, document: str) -> float:
    """Shared words minus one, plus a small fixed jitter from a hash of the pair."""
    shared = len(set(query.lower().split()) & set(document.lower().split()))
    jitter = int(hashlib.sha1(f"{query}\x00{document}".encode()).hexdigest()[:6], 16) / 0xFFFFFF
    return shared - 1.0 + jitter


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class Faults:
    """What the n-th request (counted from 0) gets: a cycle of `pattern` entries, each one of
    "ok", "429", "500", "timeout" (sleeps `hang` s) or "slow" (sleeps `slow` s, then answers)."""

    def __init__(self, pattern: list[str] | None = None, hang: float = 2.0, slow: float = 0.2, retry_after: str = "0"):
        self.pattern = pattern or ["ok"]
        self.hang, self.slow, self.retry_after = hang, slow, retry_after
        self.count = 0
        self.seen: list[str] = []
        self.documents_per_call: list[int] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            fault = self.pattern[self.count % len(self.pattern)]
            self.count += 1
            self.seen.append(fault)
            return fault


def build(faults: Faults) -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def ready():
        return {"status": "ready"}

    @app.middleware("http")
    async def track(request, call_next):
        with faults.lock:
            faults.inflight += 1
            faults.max_inflight = max(faults.max_inflight, faults.inflight)
        try:
            return await call_next(request)
        finally:
            with faults.lock:
                faults.inflight -= 1

    async def misbehave():
        fault = faults.next()
        if fault == "429":
            return JSONResponse({"error": "rate limited"}, status_code=429, headers={"Retry-After": faults.retry_after})
        if fault == "500":
            return JSONResponse({"error": "teacher broke"}, status_code=500)
        if fault == "timeout":
            await asyncio.sleep(faults.hang)
        if fault == "slow":
            await asyncio.sleep(faults.slow)
        return None

    @app.post("/rerank")
    async def tei(request: Request):
        if (bad := await misbehave()) is not None:
            return bad
        body = await request.json()
        faults.documents_per_call.append(len(body["texts"]))
        scores = [standin_logit(body["query"], text) for text in body["texts"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [{"index": i, "score": scores[i]} for i in order]

    @app.post("/v1/rerank")
    async def cohere(request: Request):
        if (bad := await misbehave()) is not None:
            return bad
        body = await request.json()
        if "model" not in body:
            return JSONResponse({"error": "model is required"}, status_code=422)
        scores = [_sigmoid(standin_logit(body["query"], text)) for text in body["documents"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.get("top_n", len(scores))]
        return {"results": [{"index": i, "relevance_score": scores[i]} for i in order]}

    @app.post("/score")
    async def vllm(request: Request):
        if (bad := await misbehave()) is not None:
            return bad
        body = await request.json()
        return {"object": "list", "data": [{"index": i, "object": "score", "score": _sigmoid(standin_logit(body["text_1"], t))}
                                           for i, t in enumerate(body["text_2"])]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        if (bad := await misbehave()) is not None:
            return bad
        body = await request.json()
        choices = []
        for index, prompt in enumerate(body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]):
            query = prompt.split("Query: ", 1)[1].split("\n", 1)[0]
            document = prompt.split("Document: ", 1)[1].split("\n", 1)[0]
            p = _sigmoid(standin_logit(query, document))
            top = {" yes": math.log(p * 0.9), " Yes": math.log(p * 0.1), " no": math.log(1 - p), "\n": -9.0}
            choices.append({"index": index, "text": " yes" if p > 0.5 else " no", "finish_reason": "length",
                            "logprobs": {"tokens": [" yes"], "token_logprobs": [top[" yes"]], "top_logprobs": [top]}})
        return {"object": "text_completion", "model": body.get("model"), "choices": choices}

    return app


@contextlib.contextmanager
def running_standin(faults: Faults | None = None):
    """Yield (base URL, faults) of a stand-in teacher served by uvicorn on a thread."""
    faults = faults or Faults()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build(faults), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("stand-in teacher did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", faults
    finally:
        server.should_exit = True
        thread.join(timeout=10)
