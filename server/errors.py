"""Every error the server answers with, and the one place that maps them to HTTP responses."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class RequestError(ValueError):
    """Bad input found after the request body was validated (a 4xx with this detail)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Overloaded(RuntimeError):
    """Too much work is queued; the client should retry later (503 + Retry-After)."""

    def __init__(self, reason: str, retry_after_s: float = 0.0):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class BackendError(RuntimeError):
    """The model backend failed as a whole (not because of one request's input)."""


class BackendUnavailable(BackendError):
    """The inference server cannot be reached or refused the request (503 + Retry-After)."""


class BackendTimeout(BackendError):
    """The inference server did not answer in time (504)."""


class ErrorBody(BaseModel):
    detail: str | list


ERROR_RESPONSES = {code: {"model": ErrorBody, "description": description} for code, description in (
    (400, "Malformed HTTP (e.g. a Content-Length that is not a number)"),
    (401, "Missing or wrong API key (when the server has keys)"),
    (404, "Unknown model (with --strict-models), unknown item ids (/recommend), or nothing to serve"),
    (408, "The request's headers and body did not arrive within the request timeout"),
    (413, "Request body too large, or a pair too long with truncate=false"),
    (415, "The body is not sent as JSON"),
    (422, "Invalid request: `detail` says what is wrong"),
    (503, "Overloaded or the backend is unavailable: retry after Retry-After seconds"),
    (504, "The backend did not answer in time"),
)}


def add_error_handlers(app: FastAPI, retry_after: int, on_overload=lambda: None) -> None:
    """Map every error above (and FastAPI's validation errors) to a JSON body with `detail`."""
    retry = {"Retry-After": str(retry_after)}

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError):
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, error: Overloaded):
        on_overload()
        wait = str(max(retry_after, math.ceil(error.retry_after_s)))
        return JSONResponse({"detail": f"server overloaded ({error}); retry after {wait} s"}, status_code=503,
                            headers={"Retry-After": wait})

    @app.exception_handler(BackendUnavailable)
    async def backend_unavailable(_: Request, error: BackendUnavailable):
        return JSONResponse({"detail": str(error)}, status_code=503, headers=retry)

    @app.exception_handler(BackendTimeout)
    async def backend_timeout(_: Request, error: BackendTimeout):
        return JSONResponse({"detail": str(error)}, status_code=504)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError):
        # FastAPI's own shape (a list of problems under `detail`), made JSON-safe.
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                    for e in error.errors()]
        return JSONResponse({"detail": problems}, status_code=422)
