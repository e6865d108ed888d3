"""Every refusal in OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx status: a
bad request never becomes a 500, and an unexpected failure is a 500 in the same shape (logged), never a crash."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import UserError

log = logging.getLogger(__name__)
INVALID = "invalid_request_error"


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = INVALID):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def unknown_model(name: str) -> APIError:
    return APIError(404, f"The model {name!r} does not exist here; GET /v1/models lists the base model and every "
                         "vector served.", param="model", code="model_not_found")


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problem = error.errors()[0] if error.errors() else {"type": "", "msg": "invalid request", "loc": ()}
    if problem["type"] == "json_invalid":
        message = ("The request body is not valid JSON (" + problem.get("ctx", {}).get("error", "malformed") + "); "
                   "send a JSON object with Content-Type: application/json.")
        return APIError(400, message, code="invalid_json").response()
    place = [str(part) for part in problem.get("loc", ()) if part != "body"]
    param = ".".join(place) or None
    given = problem.get("input")
    shown = json.dumps(given)[:80] if given is not None and param else ""
    message = (f"Invalid '{param}': " if param else "Invalid request body: ") + problem["msg"] + (
        f" (got {shown})." if shown else ".")
    return APIError(400, message, param=param, code=problem["type"]).response()


def install(app: FastAPI) -> None:
    """The handlers that give every error the OpenAI shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        return APIError(400, str(error)).response()

    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        message = (f"No route {request.method} {request.url.path}; see /docs for the routes." if error.status_code in
                   (404, 405) else str(error.detail))
        return APIError(error.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("Unexpected failure answering %s %s", request.method, request.url.path)
        return APIError(500, f"The server failed to answer ({type(error).__name__}: {error}); the server goes on.",
                        kind="server_error").response()
