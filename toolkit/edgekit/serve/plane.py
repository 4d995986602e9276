"""The server's data plane: models, versions, readiness, inference on decoded tensors.

Transport-free (KServe's and MLServer's split): the HTTP routes decode a request, call one
method here and encode what it returns; tests can drive this without HTTP. Each served model is
an embedded runtime (``edgekit.runtime``: variant fallbacks, validation) with a response cache,
a dynamic batcher where the bundle allows one, and per-request logging to the device store.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import unique_ids
from .._schema import to_dict
from ..errors import EdgekitError, InputError
from ..runtime.cache import OutputCache, key_of
from .batching import AsyncBatcher, Overloaded
from .protocol import ProtocolError, v2_datatype
from ..runtime import load


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 16
    max_delay_ms: float = 2.0
    max_queue: int = 256  # rows waiting per model; beyond that requests are shed with 503
    cache_size: int = 1024  # responses kept per model (0: off)
    timeout_ms: float = 10_000.0  # per request, queueing included
    threads: Optional[int] = None  # per session; None lets the runtime use every core
    workers: int = 1  # batches in flight at once per model
    batching: bool = True
    # A latency budget: shed a request whose expected wait (rows ahead x measured time per row)
    # is longer than this. Keeps accepted requests fast under overload; None: only max_queue.
    # "auto": AUTO_BUDGET x the quickest forward pass served, at least MIN_BUDGET_MS
    # (the default: a queue of
    # 256 rows was a minute of MiniLM work, so nothing was ever shed and p99 reached 3.5 s).
    max_wait_ms: Optional[float] | str = "auto"
    max_request_pixels: int = 64_000_000  # all the pictures of one request together, checked before decoding

    def validate(self) -> None:
        if self.max_batch < 1 or self.max_queue < self.max_batch or self.workers < 1:
            raise EdgekitError("max_batch and workers must be >= 1 and max_queue >= max_batch")
        if self.max_wait_ms != "auto" and self.max_wait_ms is not None and not self.max_wait_ms > 0:
            raise EdgekitError("max_wait_ms must be positive, 'auto', or None (off)")
        if self.max_request_pixels < 1:
            raise EdgekitError("max_request_pixels must be at least 1")
        if self.max_delay_ms < 0 or self.timeout_ms <= 0 or self.cache_size < 0:
            raise EdgekitError("max_delay_ms and cache_size must be >= 0 and timeout_ms > 0")


AUTO_BUDGET = 2.0  # x the quickest forward pass: with its own pass, an accepted request stays near 3x
# ... but never under this: a queue shorter than a few scheduler ticks protects nobody, and a
# sub-millisecond model's budget of 2x its own time would shed well-behaved concurrent clients
MIN_BUDGET_MS = 25.0


# A request that starts sooner than this after the last one ended was waiting for the loop: the
# server is busy, however few requests are in flight at that instant. A lone client's next
# request takes longer than this to come back over loopback.
QUIET_S = 0.0001


class NotFound(ProtocolError):
    def __init__(self, message: str):
        super().__init__(message, 404)


class ServedModel:
    def __init__(self, bundle: str | Path, options: ServeOptions, public_key=None, log_store=None, metrics=None,
                 lookup=None):
        self.options = options
        self.runtime = load(bundle, threads=options.threads, public_key=public_key, spin=False)
        self.name, self.version = self.runtime.name, self.runtime.version or "1"
        self.log_store = log_store
        self.metrics = metrics
        self.lookup = lookup  # precomputed predictions by key (model-in-DB), answered before inference
        self.cache = OutputCache(options.cache_size) if options.cache_size else None
        self.executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix=f"serve-{self.name}")
        self._new_id = unique_ids()
        self.batch_reason = self._batchable()
        self.batcher = None
        if options.batching and self.batch_reason is None:
            self.batcher = AsyncBatcher(self.runtime.predict_validated, self.executor, options.max_batch,
                                        options.max_delay_ms, options.max_queue, options.workers,
                                        on_batch=self._observe_batch, joiner=self.runtime.joiner)

    @property
    def budget_ms(self) -> Optional[float]:
        """The expected-wait budget now (None: off). "auto" derives it from the quickest forward
        pass this server has run, measured on real traffic: timing the model at load would call a
        runtime that may hang or fail there, and keep the server from starting."""
        given = self.options.max_wait_ms
        if given != "auto":
            return given or None
        if self.batcher is None or self.batcher.fastest_ms is None:
            return None
        return max(AUTO_BUDGET * self.batcher.fastest_ms, MIN_BUDGET_MS)

    @property
    def budget_basis(self) -> str:
        given = self.options.max_wait_ms
        if given != "auto":
            return "given" if given else "off: only the queue limit sheds"
        if self.batcher is None:
            return "off: no batching queue"
        fastest = self.batcher.fastest_ms
        return (f"auto: {AUTO_BUDGET:g}x the quickest forward pass ("
                + (f"{fastest:.2f} ms" if fastest is not None else "none yet: nothing is shed before the first")
                + f"), at least {MIN_BUDGET_MS:g} ms")

    def _batchable(self) -> Optional[str]:
        """None when requests can be batched; else why not (said in the model metadata)."""
        fixed = [s["name"] for s in self.runtime.inputs if not (s["shape"] and isinstance(s["shape"][0], str))]
        if fixed:
            return f"inputs {', '.join(fixed)} have a fixed first dimension"
        active = self.runtime.active
        if active is not None and getattr(active.session, "fixed_batch", False):
            return f"the active variant {active.id} was converted with a fixed batch of 1 (requests run one by one)"
        return None

    def _observe_batch(self, rows: int, requests: int) -> None:
        if self.metrics is not None:
            self.metrics.batch(self.name, rows)

    # -- metadata --------------------------------------------------------------------------
    def metadata(self) -> dict:
        def tensor(spec):
            return {"name": spec["name"], "datatype": v2_datatype(spec["dtype"]),
                    "shape": [d if isinstance(d, int) else -1 for d in spec["shape"]]}

        manifest = self.runtime.manifest
        active = self.runtime.active
        return {
            "name": self.name, "versions": [self.version],
            "platform": f"edgekit_{active.info.get('format') if active else 'fallback'}",
            "inputs": [tensor(s) for s in self.runtime.inputs],
            "outputs": [tensor(o.to_dict()) for o in manifest.outputs],
            "parameters": {
                "active_variant": active.id if active else None,
                "dynamic_batching": self.batcher is not None,
                "max_batch_size": self.options.max_batch if self.batcher else 1,
                "batching_note": self.batch_reason or f"up to {self.options.max_batch} rows, "
                                                      f"{self.options.max_delay_ms} ms queue delay",
                "raw_input": self.runtime.preprocess.kind if self.runtime.preprocess else None,
                # dims shown as -1 above that vary between calls: their range, and the length
                # buckets requests are batched within
                "variable_axes": {name: to_dict(axis) for name, axis in manifest.axes.items()},
                "response_cache": self.options.cache_size,
                "latency_budget_ms": self.budget_ms, "latency_budget": self.budget_basis,
            },
        }

    @property
    def ready(self) -> bool:
        return self.runtime.active is not None

    # -- inference ---------------------------------------------------------------------------
    def admit(self) -> None:
        """Shed before reading the body: under overload, parsing requests that will be refused
        anyway is what makes latency climb for the accepted ones."""
        if self.batcher is None:
            return
        if self.batcher.queued_rows >= self.options.max_queue:
            raise Overloaded(f"{self.batcher.queued_rows} rows already queued (limit {self.options.max_queue})",
                             retry_after_s=1.0)
        if self.budget_ms is not None and self.batcher.expected_wait_ms() > self.budget_ms:
            raise Overloaded(f"the expected wait of {self.batcher.expected_wait_ms():.1f} ms exceeds the latency "
                             f"budget of {self.budget_ms:.1f} ms ({self.budget_basis})", retry_after_s=1.0)

    async def lookup_key(self, key, rows: int = 1) -> Optional[tuple[dict, dict]]:
        """(result, output tensors) precomputed for ``key`` (model-in-DB), or None. A key names one
        stored row: a request of ``rows`` > 1 with a key is refused rather than answered with one."""
        if self.lookup is None or key is None or key == "":
            return None
        if not isinstance(key, str) or len(key) > 512:
            raise ProtocolError("parameters.key must be a string of at most 512 characters")
        if rows != 1:
            raise ProtocolError(f"parameters.key names one stored prediction and this request has {rows} rows; "
                                "send one row per key, or no key to run the model")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.lookup.get, self.name, self.version, key)

    def new_request_id(self) -> str:
        """A server-made id, unique across the store's records (never the client's, which repeat)."""
        return self._new_id()

    async def infer(self, inputs: dict[str, np.ndarray], request_id: Optional[str] = None,
                    alone: bool = False) -> tuple[dict, dict]:
        """(outputs, info) for decoded input tensors; info says the source (model, cache) and
        the request id (``request_id``, or a new server-made one). ``alone``: no other request is
        in flight (Repository.begin), so a quick model may answer on the event loop itself."""
        start = time.perf_counter()
        try:
            feeds = self.runtime.validate(inputs)
        except InputError as exc:
            raise ProtocolError(str(exc)) from None
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if rows == 0:
            raise ProtocolError("the request holds no rows; send at least one")
        if self.batcher is not None and rows > self.options.max_queue:
            # never admitted however long the client waits: not a 503 to retry, a 413 to split
            raise ProtocolError(f"the request holds {rows} rows, more than the server queues at once "
                                f"({self.options.max_queue}); split it", 413)
        request_id = request_id or self._new_id()
        key = key_of(feeds) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                outputs = hit[0]
                self._log(feeds, outputs, start, request_id, hit[1], cached=True)
                return outputs, {"cached": True, "source": "cache", "request_id": request_id}
        timeout = self.options.timeout_ms / 1000
        try:
            if self.batcher is not None and alone and self.batcher.can_inline():
                outputs = self.batcher.run_inline(feeds)
            elif self.batcher is not None:
                outputs = await _within(self.batcher.submit(feeds), timeout)
            else:
                loop = asyncio.get_running_loop()
                outputs = await _within(loop.run_in_executor(self.executor, self.runtime.predict_validated, feeds),
                                        timeout)
        except asyncio.TimeoutError:
            raise ProtocolError(f"no answer within {self.options.timeout_ms:.0f} ms", 504) from None
        variant = outputs.pop("__variant__", None)
        fallbacks = outputs.pop("__fallbacks__", None)
        if key is not None and variant:
            self.cache.put(key, (outputs, variant))
        self._log(feeds, outputs, start, request_id, variant, fallbacks=fallbacks)
        return outputs, {"cached": False, "source": "model", "request_id": request_id}

    def _log(self, feeds, outputs, start, request_id, variant, cached=False, fallbacks=None) -> None:
        if self.log_store is None:
            return
        try:
            self.log_store.append(feeds, outputs, self.name, self.version, variant or "",
                                  (time.perf_counter() - start) * 1000,
                                  fallbacks or ([] if variant else ["caller fallback"]),
                                  request_id=request_id, cached=cached)
        except EdgekitError as exc:  # logging never fails a request
            import logging

            logging.getLogger("edgekit.serve").error("%s: could not log request %s: %s", self.name, request_id, exc)

    async def predict_raw(self, items: list, request_id: Optional[str] = None,
                          alone: bool = False) -> tuple[list[dict], dict]:
        """Pictures or sentences through the bundle's own processing, batched like tensors."""
        pre = self.runtime.preprocess
        if pre is None:
            raise ProtocolError(f"model {self.name} declares no input processing; use the infer route with tensors")
        if pre.kind == "image":
            # A remote picture is its bytes. The device runtime also opens a picture by path, which
            # here would read the server's own disk for a client (and /dev/zero until memory ends).
            bad = next((i for i, item in enumerate(items) if not isinstance(item, (bytes, bytearray, np.ndarray))), None)
            if bad is not None:
                raise ProtocolError(f"item {bad} is {type(items[bad]).__name__}; model {self.name} takes pictures as "
                                    'bytes: a binary body, a multipart file, or {"b64": "..."} in JSON instances')
        try:  # decoding pictures takes CPU: off the event loop, so health checks and other requests go on
            feeds = await asyncio.get_running_loop().run_in_executor(None, pre, items, self.options.max_request_pixels)
        except InputError as exc:
            raise ProtocolError(str(exc)) from None
        outputs, info = await self.infer(feeds, request_id, alone=alone)
        return self.runtime.postprocess(outputs), info

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.runtime.close()


class Repository:
    """Models by name and version; the latest loaded version answers when none is named."""

    def __init__(self):
        self.models: dict[str, dict[str, ServedModel]] = {}
        self.loop = None  # the server's event loop, once it runs
        self.inflight = 0  # requests being handled (the HTTP layer counts them)
        self._last_end = 0.0

    def begin(self) -> bool:
        """A request starts; True when it is alone: no other in flight and none ended within
        QUIET_S. Requests that queued while the loop was busy start right after one another, so
        under load this is False and requests go to the batcher, which groups them."""
        self.inflight += 1
        return self.inflight == 1 and time.perf_counter() - self._last_end > QUIET_S

    def end(self) -> None:
        self.inflight -= 1
        self._last_end = time.perf_counter()

    def add(self, model: ServedModel) -> None:
        versions = self.models.setdefault(model.name, {})
        if model.version in versions:
            raise EdgekitError(f"model {model.name} version {model.version} is loaded twice",
                               "give each bundle its own version (edgekit package --version)")
        versions[model.version] = model

    def get(self, name: str, version: Optional[str] = None) -> ServedModel:
        versions = self.models.get(name)
        if not versions:
            raise NotFound(f"unknown model {name!r}; serving {', '.join(sorted(self.models)) or 'nothing'}")
        if version is None:
            return list(versions.values())[-1]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version!r}; it has {', '.join(versions)}")
        return versions[version]

    def all(self) -> list[ServedModel]:
        return [m for versions in self.models.values() for m in versions.values()]

    draining = False  # set on SIGTERM: not ready, so a load balancer moves traffic away first

    @property
    def ready(self) -> bool:
        return not self.draining and bool(self.models) and all(m.ready for m in self.all())


async def _within(awaitable, seconds: float):
    """``awaitable`` or asyncio.TimeoutError after ``seconds``. asyncio.timeout (3.11) cancels in
    place; wait_for wraps the call in one more task, a loop iteration per request."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10
