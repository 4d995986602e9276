"""``edgekit serve``'s HTTP side: the Open Inference Protocol (KServe V2) and a raw-input route,
on Starlette and uvicorn. Each route decodes, calls the data plane (``plane.py``), encodes.

    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{m}[/versions/{v}]        model metadata (batching and processing included)
    GET  /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer  JSON tensors or the binary-tensor extension
    POST /v1/models/{m}[/versions/{v}]/predict  pictures or text through the bundle's processing
    GET  /metrics                              Prometheus
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time

from ..errors import EdgekitError, PredictionFailed
from .batching import Overloaded
from .http import ALONE, OPEN, HttpOptions, error
from .metrics import ServeMetrics
from .plane import Repository
from .protocol import ProtocolError

access = logging.getLogger("edgekit.serve.access")
log = logging.getLogger("edgekit.serve")


def create_app(repository: Repository, http: HttpOptions = HttpOptions(), ui=None):
    """The routes (``routes.py``), the browser UI mounted at /ui, errors as JSON, and the guard."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    from .routes import routes as serve_routes

    metrics = ServeMetrics(repository.all)
    routes = serve_routes(repository, http, metrics)
    if ui is not None:
        # Gradio's page links these at the site's root, above its mount: send them to the mount
        routes += [Route(path, _redirect(f"/ui{path}")) for path in ("/favicon.ico", "/manifest.json")]
        routes.append(Mount("/ui", app=ui))

    async def protocol_error(request, exc: ProtocolError):
        return error(exc.status, exc.message)

    async def overloaded(request, exc: Overloaded):
        metrics.shed.labels(_model(request.url.path)).inc()
        return error(503, exc.message, {"Retry-After": str(int(exc.retry_after_s + 0.999))})

    async def failed(request, exc: PredictionFailed):
        return error(500, str(exc))

    async def edgekit_error(request, exc: EdgekitError):
        return error(400, str(exc))

    async def unexpected(request, exc: Exception):  # a bug: logged with its traceback, one line out
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import asyncio

        repository.loop = asyncio.get_running_loop()  # the UI's worker threads submit here
        async with contextlib.AsyncExitStack() as stack:
            if ui is not None:  # a mounted app's lifespan does not run by itself (Gradio starts its queue there)
                await stack.enter_async_context(ui.router.lifespan_context(ui))
            yield
        for model in repository.all():  # shutting down: answer everything already queued, then let go
            if model.batcher is not None:
                await model.batcher.drain()
        for model in repository.all():
            model.close()

    handlers = {ProtocolError: protocol_error, Overloaded: overloaded, PredictionFailed: failed,
                EdgekitError: edgekit_error, Exception: unexpected}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    return _Guard(app, repository, metrics, http)


class _Guard:
    """ASGI middleware: bearer auth, access log and request metrics (errors become 4xx/5xx JSON
    in the app's exception handlers). Plain ASGI rather than Starlette's BaseHTTPMiddleware,
    which costs a task per request."""

    def __init__(self, app, repository, metrics: ServeMetrics, http: HttpOptions):
        self.app, self.repository, self.metrics, self.http = app, repository, metrics, http
        for model in repository.all():
            model.metrics = metrics
        # Labels only for the models served: a name from the URL of a 404 would otherwise add a
        # series per request (unbounded memory).
        self.known = {m.name for m in repository.all()}
        self.token = http.token.encode() if http.token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        repository = self.repository
        if repository.inflight >= self.http.max_inflight and path not in OPEN:
            self.metrics.shed.labels(self._model(path)).inc()
            response = error(503, f"{repository.inflight} requests in flight (limit {self.http.max_inflight})",
                              {"Retry-After": "1"})
            await response(scope, receive, send)
            return
        scope[ALONE] = repository.begin()
        self.metrics.inflight.inc()
        try:
            if self.token and path not in OPEN and not self._authorised(scope):
                response = error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, sending)
                return
            await self.app(scope, receive, sending)
        finally:
            repository.end()
            self.metrics.inflight.dec()
            seconds = time.perf_counter() - start
            self._count(path, status["code"], seconds)
            if access.isEnabledFor(logging.INFO):
                access.info(json.dumps({"time": round(time.time(), 3), "method": scope.get("method"), "path": path,
                                        "status": status["code"], "ms": round(seconds * 1000, 3),
                                        "client": (scope.get("client") or ["-"])[0]}))

    def _model(self, path: str) -> str:
        name = _model(path)
        return name if name in self.known else "-"

    def _count(self, path: str, code: int, seconds: float) -> None:
        model, route = self._model(path), _route(path)
        self.metrics.child(self.metrics.requests, model, route, str(code)).inc()
        if route in ("infer", "predict"):
            self.metrics.child(self.metrics.latency, model, route).observe(seconds)

    def _authorised(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                return hmac.compare_digest(value[7:], self.token)
        return False


def _redirect(to: str):
    from starlette.responses import RedirectResponse

    async def redirect(request):
        return RedirectResponse(to, status_code=308)

    return redirect


def _route(path: str) -> str:
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail in ("infer", "predict", "ready", "live", "metrics") else "metadata"


def _model(path: str) -> str:
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "models" else "-"
