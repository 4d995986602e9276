"""The Open Inference Protocol (KServe V2) over REST: request and response types, JSON and the
binary-tensor extension. Transport-free: the routes hand bytes in and get bytes back.

A request is a JSON header, optionally followed (``Inference-Header-Content-Length``) by raw
little-endian row-major tensor bytes, one block per input whose ``parameters.binary_data_size``
says how long it is. Outputs come back as JSON lists, or as binary blocks when the request asks
(``binary_data`` per output, or ``binary_data_output`` for all), which is how Triton's clients
ask by default.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import msgspec
import numpy as np

from .._schema import Meta, locate_error
from ..errors import EdgekitError

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


class InputTensor(msgspec.Struct, frozen=True):
    """One input as the request's JSON header describes it. The protocol's types are msgspec
    Structs like every edgekit document, but unknown keys are ignored: this is a public standard
    that other clients extend, not a file edgekit wrote."""

    name: str
    datatype: Literal[tuple(V2_TO_NP)]
    shape: Annotated[list[Annotated[int, Meta(ge=0)]], Meta(max_length=8)]
    parameters: Optional[dict[str, Any]] = None
    data: Any = msgspec.UNSET


class RequestedOutput(msgspec.Struct, frozen=True):
    name: str
    parameters: Optional[dict[str, Any]] = None


class RequestHeader(msgspec.Struct, frozen=True):
    inputs: Annotated[list[InputTensor], Meta(min_length=1)]
    id: Optional[Annotated[str, Meta(max_length=128)]] = None
    parameters: Optional[dict[str, Any]] = None
    outputs: Optional[list[RequestedOutput]] = None


_DECODER = msgspec.json.Decoder(RequestHeader)


def _header(head: bytes) -> RequestHeader:
    try:
        return _DECODER.decode(head)
    except msgspec.ValidationError as exc:
        if str(exc).startswith("Expected `object`, got") and " - at `" not in str(exc):  # not an object at all
            raise ProtocolError("the request must be a JSON object with 'inputs'") from None
        try:
            data = msgspec.json.decode(head)
        except msgspec.DecodeError:
            data = None
        raise ProtocolError(str(locate_error(RequestHeader, data, exc))) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"the request is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ProtocolError("the request is nested too deeply; send each input's data flat with its shape") from None


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
        request = _header(bytes(head))
        inputs: dict[str, np.ndarray] = {}
        offset = 0
        for spec in request.inputs:
            array, used = _decode_input(spec, blob, offset)
            if array.dtype != object and spec.name in inputs:
                raise ProtocolError(f"input {spec.name!r} is given twice")
            inputs[spec.name] = array
            offset += used
        if offset != len(blob):
            raise ProtocolError(f"{len(blob) - offset} bytes of binary data follow that no input claims")
        outputs, binary = None, set()
        if request.outputs is not None:
            outputs = tuple(out.name for out in request.outputs)
            binary = {out.name for out in request.outputs if (out.parameters or {}).get("binary_data")}
        parameters = request.parameters or {}
        return cls(inputs, request.id, parameters, outputs, frozenset(binary), bool(parameters.get("binary_data_output")))


def _decode_input(spec: InputTensor, blob: memoryview, offset: int) -> tuple[np.ndarray, int]:
    name, datatype, shape = spec.name, spec.datatype, spec.shape
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ProtocolError(f"input {name!r}: {count} elements is too many", 413)
    size = (spec.parameters or {}).get("binary_data_size")
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
    if spec.data is msgspec.UNSET:
        raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    data = spec.data
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
    return msgspec.json.encode(obj)
