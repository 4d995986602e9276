"""The Open Inference Protocol (KServe V2) over REST: request and response types, JSON and the
binary-tensor extension. Transport-free: the routes hand bytes in and get bytes back.

A request is a JSON header, optionally followed (``Inference-Header-Content-Length``) by raw
little-endian row-major tensor bytes, one block per input whose ``parameters.binary_data_size``
says how long it is. Outputs come back as JSON lists, or as binary blocks when the request asks
(``binary_data`` per output, or ``binary_data_output`` for all), which is how Triton's clients
ask by default.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import EdgekitError

try:  # several times faster than json on large tensors sent as JSON lists; optional ("serve" extra)
    import orjson
except ImportError:  # pragma: no cover - exercised where the extra is absent
    orjson = None

HEADER = "Inference-Header-Content-Length"
# KServe V2 datatypes <-> numpy
V2_TO_NP = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
            "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
            "FP32": "float32", "FP64": "float64", "BYTES": "object"}
# keyed by the dtype itself: numpy computes dtype.name in Python, a measurable share of a request
_V2_BY_DTYPE = {np.dtype(v): k for k, v in V2_TO_NP.items()}
MAX_ELEMENTS = 1 << 28


class ProtocolError(EdgekitError):
    """A request that does not follow the protocol: HTTP ``status`` with the reason."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def v2_datatype(dtype) -> str:
    return _V2_BY_DTYPE.get(np.dtype(dtype), "BYTES")


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: Optional[str] = None
    parameters: dict = field(default_factory=dict)
    outputs: Optional[tuple[str, ...]] = None  # requested names; None: all
    binary_outputs: frozenset = frozenset()  # names to return as binary blocks
    all_binary: bool = False

    @classmethod
    def parse(cls, body: bytes, header_length: Optional[str] = None) -> "InferRequest":
        """Decode and check an infer request; ProtocolError (400) says what is wrong."""
        if header_length is not None:
            if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
                raise ProtocolError(f"{HEADER} {header_length!r} is not a length within the body")
            head, blob = body[:int(header_length)], memoryview(body)[int(header_length):]
        else:
            head, blob = body, memoryview(b"")
        try:
            request = _loads(head)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the request is not JSON: {str(exc)[:200]}") from None
        if not isinstance(request, dict):
            raise ProtocolError("the request must be a JSON object with 'inputs'")
        rid = request.get("id")
        if rid is not None and (not isinstance(rid, str) or len(rid) > 128):
            raise ProtocolError("'id' must be a string of at most 128 characters")
        parameters = request.get("parameters") or {}
        raw_inputs = request.get("inputs")
        if not isinstance(parameters, dict) or not isinstance(raw_inputs, list) or not raw_inputs:
            raise ProtocolError("'inputs' must be a non-empty list (and 'parameters' an object)")
        inputs: dict[str, np.ndarray] = {}
        offset = 0
        for i, spec in enumerate(raw_inputs):
            array, used = _decode_input(spec, i, blob, offset)
            if array.dtype != object and spec["name"] in inputs:
                raise ProtocolError(f"input {spec['name']!r} is given twice")
            inputs[spec["name"]] = array
            offset += used
        if offset != len(blob):
            raise ProtocolError(f"{len(blob) - offset} bytes of binary data follow that no input claims")
        outputs, binary = None, set()
        if request.get("outputs") is not None:
            if not isinstance(request["outputs"], list):
                raise ProtocolError("'outputs' must be a list")
            names = []
            for out in request["outputs"]:
                if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                    raise ProtocolError("each requested output needs a 'name'")
                names.append(out["name"])
                if (out.get("parameters") or {}).get("binary_data"):
                    binary.add(out["name"])
            outputs = tuple(names)
        return cls(inputs, rid, parameters, outputs, frozenset(binary), bool(parameters.get("binary_data_output")))


def _loads(data):
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(str(exc)) from None
    return json.loads(data, parse_constant=_no_constant)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _decode_input(spec: Any, index: int, blob: memoryview, offset: int) -> tuple[np.ndarray, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProtocolError(f"inputs[{index}] needs a 'name'")
    name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
    if datatype not in V2_TO_NP:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(V2_TO_NP)}")
    if (not isinstance(shape, list) or len(shape) > 8
            or any(type(d) is not int or d < 0 for d in shape)):
        raise ProtocolError(f"input {name!r}: shape must be a list of at most 8 sizes >= 0")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ProtocolError(f"input {name!r}: {count} elements is too many", 413)
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(blob):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} runs past the body")
        chunk = blob[offset:offset + size]
        if datatype == "BYTES":
            return _unpack_bytes(chunk, count, name).reshape(shape), size
        dtype = np.dtype(V2_TO_NP[datatype])
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: {size} bytes for shape {shape} of {datatype} "
                                f"(expected {count * dtype.itemsize})")
        return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape), size
    if "data" not in spec:
        raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    data = spec["data"]
    try:
        if datatype == "BYTES":
            array = np.array(_flatten(data), dtype=object)
        else:
            array = np.asarray(data, dtype=V2_TO_NP[datatype])
    except RecursionError:
        raise ProtocolError(f"input {name!r}: data is nested too deeply; send it flat with its shape") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"input {name!r}: data is not {datatype} ({str(exc)[:120]})") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} values for shape {shape} ({count} expected)")
    return array.reshape(shape), 0


def _flatten(data) -> list:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _unpack_bytes(chunk: memoryview, count: int, name: str) -> np.ndarray:
    """BYTES in binary: each element a 4-byte little-endian length and its bytes."""
    items, pos, raw = [], 0, bytes(chunk)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated BYTES element")
        (length,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + length])
        pos += 4 + length
    if len(items) != count or pos != len(raw):
        raise ProtocolError(f"input {name!r}: {len(items)} BYTES elements for {count} expected")
    return np.array(items, dtype=object)


def encode_response(model_name: str, model_version: str, request: InferRequest,
                    outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (the JSON header length when binary follows)."""
    wanted = request.outputs if request.outputs is not None else tuple(outputs)
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise ProtocolError(f"the model has no output {unknown[0]!r}; it has {', '.join(outputs)}")
    blocks, described = [], []
    for name in wanted:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(array.dtype), "shape": list(array.shape)}
        if request.all_binary or name in request.binary_outputs:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blocks.append(data)
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    response = {"model_name": model_name, "model_version": model_version, "outputs": described}
    if request.id is not None:
        response["id"] = request.id
    head = _dumps(response)
    if not blocks:
        return head, {}
    return head + b"".join(blocks), {HEADER: str(len(head))}


def _dumps(obj) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":")).encode()
