"""FastAPI application: short handlers over the services; errors are mapped in `errors.py`.

A request to `/rerank` goes: `rerank` (here) → `RerankService.rank` (service.py: tokenize, queue)
→ `MicroBatcher` (batcher.py: merge requests) → `PairScorer.run_many` (rankstill/scoring.py:
pad and run the model).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rankstill import __version__

from .config import ServeSettings
from .dialects import CohereV2Request, CohereV2Response, RerankBody, RerankResponse, TeiResult
from .errors import ERROR_RESPONSES, add_error_handlers
from .metrics import MetricsMiddleware, ServerMetrics
from .recommend import RecommendRequest, RecommendResponse, RecommendService
from .service import RerankService
from .shadow import ShadowScorer

TRUNCATED_HEADER = "X-Truncated-Documents"


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
    recommender = RecommendService(settings.model_repo, settings.recommend_model, settings.threads)
    shadow = ShadowScorer(settings.shadow, metrics.registry) if settings.shadow.teacher else None
    app = FastAPI(title="rankstill", version=__version__, lifespan=_lifespan,
                  description="Rerank (query, documents) with a distilled cross-encoder student.")
    app.state.runtime = Runtime(settings, metrics, service, recommender, shadow)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    add_error_handlers(app, settings.retry_after, on_overload=metrics.rejected.inc)
    app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    runtime: Runtime = app.state.runtime
    runtime.service.start()
    if runtime.shadow:
        runtime.shadow.start()
    yield
    await runtime.service.stop()
    if runtime.shadow:
        await runtime.shadow.stop()


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
ShadowHeader = Annotated[str | None, Header(description="1: shadow this request to the teacher; 0: never; "
                                                        "absent: sample at the configured rate")]


@router.post("/rerank", response_model=RerankResponse | list[TeiResult], responses=ERROR_RESPONSES,
             response_model_exclude_none=True,
             summary="Rerank documents (Jina / Cohere v1 with `documents`, TEI with `texts`)")
async def rerank(body: RerankBody, response: Response, background: BackgroundTasks, runtime: RuntimeDep,
                 x_shadow: ShadowHeader = None):
    return await _rerank(body, response, background, runtime, x_shadow)


@router.post("/v2/rerank", response_model=CohereV2Response, responses=ERROR_RESPONSES,
             summary="Rerank documents (Cohere v2)")
async def rerank_v2(body: CohereV2Request, response: Response, background: BackgroundTasks, runtime: RuntimeDep,
                    x_shadow: ShadowHeader = None):
    return await _rerank(body, response, background, runtime, x_shadow)


async def _rerank(body, response: Response, background: BackgroundTasks, runtime: Runtime, x_shadow: str | None):
    query = body.to_query()
    ranking = await runtime.service.rank(query)
    if runtime.shadow and runtime.shadow.wants(x_shadow):  # offered after the response is sent; never waits
        background.add_task(runtime.shadow.offer, ranking.model, query.query, query.documents, ranking.logits)
    response.headers[TRUNCATED_HEADER] = str(ranking.truncated)
    return body.respond(query, ranking)


@router.post("/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES,
             summary="Next items for a user's recent history (sequential recommender)")
async def recommend(body: RecommendRequest, runtime: RuntimeDep):
    model, results = await runtime.recommender.recommend(body)
    return RecommendResponse(model=model, results=results)


@router.get("/healthz", summary="Liveness")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and warmed up")
async def readyz(runtime: RuntimeDep):
    if not await asyncio.to_thread(runtime.service.is_ready):  # a remote backend is asked over the network
        return JSONResponse({"status": "not ready", "backend": runtime.settings.backend.value}, status_code=503)
    return {"status": "ready", "models": sorted(runtime.service.models)}


@router.get("/info", summary="Served models and their limits")
async def info(runtime: RuntimeDep):
    service, recommender = runtime.service, runtime.recommender
    return {
        "default_model": service.default_model,
        "max_documents": runtime.settings.max_documents,
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


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus_metrics(runtime: RuntimeDep):
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
