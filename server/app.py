"""FastAPI application: short handlers over the services; errors are mapped in `errors.py`.

A request to `/rerank` goes: `rerank` (here) → `RerankService.rank` (service.py: tokenize, queue)
→ `MicroBatcher` (batcher.py: merge requests) → `PairScorer.prepare` / `run_prepared`
(rankstill/scoring.py: padded sub-batches, the model).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rankstill import __version__

from .config import ServeSettings
from .dialects import CohereV2Request, CohereV2Response, RerankBody, RerankResponse, TeiResult
from .errors import ERROR_RESPONSES, add_error_handlers
from .http import ApiKeyMiddleware, BodyLimitMiddleware, OffloadedJsonRoute
from .metrics import MetricsMiddleware, ServerMetrics
from .recommend import RecommendRequest, RecommendResponse, RecommendService
from .service import RerankService
from .shadow import ShadowScorer

TRUNCATED_HEADER = "X-Truncated-Documents"
log = logging.getLogger("rankstill")


@dataclass
class Runtime:
    """Everything the handlers use, built once per app."""

    settings: ServeSettings
    metrics: ServerMetrics
    service: RerankService
    recommender: RecommendService
    shadow: ShadowScorer | None


def create_app(settings: ServeSettings) -> FastAPI:
    metrics = ServerMetrics()
    service = RerankService(settings, metrics)
    service.load()
    recommender = RecommendService(settings)
    shadow = ShadowScorer(settings.shadow, metrics.registry) if settings.shadow.teacher else None
    app = FastAPI(title="rankstill", version=__version__, lifespan=_lifespan, redirect_slashes=False,
                  description="Rerank (query, documents) with a distilled cross-encoder student.")
    app.state.runtime = Runtime(settings, metrics, service, recommender, shadow)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, keys=settings.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 401 and 413 too
    add_error_handlers(app, settings.retry_after, on_overload=metrics.rejected.inc)
    # With keys, the OpenAPI document says so (the middleware enforces them on every route).
    app.include_router(router, dependencies=[Depends(HTTPBearer(auto_error=False))] if settings.api_key else [])
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    runtime: Runtime = app.state.runtime
    runtime.service.start()
    if runtime.shadow:
        runtime.shadow.start()
    reloading = [asyncio.create_task(_poll_model_repo(runtime))] if runtime.settings.reload_interval else []
    stop_reloading_on_sighup = _reload_on_sighup(runtime)
    yield
    for task in reloading:
        task.cancel()
    stop_reloading_on_sighup()
    await runtime.service.stop()
    if runtime.shadow:
        await runtime.shadow.stop()


async def _poll_model_repo(runtime: Runtime) -> None:
    """Triton's poll mode: new versions in the model repository are picked up without a restart."""
    while True:
        await asyncio.sleep(runtime.settings.reload_interval)
        try:
            await runtime.service.reload()
        except Exception:  # a repository being rewritten must not stop the polling
            log.exception("reloading %s failed; trying again in %s s", runtime.settings.model_repo,
                          runtime.settings.reload_interval)


def _reload_on_sighup(runtime: Runtime):
    """SIGHUP reloads the model repository (by default it would kill the server and drop its work).
    Returns what undoes it."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(runtime.service.reload()))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not POSIX
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


async def _runtime(request: Request) -> Runtime:  # async: FastAPI would run a plain def on a worker thread
    return request.app.state.runtime


router = APIRouter(route_class=OffloadedJsonRoute, responses=ERROR_RESPONSES)
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
ShadowHeader = Annotated[str | None, Header(description="1: shadow this request to the teacher; 0: never; "
                                                        "absent: sample at the configured rate")]


@router.post("/rerank", response_model=RerankResponse | list[TeiResult],
             summary="Rerank documents (Jina / Cohere v1 with `documents`, TEI with `texts`)")
@router.post("/v1/rerank", response_model=RerankResponse | list[TeiResult],
             summary="The same as /rerank (the path Cohere v1, Jina- and vLLM-style clients call)")
async def rerank(body: RerankBody, background: BackgroundTasks, runtime: RuntimeDep, x_shadow: ShadowHeader = None):
    return await _rerank(body, background, runtime, x_shadow)


@router.post("/v2/rerank", response_model=CohereV2Response, summary="Rerank documents (Cohere v2)")
async def rerank_v2(body: CohereV2Request, background: BackgroundTasks, runtime: RuntimeDep,
                    x_shadow: ShadowHeader = None):
    return await _rerank(body, background, runtime, x_shadow)


async def _rerank(body, background: BackgroundTasks, runtime: Runtime, x_shadow: str | None) -> Response:
    query = body.to_query()
    ranking = await runtime.service.rank(query)
    if runtime.shadow and runtime.shadow.wants(x_shadow):  # offered after the response is sent; never waits
        background.add_task(runtime.shadow.offer, ranking.model, query.query, query.documents, ranking.logits)
    # The body is serialised here, not by FastAPI: the route's response_model documents it (see dialects.py).
    return Response(orjson.dumps(body.respond(query, ranking)), media_type="application/json",
                    headers={TRUNCATED_HEADER: str(ranking.truncated)})


@router.post("/recommend", response_model=RecommendResponse, summary="Next items for a user's recent history (sequential recommender)")
async def recommend(body: RecommendRequest, runtime: RuntimeDep):
    model, results = await runtime.recommender.recommend(body)
    return RecommendResponse(model=model, results=results)


@router.get("/healthz", summary="Liveness")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and warmed up",
            responses={503: {"description": "Not ready (the backend is not up yet)",
                             "content": {"application/json": {"schema": {"type": "object"}}}}})
async def readyz(runtime: RuntimeDep):
    if not await asyncio.to_thread(runtime.service.is_ready):  # a remote backend is asked over the network
        return JSONResponse({"status": "not ready", "backend": runtime.settings.backend.value}, status_code=503)
    return {"status": "ready", "models": sorted(runtime.service.models)}


@router.get("/info", summary="Served models and their limits")
async def info(runtime: RuntimeDep):
    service, recommender = runtime.service, runtime.recommender
    return {
        "default_model": service.default_model,
        "model_aliases": runtime.settings.aliases,
        "strict_models": runtime.settings.strict_models,
        "max_documents": runtime.settings.max_documents,
        "refused_versions": service.refused,
        "models": {name: {"max_length": m.entry.max_length, "version": m.entry.version,
                          "variant": m.entry.metadata.get("variant"), "truncation": m.entry.metadata.get("truncation")}
                   for name, m in service.models.items()},
        "default_recommend_model": recommender.default_model,
        "recommend_models": {name: {"window": m.window, "items": len(m.item_ids), "version": m.entry.version}
                             for name, m in recommender.models.items()},
    }


@router.get("/shadow/summary", summary="Shadow scoring: counts and rolling student-teacher agreement")
async def shadow_summary(runtime: RuntimeDep):
    if runtime.shadow is None:
        return JSONResponse({"detail": "shadow scoring is off (start with --shadow-teacher)"}, status_code=404)
    return runtime.shadow.summary()


@router.post("/admin/reload", summary="Load new model versions from the repository now (as the periodic poll "
             "and SIGHUP do): each is checked before it is swapped in; a broken one is refused and the old one serves")
async def admin_reload(runtime: RuntimeDep):
    return await runtime.service.reload()


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
async def prometheus_metrics(runtime: RuntimeDep):
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
