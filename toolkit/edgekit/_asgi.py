"""Request bodies for edgekit's HTTP services (the collector and the model server): bounded,
optionally gzip-inflated within a bound, and refused without breaking the client's connection."""

from __future__ import annotations

import zlib


class BodyError(Exception):
    """A body refused: ``status`` 413 (too large) or 400 (malformed), with the reason."""

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
    async for chunk in request.stream():
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
