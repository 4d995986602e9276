"""The routes of ``edgekit serve``: the Open Inference Protocol (KServe V2: health, metadata,
infer) and the raw-input predict route; each decodes, calls the data plane, encodes."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .http import ALONE, HttpOptions, raw_items, read_body, rows
from .metrics import ServeMetrics
from .plane import Repository
from .protocol import HEADER, InferRequest, encode_response
from .. import __version__


def routes(repository: Repository, http: HttpOptions, metrics: ServeMetrics) -> list[Route]:
    async def live(request: Request):
        return JSONResponse({"live": True})

    async def ready(request: Request):
        return JSONResponse({"ready": repository.ready}, status_code=200 if repository.ready else 503)

    async def server_metadata(request: Request):
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
        known = await model.lookup_key(parsed.parameters.get("key"), rows(parsed.inputs))
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
            items, rid = await raw_items(request, model, http.max_body_bytes)
            results, info = await model.predict_raw(items, alone=request.scope.get(ALONE, False))
        return JSONResponse({"model_name": model.name, "model_version": model.version, "id": rid or info["request_id"],
                             "request_id": info["request_id"], "source": info["source"], "predictions": results},
                            headers={"X-Request-Id": info["request_id"], "X-Edgekit-Source": info["source"],
                                     "Server-Timing": f"edgekit;dur={(time.perf_counter() - start) * 1000:.3f}"})

    async def prometheus(request: Request):
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    # The router tries routes in order: inference first, so that the hot path matches at once.
    table = [Route(f"{prefix}/infer", infer, methods=["POST"])
             for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")]
    table += [Route(f"{prefix}/predict", predict, methods=["POST"])
              for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}")]
    table += [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
              Route("/metrics", prometheus)]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        table += [Route(prefix, model_metadata), Route(f"{prefix}/ready", model_ready)]
    return table
