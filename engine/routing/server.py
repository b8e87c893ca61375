"""`manymodels serve`: MLflow's own scoring app for the routing model, with the endpoint's guards
in front of it.

* an optional bearer token on everything but the probes (`/ping`, `/health`, `/version`), taken
  from an environment variable or a file and compared in constant time;
* a bound on the request body (413 before MLflow parses anything, whether the client sends a
  Content-Length or streams chunks); the bound on rows per request is the router's (a 400).

uvicorn builds the app in each worker with `create_app`, from the settings `serve_command` put
in the environment (the token itself never appears on a command line).
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from engine.errors import ConfigError
from engine.routing.pyfunc import MAX_ROWS_ENV  # noqa: F401 - the CLI sets it beside the others

MODEL_ENV, MAX_BYTES_ENV = "MANYMODELS_SERVE_MODEL", "MANYMODELS_SERVE_MAX_BYTES"
TOKEN_ENV, TOKEN_FILE_ENV = "MANYMODELS_SERVE_TOKEN", "MANYMODELS_SERVE_TOKEN_FILE"
OPEN_PATHS = frozenset({"/ping", "/health", "/version"})


@dataclass(frozen=True)
class Guards:
    token: Optional[bytes]       # None: no authentication
    max_bytes: int

    @classmethod
    def from_environment(cls) -> "Guards":
        return cls(read_token(), int(os.environ.get(MAX_BYTES_ENV, 10 * 2 ** 20)))


def read_token(environ: Optional[Mapping[str, str]] = None) -> Optional[bytes]:
    """The bearer token from MANYMODELS_SERVE_TOKEN, or the file MANYMODELS_SERVE_TOKEN_FILE names
    (in `environ`, by default this process's environment)."""
    environ = os.environ if environ is None else environ
    path = environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the serving token file {path} ({exc.strerror})") from None
        if not token:
            raise ConfigError(f"the serving token file {path} is empty")
        return token.encode()
    token = environ.get(TOKEN_ENV, "").strip()
    return token.encode() if token else None


def check_host(host: str, allow_remote: bool) -> None:
    """Loopback unless the operator says otherwise: the endpoint has no TLS of its own."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigError(f"--host {host} would accept connections from other machines; serve on 127.0.0.1 "
                          "behind a proxy or ingress, or pass --allow-remote (and set a token)")


class GuardedApp:
    """ASGI middleware: authentication, then the body bound, then MLflow's app."""

    def __init__(self, app, guards: Guards):
        self.app, self.guards = app, guards

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.guards.token is not None and not self._authorized(headers.get(b"authorization", b"")):
            return await _reply(send, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                [(b"www-authenticate", b'Bearer realm="manymodels"')])
        limit = self.guards.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, _too_large(limit))
        body, more = b"", True
        while more:                     # read it all first: a streamed body is bounded too
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await _reply(send, 413, _too_large(limit))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.guards.token)


def _too_large(limit: int) -> str:
    return f"request body is over {limit:,} bytes; split the request (manymodels serve --max-body-mb)"


async def _reply(send, status: int, message: str, headers=()) -> None:
    body = json.dumps({"error_code": "BAD_REQUEST" if status == 413 else "UNAUTHENTICATED",
                       "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class CheckedOnce:
    """The loaded routing model as MLflow's scoring app calls it, each request checked once.

    MLflow's scoring app casts a parsed request to the signature's types, then the pyfunc checks
    the table against the signature again (a new frame, column by column: 0.2 ms, as much as the
    router's whole answer for one entity) before the router checks it once more, more strictly
    (ids, timestamps, grid, horizon, regressors). Here the app parses every column as the router
    takes it (`Any`: JSON values as sent, CSV as text) and a parsed table goes straight to the
    router; anything else (`inputs`/`instances` payloads, another kind of model) takes MLflow's own
    path. Other servers (`mlflow models serve`, spark_udf) enforce the signature as usual."""

    def __init__(self, model):
        from engine.routing.pyfunc import RoutingModel

        self.model = model
        python_model = getattr(model._model_impl, "python_model", None)
        self.router = python_model if isinstance(python_model, RoutingModel) else None
        self.metadata = _ParsedAsSent(model.metadata) if self.router is not None else model.metadata

    def predict(self, data, params=None):
        import pandas as pd

        if self.router is not None and isinstance(data, pd.DataFrame):
            return self.router.predict(None, data, params)
        return self.model.predict(data, params=params)

    def __getattr__(self, name):
        return getattr(self.model, name)


class _ParsedAsSent:
    """A model's metadata whose input schema declares every column `Any` (what the scoring app
    parses requests with); everything else is the model's."""

    def __init__(self, metadata):
        self.metadata = metadata

    def get_input_schema(self):
        from mlflow.types import ColSpec, Schema
        from mlflow.types.schema import AnyType

        schema = self.metadata.get_input_schema()
        return Schema([ColSpec(AnyType(), c.name, required=c.required) for c in schema.inputs])

    def __getattr__(self, name):
        return getattr(self.metadata, name)


def create_app():
    """uvicorn's factory (one call per worker): MLflow's scoring app for the model, guarded."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    guards = Guards.from_environment()
    return GuardedApp(scoring_server.init(CheckedOnce(mlflow.pyfunc.load_model(os.environ[MODEL_ENV]))), guards)


def serve_command(host: str, port: int, workers: int) -> list[str]:
    """uvicorn running `create_app` (the model and limits come from the environment)."""
    return [sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:create_app", "--host", host,
            "--port", str(port), "--workers", str(workers), "--no-access-log",
            "--http", "engine.routing.nodelay:NoDelayHTTPProtocol"]
