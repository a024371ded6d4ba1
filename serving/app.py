"""The HTTP API over a model repository: list models, sample, stream.

TensorFlow never runs on the event loop: plain requests go to each model's
micro-batcher thread, streams to the thread pool one chunk at a time.
"""

import asyncio
import contextlib
import json
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from serving.repository import ModelRepository
from serving.sampler import new_seed

STATIC = Path(__file__).parent / "static"


class SampleRequest(BaseModel):
    """What to generate. Omit `seed` to have one chosen (and returned)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prime: str = Field("", description="text to continue; empty starts from a space")
    length: int = Field(200, ge=0, description="characters to generate per sample")
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass, 1 = off")
    seed: int | None = Field(None, ge=0, lt=2**63)
    num_samples: int = Field(1, ge=1)
    stream: bool = Field(False, description="answer as server-sent events")


def unprocessable(field, message):
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


def field_of(message):
    """The request field a sampler error names (its messages start with it)."""
    first = message.split(" ", 1)[0]
    return first if first in SampleRequest.model_fields else "prime"


def create_app(models_dir, max_length=2000, max_samples=16, rescan_interval=2.0, max_batch_rows=64):
    """The FastAPI app serving the newest version of every model in `models_dir`.

    Args:
        models_dir: str or Path, laid out as `<name>/<version>/`.
        max_length: int, the longest `length` accepted.
        max_samples: int, the most `num_samples` accepted.
        rescan_interval: float, seconds between looks for new versions.
        max_batch_rows: int, the most rows merged into one call of a model.

    Raises:
        ValueError: `models_dir` does not exist.
    """
    repository = ModelRepository(models_dir, rescan_interval, max_batch_rows)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        repository.close()

    app = FastAPI(title="charzoo", description="Sample text from charzoo's character language models.",
                  lifespan=lifespan)
    app.state.repository = repository

    def get_model(name):
        model = repository.get(name)
        if model is None:
            raise HTTPException(404, detail=f"no model called {name!r}")
        return model

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "models": len(repository.models())}

    @app.get("/v1/models")
    def list_models():
        return {"models": [model.describe() for model in repository.models().values()]}

    @app.get("/v1/models/{name}")
    def describe_model(name: str):
        return get_model(name).describe()

    @app.post("/v1/models/{name}:sample")
    async def sample(name: str, body: SampleRequest, request: Request):
        if body.length > max_length:
            raise unprocessable("length", f"length must be <= {max_length}, got {body.length}")
        if body.num_samples > max_samples:
            raise unprocessable("num_samples", f"num_samples must be <= {max_samples}, got {body.num_samples}")
        seed = new_seed() if body.seed is None else body.seed
        settings = body.model_dump(exclude={"prime", "seed", "stream"})
        started = time.perf_counter()
        if body.stream:
            model = get_model(name)
            try:
                chunks = model.stream(body.prime, seed=seed, **settings)
                first = await run_in_threadpool(next, chunks, None)
            except ValueError as error:
                raise unprocessable(field_of(str(error)), str(error)) from None
            return StreamingResponse(
                events(request, model, chunks, first, seed, body.num_samples, started),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:  # submit only queues the request: fine on the event loop
            model, future = repository.submit(name, body.prime, body.length, body.temperature,
                                              body.top_k, body.top_p, seed, body.num_samples)
        except KeyError:
            raise HTTPException(404, detail=f"no model called {name!r}") from None
        except ValueError as error:
            raise unprocessable(field_of(str(error)), str(error)) from None
        samples = await asyncio.wrap_future(future)
        return {"model": model.name, "version": model.version, "samples": samples, "seed": seed,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3)}

    return app


async def events(request, model, chunks, first, seed, num_samples, started):
    """Server-sent events: one `chunk` event per chunk, then `done` with the
    whole samples; stops generating as soon as the client goes away."""
    samples = [""] * num_samples
    chunk = first
    while chunk is not None:
        samples = [a + b for a, b in zip(samples, chunk)]
        yield f"event: chunk\ndata: {json.dumps({'samples': chunk})}\n\n"
        if await request.is_disconnected():
            return
        chunk = await run_in_threadpool(next, chunks, None)
    done = {"model": model.name, "version": model.version, "samples": samples,
            "seed": seed, "elapsed_ms": round((time.perf_counter() - started) * 1000, 3)}
    yield f"event: done\ndata: {json.dumps(done)}\n\n"


def serve(models_dir, host="127.0.0.1", port=8000, **limits):
    """Runs the API with uvicorn until interrupted; `limits` go to `create_app`."""
    import uvicorn

    uvicorn.run(create_app(models_dir, **limits), host=host, port=port)
