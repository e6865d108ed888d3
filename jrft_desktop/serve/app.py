"""The FastAPI application: OpenAI's routes (/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings),
text-embeddings-inference's /predict, vectors added and removed while serving (/v1/vectors), /health and
Prometheus' /metrics. Every route but /health asks for the API key when the server has one."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..core.errors import UserError
from . import errors, generation, reading
from .bank import Bank, Vector, vector_source
from .batching import Engine
from .errors import APIError
from .metrics import Metrics
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest, PredictRequest, VectorRequest, unsupported

log = logging.getLogger("jrft.serve")
OPEN_ROUTES = ("/health",)
NAMED_ROUTES = ("/v1/models/", "/v1/vectors/")  # counted in /metrics without the name
ROUTES = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/predict",
          "/v1/embeddings", "/v1/vectors", "/docs", "/openapi.json")  # any other path is counted as "other"


@dataclass
class Server:
    bank: Bank
    engine: Engine
    metrics: Metrics
    api_key: str | None = None
    max_tokens: int = 512  # an answer's length when a request names none (and its context allows)

    def vector(self, name: str) -> Vector:
        vector = self.bank.get(name)
        if vector is None:
            raise errors.unknown_model(name)
        return vector


class Gate:
    """ASGI middleware: the API key, and the count, latency and log line of every request (a streamed answer's
    latency runs until its last event)."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, state = time.perf_counter(), [500], scope.setdefault("state", {})

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is not None:
                await refusal.response()(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            self._record(scope, status[0], time.perf_counter() - started, state)

    def _refusal(self, scope) -> APIError | None:
        key = self.server.api_key
        if not key or scope["path"] in OPEN_ROUTES:
            return None
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not given:
            return APIError(401, "This server needs an API key: send the header 'Authorization: Bearer KEY'.",
                            code="missing_api_key")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            return APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def _record(self, scope, status: int, seconds: float, state: dict) -> None:
        path = scope["path"]
        route = next((prefix + "{name}" for prefix in NAMED_ROUTES if path.startswith(prefix)),
                     path if path in ROUTES else "other")
        self.server.metrics.request(route, status, seconds)
        note = f" {state['note']}" if "note" in state else ""
        log.info("%s %s %d %.3f s%s", scope["method"], path, status, seconds, note)


def _note(request: Request, model: str, stream: bool = False) -> None:
    """What the request's log line names besides its route and status."""
    request.state.note = f"model={model}" + (" stream" if stream else "")


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="jrft serve", version=__version__,
                  description="Many tuned vectors on one base model, batched together (OpenAI-compatible).")
    errors.install(app)
    app.add_middleware(Gate, server=server)
    _add_info_routes(app, server)
    _add_answer_routes(app, server)
    _add_vector_routes(app, server)
    return app


def _add_info_routes(app: FastAPI, server: Server) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", "base": server.bank.base_name, "vectors": len(server.bank.vectors()) - 1}

    @app.get("/metrics")
    async def metrics():
        server.metrics.vectors = len(server.bank.vectors()) - 1
        return PlainTextResponse(server.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [vector.describe(server.bank.base_name) for vector in server.bank.vectors()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        return server.vector(name).describe(server.bank.base_name)


def _add_answer_routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        unsupported(body)
        _note(request, body.model, body.stream)
        return await generation.chat(server.engine, server.vector(body.model), body, server.max_tokens)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        unsupported(body)
        _note(request, body.model, body.stream)
        return await generation.complete(server.engine, server.vector(body.model), body, server.max_tokens)

    @app.post("/predict")
    async def predict(body: PredictRequest, request: Request):
        _note(request, body.model)
        answers, truncated = await reading.predict(server.engine, server.vector(body.model), body)
        return JSONResponse(answers, headers={"X-Truncated-Inputs": str(truncated)})

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request):
        unsupported(body)
        _note(request, body.model)
        return await reading.embed(server.engine, server.vector(body.model), server.bank.base, body)


def _add_vector_routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/vectors", status_code=201)
    async def add_vector(body: VectorRequest):
        try:
            name, path = vector_source(body.path)
            added = await run_in_threadpool(server.bank.add, [(body.name or name, Path(path))])
        except UserError as error:
            raise APIError(400, str(error), param="path", code="vector_refused") from None
        log.info("added vector %s from %s", added[0].name, path)
        return added[0].describe(server.bank.base_name)

    @app.delete("/v1/vectors/{name:path}")
    async def remove_vector(name: str):
        if server.bank.get(name) is None:
            raise errors.unknown_model(name)
        try:
            server.bank.remove(name)
        except UserError as error:
            raise APIError(400, str(error), param="name") from None
        log.info("removed vector %s", name)
        return {"id": name, "object": "model", "deleted": True}
