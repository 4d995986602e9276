"""Request bodies for edgekit's HTTP services (the collector and the model server): bounded,
optionally gzip-inflated within a bound, and refused without breaking the client's connection."""

from __future__ import annotations

import asyncio
import os
import zlib

# The longest gap between two pieces of a body (EDGEKIT_BODY_IDLE_S): a client that sends one byte
# and stalls holds a request slot until then, and --max-inflight stalled clients would shut out
# everybody else. Slow links still get 15 s per piece.
BODY_IDLE_S = float(os.environ.get("EDGEKIT_BODY_IDLE_S", "15"))


class BodyError(Exception):
    """A body refused: ``status`` 413 (too large), 408 (stalled) or 400 (malformed), with the reason."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


async def _discard(request, limit: int) -> None:
    """Read (and drop) the rest of a refused body: a client still sending it would otherwise
    meet a reset connection instead of the 413 that tells it what to do. Beyond ``limit`` the
    connection is simply closed."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return
    except Exception:  # the client went away: nothing left to tell it
        return


async def read_body(request, limit: int, inflated_limit: int | None = None) -> bytes:
    """The body, at most ``limit`` bytes as sent; a gzip body inflates to at most
    ``inflated_limit`` (``limit`` when not given: a gzip bomb stops there)."""
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.strip().isascii() and declared.strip().isdigit()):
        raise BodyError(f"Content-Length {declared[:30]!r} is not a byte count", 400)
    if declared is not None and int(declared) > limit:
        await _discard(request, 8 * limit)
        raise BodyError(f"the body of {declared} bytes exceeds the limit of {limit}", 413)
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), BODY_IDLE_S)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise BodyError(f"no byte of the body arrived for {BODY_IDLE_S:.0f} s", 408) from None
        body += chunk
        if len(body) > limit:
            await _discard(request, 8 * limit)
            raise BodyError(f"the body exceeds the limit of {limit} bytes", 413)
    if request.headers.get("content-encoding", "").lower() != "gzip":
        return bytes(body)
    bound = inflated_limit or limit
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = inflater.decompress(bytes(body), bound + 1)
    except zlib.error as exc:
        raise BodyError(f"bad gzip body: {exc}", 400) from None
    if len(raw) > bound or inflater.unconsumed_tail:
        raise BodyError(f"the body inflates beyond {bound} bytes", 413)
    return raw
