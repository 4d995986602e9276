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

import base64
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Optional

from .._asgi import BodyError
from .._asgi import read_body as _read_body
from ..errors import EdgekitError, PredictionFailed
from .batching import Overloaded
from .metrics import ServeMetrics
from .plane import Repository
from .protocol import HEADER, InferRequest, ProtocolError, encode_response

access = logging.getLogger("edgekit.serve.access")
log = logging.getLogger("edgekit.serve")
OPEN = ("/v2/health/live", "/v2/health/ready")  # probes need no token
ALONE = "edgekit.alone"  # set in the scope by _Guard: no other request in flight (Repository.begin)


@dataclass(frozen=True)
class HttpOptions:
    max_body_bytes: int = 64 * 1024 * 1024
    token: Optional[str] = None  # bearer token; None: no authentication
    max_inflight: int = 1024  # requests being handled at once; beyond: 503 before reading anything


def _error(status: int, message: str, headers: Optional[dict] = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request, limit: int) -> bytes:
    """The body within ``limit`` (413 beyond, also once inflated), as a ProtocolError."""
    try:
        return await _read_body(request, limit)
    except BodyError as exc:
        raise ProtocolError(exc.message, exc.status) from None


def create_app(repository: Repository, http: HttpOptions = HttpOptions(), ui=None):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    metrics = ServeMetrics(repository.all)

    async def live(request: Request):
        return JSONResponse({"live": True})

    async def ready(request: Request):
        return JSONResponse({"ready": repository.ready}, status_code=200 if repository.ready else 503)

    async def server_metadata(request: Request):
        from .. import __version__

        return JSONResponse({"name": "edgekit", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_repository_metadata", "raw_input_predict"],
                             "models": [{"name": m.name, "version": m.version} for m in repository.all()]})

    def model_of(request: Request):
        return repository.get(request.path_params["model"], request.path_params.get("version"))

    async def model_metadata(request: Request):
        return JSONResponse(model_of(request).metadata())

    async def model_ready(request: Request):
        model = model_of(request)
        return JSONResponse({"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503)

    async def infer(request: Request):
        start = time.perf_counter()
        model = model_of(request)
        model.admit()
        body = await read_body(request, http.max_body_bytes)
        parsed = InferRequest.parse(body, request.headers.get(HEADER.lower()))
        known = await model.lookup_key(parsed.parameters.get("key"), _rows(parsed.inputs))
        if known is not None:  # precomputed (edgekit predict): no inference at all
            outputs, info = known[1], {"source": "lookup", "request_id": model.new_request_id()}
        else:  # logged under the server's own id: clients reuse theirs ("0", "same"), records must not merge
            outputs, info = await model.infer(parsed.inputs, alone=request.scope.get(ALONE, False))
        data, headers = encode_response(model.name, model.version, parsed, outputs)
        headers["X-Request-Id"] = info["request_id"]
        headers["X-Edgekit-Source"] = info["source"]
        headers["Server-Timing"] = f"edgekit;dur={(time.perf_counter() - start) * 1000:.3f}"
        media = "application/octet-stream" if HEADER in headers else "application/json"
        return Response(data, media_type=media, headers=headers)

    async def predict(request: Request):
        start = time.perf_counter()
        model = model_of(request)
        model.admit()
        known = await model.lookup_key(request.query_params.get("key"))
        if known is not None:  # precomputed (edgekit predict): answered from the table
            rid = request.query_params["key"]
            results, info = [known[0]], {"source": "lookup", "request_id": model.new_request_id()}
        else:
            items, rid = await _raw_items(request, model, http.max_body_bytes)
            results, info = await model.predict_raw(items, alone=request.scope.get(ALONE, False))
        return JSONResponse({"model_name": model.name, "model_version": model.version, "id": rid or info["request_id"],
                             "request_id": info["request_id"], "source": info["source"], "predictions": results},
                            headers={"X-Request-Id": info["request_id"], "X-Edgekit-Source": info["source"],
                                     "Server-Timing": f"edgekit;dur={(time.perf_counter() - start) * 1000:.3f}"})

    async def prometheus(request: Request):
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    # The router tries routes in order: inference first, so that the hot path matches at once.
    routes = [Route(f"{prefix}/infer", infer, methods=["POST"])
              for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")]
    routes += [Route(f"{prefix}/predict", predict, methods=["POST"])
               for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}")]
    routes += [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
               Route("/metrics", prometheus)]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [Route(prefix, model_metadata), Route(f"{prefix}/ready", model_ready)]
    if ui is not None:
        # Gradio's page links these at the site's root, above its mount: send them to the mount
        routes += [Route(path, _redirect(f"/ui{path}")) for path in ("/favicon.ico", "/manifest.json")]
        routes.append(Mount("/ui", app=ui))

    async def protocol_error(request, exc: ProtocolError):
        return _error(exc.status, exc.message)

    async def overloaded(request, exc: Overloaded):
        metrics.shed.labels(_model(request.url.path)).inc()
        return _error(503, exc.message, {"Retry-After": str(int(exc.retry_after_s + 0.999))})

    async def failed(request, exc: PredictionFailed):
        return _error(500, str(exc))

    async def edgekit_error(request, exc: EdgekitError):
        return _error(400, str(exc))

    async def unexpected(request, exc: Exception):  # a bug: logged with its traceback, one line out
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

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
            response = _error(503, f"{repository.inflight} requests in flight (limit {self.http.max_inflight})",
                              {"Retry-After": "1"})
            await response(scope, receive, send)
            return
        scope[ALONE] = repository.begin()
        self.metrics.inflight.inc()
        try:
            if self.token and path not in OPEN and not self._authorised(scope):
                response = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
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


def _rows(inputs: dict) -> int:
    """The batch a request carries: the first dimension of its first input (1 for a scalar)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


async def _raw_items(request, model, limit: int) -> tuple[list, Optional[str]]:
    """Pictures or sentences from a JSON body ({"instances": [...], "id"?}; pictures as
    {"b64": ...}), a multipart upload (every file field), text/plain, or a raw picture body."""
    kind = model.runtime.preprocess.kind if model.runtime.preprocess else ""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)  # the whole body within --max-body-mb, multipart included
    if content_type == "multipart/form-data":
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=256, max_fields=256,
                                         max_part_size=limit).parse()
        except MultiPartException as exc:
            raise ProtocolError(f"the upload is not valid multipart: {exc.message}") from None
        items = [await f.read() for _, f in form.multi_items() if hasattr(f, "read")]
        await form.close()
        if not items:
            raise ProtocolError("the upload holds no file")
        return items, None
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ProtocolError(f"the request is not JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list) or not data["instances"]:
            raise ProtocolError('send {"instances": [...]}: sentences, or pictures as {"b64": "..."}')
        items = []
        for i, item in enumerate(data["instances"]):
            if isinstance(item, dict) and "b64" in item:
                try:
                    item = base64.b64decode(item["b64"], validate=True)
                except (ValueError, TypeError):
                    raise ProtocolError(f"instances[{i}].b64 is not base64") from None
            items.append(item)
        rid = data.get("id")
        return items, rid if isinstance(rid, str) and len(rid) <= 128 else None
    if content_type.startswith("text/"):
        try:
            return [body.decode("utf-8")], None
        except UnicodeDecodeError:
            raise ProtocolError("the text is not UTF-8") from None
    if kind == "text":
        raise ProtocolError(f"model {model.name} takes text: send text/plain or JSON instances", 415)
    return [body], None
