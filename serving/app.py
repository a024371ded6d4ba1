"""The HTTP API over a model repository: list models, sample, stream, score, health, metrics.

TensorFlow never runs on the event loop: plain requests go to each model's
micro-batcher thread; streams, scoring and beam searches to a small thread
pool of their own (streams one chunk at a time), so `/healthz` answers at
once however busy the models are.
Every request is checked completely before anything is queued, so a bad one
fails alone.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.batching import Abandoned
from serving.batching import Request as Work
from serving.guard import Guard, SlowHeadersTimeout
from serving.metrics import Metrics
from serving.repository import ModelRepository
from serving.settings import Limits, SettingError, Settings, new_seed
from serving.stops import StopStream

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# What one request may ask for by default (`charzoo serve --max-...` changes them).
LIMITS = Limits(max_length=2000, max_samples=16, max_prime=4000, max_characters=32_000,
                max_text=20_000)


class SampleRequest(BaseModel):
    """What to generate. Omit `seed` to have one chosen (and returned).

    Types only: the ranges are checked once, by `serving.settings.check_settings`.
    """

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    prime: str = Field("", description="text to continue; empty starts from a space")
    length: int = Field(Settings.length, description="characters to generate per sample")
    temperature: float = Field(Settings.temperature, description="0 = greedy")
    top_k: int = Field(Settings.top_k, description="0 = off")
    top_p: float = Field(Settings.top_p, description="nucleus mass, 1 = off")
    seed: int | None = Field(None, description="0 <= seed < 2**63; omitted: chosen and returned")
    num_samples: int = Field(Settings.num_samples)
    stop: str | list[str] = Field([], description="a sample ends at the first of these it generates")
    include_stop: bool = Field(Settings.include_stop, description="keep the stop string at the end")
    beam_width: int = Field(Settings.beam_width, description="> 1: the most likely continuations "
                                                             "by beam search (not random; no stream)")
    stream: bool = Field(False, description="answer as server-sent events")

    def settings(self):
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return Settings(self.length, self.temperature, self.top_k, self.top_p, self.num_samples,
                        stop, self.include_stop, self.beam_width)


class ScoreRequest(BaseModel):
    """A text to score."""

    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(description="the text; normalised as the model's training text was")


class ClassifyRequest(BaseModel):
    """Strings to classify."""

    model_config = ConfigDict(strict=True, extra="forbid")

    texts: list[str] = Field(description="the strings, 1 to 256 of them, each 1 to 200 characters")
    top: int = Field(default=3, description="classes per string, likeliest first")


def unprocessable(error):
    return HTTPException(422, detail=[{"loc": ["body", error.field], "msg": str(error),
                                       "type": "value_error"}])


def validation_errors(request, error):
    """422 naming each field; without the offending input, which may be a
    NaN or Infinity that JSON cannot carry (or a megabyte of prime)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(models_dir, limits=LIMITS, max_body=65_536, request_timeout=30.0, body_timeout=10.0,
               stream_threads=4, rescan_interval=2.0, max_batch_rows=64):
    """The FastAPI app serving the newest loadable version of every model in `models_dir`.

    Args:
        models_dir: str or Path, laid out as `<name>/<version>/`.
        limits: `serving.settings.Limits`, what one request may ask for.
        max_body: int, the largest request body in bytes (413 above).
        request_timeout: float, seconds a request may take before it is
            cancelled (504); streams end with an `error` event.
        body_timeout: float, seconds to wait for each piece of a request
            body before giving up on a stalled client (408).
        stream_threads: int, threads generating streams (more streams wait).
        rescan_interval: float, seconds between looks at `models_dir`.
        max_batch_rows: int, the most rows merged into one call of a model.

    Raises:
        ValueError: `models_dir` does not exist, or a limit is not positive.
    """
    for name, value in (("max_body", max_body), ("request_timeout", request_timeout),
                        ("body_timeout", body_timeout), ("stream_threads", stream_threads),
                        *dataclasses.asdict(limits).items()):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    metrics = Metrics()
    repository = ModelRepository(models_dir, rescan_interval, max_batch_rows, metrics)
    stream_limiter = anyio.CapacityLimiter(stream_threads)

    def too_slow():
        return HTTPException(504, detail=f"the request took longer than {request_timeout:g} s "
                                         "and was cancelled; ask for less, or try again")

    async def in_thread(work, deadline):
        """`work()` on the stream threads; 504 once the deadline passes (the thread
        finishes its call, but nobody waits for it)."""
        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                return await anyio.to_thread.run_sync(work, limiter=stream_limiter,
                                                      abandon_on_cancel=True)
        except TimeoutError:
            raise too_slow() from None

    async def checked_in_thread(call, started):
        """`call()` on the stream threads under the request's deadline; its SettingError is a 422."""
        def work():
            try:
                return call()
            except SettingError as error:
                raise unprocessable(error) from None

        return await in_thread(work, started + request_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        repository.close()

    app = FastAPI(title="charzoo", description="Sample text from charzoo's character language models.",
                  lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, validation_errors)
    app.add_middleware(Guard, max_body=max_body, body_timeout=body_timeout, metrics=metrics,
                       known_models=lambda: repository.models().keys())
    app.state.repository = repository
    app.state.metrics = metrics

    def get_model(name, task=None):
        """The served model `name` (404 if none); 422 if it does not do `task`."""
        model = repository.get(name)
        if model is None:
            raise HTTPException(404, detail=f"no model called {name!r}")
        if task and model.task != task:
            right = "classify" if model.task == "classify" else "sample"
            raise HTTPException(422, detail=f"{name} does not {task}; use POST /v1/models/{name}:{right}")
        return model

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)
    async def healthz():
        """Liveness, always 200; `status` is "degraded" if a model has versions that fail to load."""
        states = repository.health()
        served = sum(s["state"] == "serving" for s in states.values())
        broken = any(s["failed"] for s in states.values())
        return {"status": "degraded" if broken or not served else "ok", "models": served,
                "states": states}

    @app.get("/readyz")
    @app.head("/readyz", include_in_schema=False)
    async def readyz():
        """Readiness: 200 once at least one model is served, else 503."""
        served = len(repository.models())
        return JSONResponse({"ready": served > 0, "models": served}, status_code=200 if served else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        return Response(metrics.text(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def list_models():
        return {"models": [model.describe() for model in repository.models().values()]}

    @app.get("/v1/models/{name}")
    async def describe_model(name: str):
        return get_model(name).describe()

    @app.post("/v1/models/{name}:sample")
    async def sample(name: str, body: SampleRequest, request: Request):
        started = time.monotonic()
        deadline = started + request_timeout
        seed = new_seed() if body.seed is None else body.seed
        settings = body.settings()

        def checked(model):
            try:
                return model.check(body.prime, settings, seed, limits)
            except SettingError as error:
                raise unprocessable(error) from None

        if body.stream and settings.beam_width > 1:
            raise HTTPException(422, detail=[{"loc": ["body", "stream"], "type": "value_error",
                                              "msg": "beam search cannot stream: its best text is "
                                                     "known only at the end"}])
        if settings.beam_width > 1:
            model = get_model(name, "generate")
            prime = checked(model)
            texts, bits = await in_thread(lambda: model.beam_search(prime, settings), deadline)
            return {"model": model.name, "version": model.version, "samples": texts, "bits": bits, "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}
        if body.stream:
            model = get_model(name, "generate")
            chunks = model.chunks_of(checked(model), settings, seed, chunk=16)
            answer = {"model": model.name, "version": model.version, "seed": seed}
            stops = StopStream(settings.num_samples, settings.stop, settings.include_stop)
            return StreamingResponse(
                events(request, chunks, stops, answer, started, deadline, stream_limiter, metrics),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            model, future = repository.submit(
                name, lambda model: Work(checked(model), settings, seed, deadline))
        except KeyError:
            raise HTTPException(404, detail=f"no model called {name!r}") from None
        except TypeError:
            get_model(name, "generate")  # says what to do instead
            raise
        waiting = asyncio.wrap_future(future)  # cancelling it cancels the work too
        gone = asyncio.ensure_future(disconnected(request))
        done, _ = await asyncio.wait({waiting, gone}, timeout=max(deadline - time.monotonic(), 0),
                                     return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if waiting not in done:
            waiting.cancel()
            if gone in done:
                return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
            raise too_slow()
        try:
            samples = waiting.result()
        except Abandoned:  # its deadline passed, queued or between two chunks: the batcher's clock
            raise too_slow() from None  # can beat the wait's timeout above by a hair
        return {"model": model.name, "version": model.version, "samples": samples, "seed": seed,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}

    @app.post("/v1/models/{name}:score")
    async def score(name: str, body: ScoreRequest):
        """Bits of surprise of each character of `text` (as the model read it), and in all."""
        started = time.monotonic()
        model = get_model(name, "generate")
        scored = await checked_in_thread(lambda: model.score(body.text, limits), started)
        return {"model": model.name, "version": model.version, **scored,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}

    @app.post("/v1/models/{name}:classify")
    async def classify(name: str, body: ClassifyRequest):
        """The likeliest classes of each string, with their probabilities."""
        started = time.monotonic()
        model = get_model(name, "classify")
        answers = await checked_in_thread(lambda: model.classify(body.texts, body.top), started)
        return {"model": model.name, "version": model.version, "classes": answers,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}

    return app


async def disconnected(request):
    """Returns when the client has gone (the body is read already, so the next
    ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def events(request, chunks, stops, answer, started, deadline, limiter, metrics):
    """Server-sent events: one `chunk` event per chunk, then `done` with the
    whole samples, or `error` if the deadline passes or generation fails;
    stops generating as soon as the client goes away or every sample has met
    a stop string (`stops`, a `serving.stops.StopStream`)."""
    while True:
        if time.monotonic() > deadline:
            yield f"event: error\ndata: {json.dumps({'detail': 'the deadline passed; stream ended'})}\n\n"
            return
        try:
            piece = await anyio.to_thread.run_sync(next, chunks, None, limiter=limiter)
        except Exception as error:  # noqa: BLE001  (the 200 is sent: the stream must say it)
            log.exception("a stream of %s failed", answer["model"])
            yield f"event: error\ndata: {json.dumps({'detail': f'generation failed: {error}'})}\n\n"
            return
        chunk = stops.finish() if piece is None else stops.feed(piece)
        metrics.characters.labels(answer["model"]).inc(sum(map(len, chunk)))
        if any(chunk):
            yield f"event: chunk\ndata: {json.dumps({'samples': chunk})}\n\n"
        if piece is None or stops.all_stopped:
            break
        if await request.is_disconnected():
            return
    done = {**answer, "samples": stops.texts,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}
    yield f"event: done\ndata: {json.dumps(done)}\n\n"


def server_config(app, host="127.0.0.1", port=8000, max_connections=512, header_timeout=10.0,
                  **uvicorn_options):
    """uvicorn's settings for `app`: idle kept-alive connections close after 5 s,
    a client slower than `header_timeout` over its headers is cut off, and
    connections past `max_connections` are answered 503 at once."""
    import uvicorn

    protocol = type("Protocol", (SlowHeadersTimeout,), {"timeout": header_timeout})
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=5,
                          limit_concurrency=max_connections, **uvicorn_options)


def serve(models_dir, host="127.0.0.1", port=8000, max_connections=512, **options):
    """Runs the API until interrupted; `options` go to `create_app`."""
    import uvicorn

    with socket.socket() as probe:  # a clear error before the models load, not uvicorn's exit
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as error:  # OverflowError: a port outside 0-65535
            message = getattr(error, "strerror", None) or error
            raise OSError(f"cannot listen on {host}:{port}: {message}") from None
    app = create_app(models_dir, **options)
    header_timeout = options.get("body_timeout", 10.0)
    uvicorn.Server(server_config(app, host, port, max_connections, header_timeout)).run()
