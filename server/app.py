"""FastAPI application: thin handlers over the rerank service; errors mapped in one place."""

from __future__ import annotations

import asyncio
import random
import uuid
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rankstill import __version__

from .backend import BackendTimeout, BackendUnavailable
from .batcher import Overloaded
from .metrics import MetricsMiddleware, ServerMetrics
from .recommend import RecommendService
from .schemas import (CohereV2Meta, CohereV2Request, CohereV2Response, CohereV2Result, ErrorBody,
                      RecommendRequest, RecommendResponse, RerankDocument, RerankRequest, RerankResponse,
                      RerankResult, TeiResult, Usage)
from .service import RequestError, RerankService
from .settings import ServerSettings
from .shadow import ShadowScorer

ERRORS = {code: {"model": ErrorBody} for code in (404, 422, 503, 504)}
TRUNCATED_HEADER = "X-Truncated-Documents"
SHADOW_HEADER_HELP = "1: shadow this request to the teacher; 0: never; absent: sample at the configured rate"


def create_app(settings: ServerSettings) -> FastAPI:
    metrics = ServerMetrics()
    service = RerankService(settings, metrics)
    service.load()
    recommender = RecommendService(settings.model_repo, settings.default_recommend_model, settings.threads)

    shadow = ShadowScorer(settings.shadow, metrics.registry) if settings.shadow else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        if shadow:
            shadow.start()
        yield
        await service.stop()
        if shadow:
            await shadow.stop()

    def maybe_shadow(background: BackgroundTasks, header: str | None, ranking, query: str, texts: list[str]) -> None:
        """After the response is sent, offer the request to the shadow queue (never waits)."""
        if shadow is None or header == "0":
            return
        if header == "1" or random.random() < settings.shadow.rate:
            background.add_task(shadow.offer, ranking.model, query, texts, ranking.logits)

    app = FastAPI(title="rankstill", version=__version__, lifespan=lifespan,
                  description="Rerank (query, documents) with a distilled cross-encoder student.")
    app.state.service = service
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app, metrics, settings)

    @app.post("/rerank", response_model=RerankResponse | list[TeiResult], responses=ERRORS,
              response_model_exclude_none=True,
              summary="Rerank documents (Jina / Cohere v1 with `documents`, TEI with `texts`)")
    async def rerank(request: RerankRequest, response: Response, background: BackgroundTasks,
                     x_shadow: str | None = Header(None, description=SHADOW_HEADER_HELP)):
        texts = request.candidate_texts()
        ranking = await service.rank(request.query, texts, request.model)
        maybe_shadow(background, x_shadow, ranking, request.query, texts)
        response.headers[TRUNCATED_HEADER] = str(ranking.truncated)
        order = ranking.order()
        if request.is_tei:  # TEI clients expect one score per text, best first
            values = ranking.logits if request.raw_scores else ranking.scores
            return [TeiResult(index=int(i), score=float(values[i]),
                              text=texts[i] if request.return_text else None) for i in order]
        scores = ranking.scores
        return RerankResponse(
            model=ranking.model,
            results=[RerankResult(index=int(i), relevance_score=float(scores[i]),
                                  document=RerankDocument(text=texts[i]) if request.return_documents else None)
                     for i in order[: request.top_n]],
            usage=Usage(total_tokens=ranking.tokens),
        )

    @app.post("/v2/rerank", response_model=CohereV2Response, responses=ERRORS,
              summary="Rerank documents (Cohere v2)")
    async def rerank_v2(request: CohereV2Request, response: Response, background: BackgroundTasks,
                        x_shadow: str | None = Header(None, description=SHADOW_HEADER_HELP)):
        ranking = await service.rank(request.query, request.documents, request.model)
        maybe_shadow(background, x_shadow, ranking, request.query, request.documents)
        response.headers[TRUNCATED_HEADER] = str(ranking.truncated)
        scores = ranking.scores
        warnings = [f"{ranking.truncated} documents were truncated to "
                    f"{service.resolve(request.model).entry.max_length} tokens"] if ranking.truncated else []
        return CohereV2Response(
            id=str(uuid.uuid4()),
            results=[CohereV2Result(index=int(i), relevance_score=float(scores[i]))
                     for i in ranking.order()[: request.top_n]],
            meta=CohereV2Meta(warnings=warnings),
        )

    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS,
              summary="Next items for a user's recent history (sequential recommender)")
    async def recommend(request: RecommendRequest):
        model, results = await recommender.recommend(request)
        return RecommendResponse(model=model, results=results)

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and warmed up")
    async def readyz():
        if not await asyncio.to_thread(service.is_ready):  # a remote backend is asked over the network
            return JSONResponse({"status": "not ready", "backend": settings.backend}, status_code=503)
        return {"status": "ready", "models": sorted(service.models)}

    @app.get("/info", summary="Served models and their limits")
    async def info():
        return {
            "default_model": service.default_model,
            "max_documents": settings.max_documents,
            "models": {name: {"max_length": m.entry.max_length, "version": m.entry.version,
                              "variant": m.entry.metadata.get("variant"),
                              "truncation": m.entry.metadata.get("truncation")}
                       for name, m in service.models.items()},
            "default_recommend_model": recommender.default_model,
            "recommend_models": {name: {"window": m.window, "items": len(m.item_ids), "version": m.entry.version}
                                 for name, m in recommender.models.items()},
        }

    @app.get("/shadow/summary", summary="Shadow scoring: counts and rolling student-teacher agreement")
    async def shadow_summary():
        if shadow is None:
            return JSONResponse({"detail": "shadow scoring is off (start with --shadow-teacher)"}, status_code=404)
        return shadow.summary()

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics, settings: ServerSettings) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError):
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, error: Overloaded):
        metrics.rejected.inc()
        return JSONResponse({"detail": f"server overloaded ({error}); retry later"}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_seconds)})

    @app.exception_handler(BackendUnavailable)
    async def backend_unavailable(_: Request, error: BackendUnavailable):
        return JSONResponse({"detail": str(error)}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_seconds)})

    @app.exception_handler(BackendTimeout)
    async def backend_timeout(_: Request, error: BackendTimeout):
        return JSONResponse({"detail": str(error)}, status_code=504)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError):
        # FastAPI's own shape (a list of problems under `detail`), made JSON-safe.
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                    for e in error.errors()]
        return JSONResponse({"detail": problems}, status_code=422)
