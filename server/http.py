"""Guards between the network and the handlers, each small and on its own:

- `guarded_protocol`: uvicorn's httptools protocol with a cap on open connections and a deadline
  for each request's headers and body (a client that sends nothing, or too slowly, is cut off);
- `BodyLimitMiddleware`: 413 for a body over the limit, before it is read or parsed;
- `ApiKeyMiddleware`: `Authorization: Bearer KEY` on every route but liveness and readiness;
- `OffloadedJsonRoute`: large JSON bodies are parsed on a worker thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("rankstill")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes never need a key
PARSE_ON_THREAD_BYTES = 64 * 1024  # smaller bodies parse in well under a millisecond


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_connections = 1024
    request_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()  # connection_lost forgets it
            return
        self._arm()

    def on_message_begin(self) -> None:  # the next request on a kept-alive connection
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_json_response(408, "Request Timeout", f"the request's headers and body did not "
                                                    f"arrive within {self.request_timeout} s"))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:  # malformed HTTP: the same JSON `detail` as every other error
        self.transport.write(_json_response(400, "Bad Request", msg))
        self.transport.close()


def _json_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def guarded_protocol(max_connections: int, request_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`)."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,),
                {"max_connections": max_connections, "request_timeout": request_timeout})


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        received, refused = 0, False

        async def counting_receive():
            """A body without Content-Length (chunked) is counted as it arrives; past the limit the
            client gets 413 and the app sees a disconnect."""
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                refused = True
                await self._refuse(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message):
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, send_unless_refused)

    async def _refuse(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


class ApiKeyMiddleware:
    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            return await self.app(scope, receive, send)
        response = JSONResponse({"detail": "missing or wrong API key: send the header `Authorization: Bearer <key>`"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _authorized(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), key) for key in self.keys)


def _parse_json(body: bytes):
    """JSON, or a `JSONDecodeError` (answered 422) for anything that is not: bytes that are not
    UTF-8, nesting too deep, numbers too long."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise json.JSONDecodeError(f"not a JSON document in UTF-8 ({type(error).__name__}: {error})",
                                   body.decode("utf-8", "replace")[:100], 0) from None


class _OffloadedJsonRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.to_thread(_parse_json, body) if len(body) > PARSE_ON_THREAD_BYTES else _parse_json(body)
        return self._json


class OffloadedJsonRoute(APIRoute):
    """Bodies must be JSON (415 otherwise, naming the content type); large ones are parsed on a thread."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request):
            content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if request.method == "POST" and not (content_type == "application/json" or content_type.endswith("+json")):
                return JSONResponse({"detail": f"send the body as JSON with `Content-Type: application/json` "
                                               f"(got {content_type!r})"}, status_code=415)
            return await handler(_OffloadedJsonRequest(request.scope, request.receive))

        return route


def warn_if_open(host: str, api_keys: list[str]) -> None:
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if not loopback and not api_keys:
        log.warning("serving on %s without an API key: anyone who can reach this address can use every route "
                    "(set --api-key or RANKSTILL_API_KEY)", host)
