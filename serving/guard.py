"""Between the server and the app: time and size limits on clients, and metrics.

The body is read here, before FastAPI sees it, so that an oversized body is
refused without being held in memory (413) and a client that stops sending
halfway is let go (408) instead of holding a connection forever. Every
answer is counted by model, endpoint and status, with its latency.
"""

import asyncio
import time

from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol


PAGES = {"/": "page", "/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics",
         "/v1/models": "models", "/docs": "docs", "/openapi.json": "openapi"}
ACTIONS = {"": "describe", "sample": "sample", "score": "score", "classify": "classify"}


def endpoint_of(path, known_models):
    """(model, endpoint) labels for a path. Anything a client can make up (model
    names not served, other paths or actions) is "-" or "other", so that it
    cannot grow the metrics."""
    if path.startswith("/v1/models/"):
        name, _, action = path[len("/v1/models/"):].partition(":")
        return (name if name in known_models() else "-"), ACTIONS.get(action, "other")
    return "-", PAGES.get(path, "other")


class Guard:
    """Reads and limits request bodies, and records every answer in `metrics`.

    Args:
        app: the ASGI app.
        max_body: int, bytes.
        body_timeout: float, seconds to wait for each piece of a body.
        metrics: a `serving.metrics.Metrics`.
        known_models: a function returning the names served now.
    """

    def __init__(self, app, max_body, body_timeout, metrics, known_models):
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.metrics = metrics
        self.known_models = known_models

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), [499]  # 499: the client left before an answer

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if isinstance(body, JSONResponse):
                return await body(scope, receive, recording_send)
            if body is not None:
                receive = replay(body, receive)
            await self.app(scope, receive, recording_send)
        finally:
            model, endpoint = endpoint_of(scope["path"], self.known_models)
            self.metrics.requests.labels(model, endpoint, str(status[0])).inc()
            self.metrics.latency.labels(model, endpoint).observe(time.monotonic() - started)

    async def _read_body(self, scope, receive):
        """The whole body (bytes), None for a request without one, or the
        error response to send instead."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return None
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return too_large(self.max_body)
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                return JSONResponse({"detail": f"no part of the request body came for "
                                               f"{self.body_timeout:g} s"}, status_code=408,
                                    headers={"Connection": "close"})
            if message["type"] == "http.disconnect":
                return JSONResponse({"detail": "client disconnected"}, status_code=499)
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return too_large(self.max_body)
            if not message.get("more_body"):
                return bytes(body)


def too_large(limit):
    return JSONResponse({"detail": f"the request body is larger than {limit:,} bytes"},
                        status_code=413, headers={"Connection": "close"})


def replay(body, receive):
    """A `receive` that gives the body already read, then the server's messages
    (so the app still hears of a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again():
        return pending.pop() if pending else await receive()

    return receive_again


class SlowHeadersTimeout(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's line and headers.

    uvicorn closes idle kept-alive connections, but the first byte of a request
    cancels that timer, and nothing bounds a client that never finishes its
    headers (a "slowloris" holds a connection for ever). Set `timeout` on a
    subclass; `Guard` bounds the body.
    """

    timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self):
        super().on_response_complete()
        self._arm()

    def handle_events(self):
        super().handle_events()
        if self.cycle is not self._armed_for and self._headers_deadline is not None:
            self._headers_deadline.cancel()  # a new request's headers are complete
            self._headers_deadline = None

    def connection_lost(self, exc):
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
        super().connection_lost(exc)

    def _arm(self):
        self._armed_for = self.cycle
        self._headers_deadline = self.loop.call_later(self.timeout, self._too_slow)

    def _too_slow(self):
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
