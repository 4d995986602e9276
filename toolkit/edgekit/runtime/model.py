"""The embedded runtime: a bundle's variants behind one ``predict`` that never crashes the caller."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._schema import to_dict
from ..bundle import Limits, _inside, open_bundle, sha256_file
from ..errors import BundleError, EdgekitError, InputError, PredictionFailed, first_line
from ..metrics import cosine_rows
from . import registry
from .cache import OutputCache, key_of

log = logging.getLogger("edgekit.runtime")


class Outputs(dict):
    """The outputs of one prediction; ``request_id`` names it in the log (for feedback)."""

    request_id: Optional[str] = None


class _Variant:
    def __init__(self, info: dict, path: Path):
        self.info, self.path = info, path
        self.session = None
        self.failures = 0  # consecutive failures on inputs another variant could answer
        self.demoted = False
        self.retry_at = 0.0  # monotonic time after which a demoted variant gets one more try
        self.backoff_s = 0.0
        self.skip_reason: Optional[str] = None
        self.self_test: Optional[float] = None  # the golden self-test's score here, once run
        self.executor: Optional[ThreadPoolExecutor] = None

    @property
    def id(self) -> str:
        return self.info.get("id") or self.path.name

    def usable(self, now: float) -> bool:
        return not self.demoted or now >= self.retry_at


def self_test_scores(bundle) -> dict[str, float | str]:
    """Each variant's golden self-test score on this machine (the number bring-up compares with
    the manifest's bar), or why it cannot run here."""
    model = RuntimeModel(bundle, fallback=lambda feeds: {})
    try:
        for variant in model.variants:
            model._bring_up(variant)
        return {v.id: v.self_test if v.self_test is not None else (v.skip_reason or "no self-test")
                for v in model.variants}
    finally:
        model.close()


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or infinity: one float64 sum (NaN and inf survive it) instead of an elementwise
    test and a reduction; only a sum that overflows needs the exact elementwise answer."""
    if a.dtype.kind != "f":
        return a.dtype.kind != "c" or bool(np.isfinite(a).all())
    if math.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)):
        return True
    return bool(np.isfinite(a).all())


class RuntimeModel:
    def __init__(self, bundle: str | Path, fallback: Optional[Callable] = None, cache_size: int = 0,
                 timeout_ms: Optional[float] = None, demote_after: int = 3, threads: Optional[int] = None,
                 public_key: Optional[str | Path] = None, log_store=None, retry_demoted_s: float = 30.0,
                 limits: Optional[Limits] = None, spin: bool = True):
        self.root, self.manifest, self._holder = open_bundle(bundle, public_key, limits)
        # onnxruntime's threads spin briefly after each run, as they do by default: waking a
        # parked thread for each of MiniLM's ~100 ops cost a 12-token sentence 2.9 ms against
        # 1.8 ms spinning (2 threads). A server whose workers share the cores turns it off.
        self.spin = spin
        self.name = self.manifest.model.name
        self.version = self.manifest.model.version
        self.inputs = [spec.to_dict() for spec in self.manifest.inputs]
        self.outputs = [o.name for o in self.manifest.outputs]
        self.fallback, self.timeout_ms, self.demote_after, self.threads = fallback, timeout_ms, demote_after, threads
        self.retry_demoted_s = retry_demoted_s
        self.cache = OutputCache(cache_size) if cache_size else None
        self.log_store = log_store
        self._state = threading.Lock()  # demotion and promotion of variants
        self._latencies: deque = deque(maxlen=10_000)
        self._calls = 0
        self._fallbacks: Counter = Counter()
        self._events: deque = deque(maxlen=100)
        try:
            self._golden = self._read_golden()
        except BaseException:
            self.close()
            raise
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self.manifest.inputs}
        # inputs the bundle fixes (a sample rate): fed when the caller leaves them out
        self._constants = {s.name: np.asarray(s.value, s.dtype).reshape([d for d in s.shape if isinstance(d, int)])
                           for s in self.manifest.inputs if s.value is not None}
        self._finite = {s.name for s in self.manifest.inputs if s.must_be_finite}
        from ..processing import Postprocessor, Preprocessor
        from .ragged import Joiner

        processing = self.manifest.processing
        self.preprocess = Preprocessor(processing, self.root) if processing and (processing.image or processing.text) \
            else None
        self.postprocess = Postprocessor(processing, self.outputs)
        self.joiner = Joiner(self.manifest)  # how requests of different lengths share a batch
        self._checks = [(s.name, self._dtypes[s.name], len(s.shape),
                         tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int)),
                         s.name in self._finite and self._dtypes[s.name].kind == "f") for s in self.manifest.inputs]
        self.variants = [_Variant(to_dict(v), _inside(self.root, v.file)) for v in self.manifest.variants]
        self.active: Optional[_Variant] = None
        for variant in self.variants:
            if self._bring_up(variant):
                self.active = variant
                break
        if self.active is None and fallback is None:
            reasons = "; ".join(f"{v.id}: {v.skip_reason}" for v in self.variants)
            self.close()
            raise PredictionFailed(f"no variant of {self.name} could run here ({reasons})",
                                   "install the runtime a variant needs, or pass fallback=")

    # -- bring-up -------------------------------------------------------------------------
    def _read_golden(self):
        golden = self.manifest.golden
        if golden is None:
            return None
        path = _inside(self.root, golden.file)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                inputs = {k.split(":", 1)[1]: npz[k] for k in npz.files if k.startswith("input:")}
                outputs = [npz[f"output:{name}"] for name in self.outputs]
        except (ValueError, OSError, KeyError, EOFError) as exc:
            raise BundleError(f"{golden.file} in the bundle is not readable self-test data ({type(exc).__name__}: {exc})",
                              "rebuild the bundle with edgekit package") from None
        if set(inputs) != set(self._input_names()):
            raise BundleError(f"{golden.file} holds inputs {sorted(inputs)}, the model takes {self._input_names()}",
                              "rebuild the bundle with edgekit package")
        return inputs, outputs, golden.min_cosine

    def _input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    def _bring_up(self, variant: _Variant) -> bool:
        """Verify, open and self-test one variant; on failure record why and return False."""
        if variant.session is not None:
            return True
        if variant.skip_reason:
            return False
        info = variant.info
        runtime = info.get("runtime", "onnxruntime")
        if not registry.available(runtime):
            return self._skip(variant, f"runtime {runtime} is not installed")
        if not variant.path.exists():
            return self._skip(variant, "file missing from the bundle")
        if sha256_file(variant.path) != info.get("sha256"):
            return self._skip(variant, "sha256 mismatch: the file was altered")
        try:
            session = registry.open_variant(runtime, variant.path, {**info, "allow_spinning": self.spin}, self.threads,
                                            (self.inputs, [o.to_dict() for o in self.manifest.outputs]))
        except Exception as exc:
            return self._skip(variant, f"cannot load: {first_line(exc, 200)}")
        wanted = info.get("provider", "cpu")
        active = getattr(session, "active_provider", "cpu")
        if wanted not in ("cpu", "xnnpack") and active != wanted:
            return self._skip(variant, f"provider {wanted} not active (runtime fell back to {active})")
        if self._golden is not None:
            inputs, expected, min_cos = self._golden
            try:
                got = session.run_batched(inputs) if hasattr(session, "run_batched") else session.run(inputs)
            except Exception as exc:
                return self._skip(variant, f"self-test raised {type(exc).__name__}: {exc}")
            if not all(_all_finite(g) for g in got):
                return self._skip(variant, "self-test produced non-finite outputs")
            score = min(float(cosine_rows(e, g).mean()) for g, e in zip(got, expected))
            variant.self_test = score
            if score < min_cos:
                return self._skip(variant, f"self-test mean cosine {score:.4f} < {min_cos}")
        variant.session = session
        if self.timeout_ms:
            variant.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edgekit-{variant.id}")
        return True

    def _skip(self, variant: _Variant, reason: str) -> bool:
        variant.skip_reason = reason
        log.warning("%s: variant %s skipped: %s", self.name, variant.id, reason)
        self._events.append({"time": time.time(), "variant": variant.id, "event": "skipped", "reason": reason})
        return False

    # -- inputs ---------------------------------------------------------------------------
    def validate(self, inputs: dict) -> dict[str, np.ndarray]:
        # The common case, checked cheaply: exactly the expected arrays, dtypes and fixed dims.
        # Per-call Python work is what a small model's throughput is made of.
        if type(inputs) is dict and len(inputs) == len(self._checks):
            for name, want, rank, fixed, finite in self._checks:
                value = inputs.get(name)
                if (type(value) is not np.ndarray or value.dtype != want or value.ndim != rank
                        or any(value.shape[i] != d for i, d in fixed) or (finite and not _all_finite(value))):
                    break
            else:
                return inputs
        return self._validate_slowly(inputs)

    def _validate_slowly(self, inputs: dict) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict):
            raise InputError(f"inputs must be a dict of arrays keyed by {', '.join(self._dtypes)}")
        if self._constants:
            inputs = {**self._constants, **inputs}
        missing = [n for n in self._dtypes if n not in inputs]
        extra = [n for n in inputs if n not in self._dtypes]
        if missing or extra:
            raise InputError(f"inputs {'missing ' + ', '.join(missing) if missing else ''}"
                             f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra) if extra else ''}",
                             f"{self.name} takes {', '.join(self._dtypes)}")
        out = {}
        for spec in self.inputs:
            name, want = spec["name"], self._dtypes[spec["name"]]
            value = inputs[name]
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
            if value.dtype != want:
                same_kind = value.dtype.kind == want.kind or (value.dtype.kind in "iu" and want.kind in "iu")
                if not same_kind:
                    raise InputError(f"input {name!r} is {value.dtype}, expected {want}",
                                     f"convert it with .astype('{want}')")
                value = value.astype(want)
            shape = spec["shape"]
            if len(value.shape) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, value.shape)):
                expected = "x".join(str(d) for d in shape)
                raise InputError(f"input {name!r} has shape {'x'.join(map(str, value.shape))}, expected {expected}",
                                 "named dimensions may take any size; numbers must match")
            if name in self._finite and value.dtype.kind == "f" and not _all_finite(value):
                raise InputError(f"input {name!r} holds NaN or infinite values",
                                 "clean the input; the model's variants give meaningless outputs for them")
            out[name] = value
        return out

    # -- prediction -----------------------------------------------------------------------
    def predict(self, inputs: dict, _validated: bool = False) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        feeds = inputs if _validated else self.validate(inputs)
        key = None
        if self.cache is not None:
            key = key_of(feeds)
            hit = self.cache.get(key)  # a private copy: callers may edit what they get
            if hit is not None:
                self._record(start)
                return self._log(feeds, hit[0], start, hit[1], cached=True) if self.log_store is not None else hit[0]
        outputs, answered_by, fallbacks = self._run_chain(feeds)
        if key is not None and answered_by is not None:
            self.cache.put(key, (outputs, answered_by))
        self._record(start)
        if self.log_store is not None:
            return self._log(feeds, outputs, start, answered_by, fallbacks=fallbacks)
        return outputs

    def predict_validated(self, feeds: dict) -> dict:
        """For a server that validates, caches and logs per request itself: the fallback chain
        on validated feeds. The id of the variant that answered comes back under ``__variant__``
        (None when the caller's fallback did), and why earlier variants did not under ``__fallbacks__``."""
        start = time.perf_counter()
        outputs, answered_by, fallbacks = self._run_chain(feeds)
        self._record(start)
        outputs = dict(outputs)
        outputs["__variant__"] = answered_by
        outputs["__fallbacks__"] = fallbacks
        return outputs

    def predict_raw(self, data):
        """Pictures or sentences in (one, or a list), results out: the bundle's own processing
        around ``predict``. One item gives one result dict, a list a list of them; each result
        holds the outputs (labels, scores and top k where the bundle declares classes) and, with a
        log store, the ``request_id`` to give feedback on."""
        if self.preprocess is None:
            raise InputError(f"{self.name} declares no input processing",
                             "call predict() with tensors, or package the model with --processing")
        single = not isinstance(data, (list, tuple))
        items = [data] if single else list(data)
        outputs = self.predict(self.preprocess(items))
        results = self.postprocess(outputs)
        request_id = getattr(outputs, "request_id", None)
        if request_id:
            for row, result in enumerate(results):
                result["request_id"], result["row"] = request_id, row
        return results[0] if single else results

    def _log(self, feeds, outputs, start, answered_by: Optional[str], cached: bool = False,
             fallbacks: Optional[list] = None) -> "Outputs":
        """Append to the device log store; logging trouble never breaks a prediction."""
        result = Outputs(outputs)
        try:
            result.request_id = self.log_store.append(
                feeds, outputs, self.name, self.version, answered_by or "",
                (time.perf_counter() - start) * 1000, fallbacks or ([] if answered_by else ["caller fallback"]),
                cached=cached)
        except Exception as exc:
            log.error("%s: could not log the prediction: %s", self.name, exc)
        return result

    def feedback(self, request_id: str, label=None, outcome=None) -> None:
        """Attach user feedback (a label, an outcome) to a logged prediction."""
        if self.log_store is None:
            raise EdgekitError("this model logs nowhere", "pass log_store=LogStore(...) to load()")
        self.log_store.feedback(request_id, label=label, outcome=outcome)

    def _record(self, start: float) -> None:
        self._calls += 1
        self._latencies.append((time.perf_counter() - start) * 1000)

    def _candidates(self):
        """The variants to try, in the bundle's order: healthy ones, and demoted ones whose
        back-off has passed (one more chance each time it does)."""
        now = time.monotonic()
        for variant in self.variants:
            if variant.usable(now) and self._bring_up(variant):
                yield variant

    def _run_chain(self, feeds) -> tuple[dict, Optional[str], list[str]]:
        """(outputs, id of the variant that answered (None when the caller's fallback did), why the
        variants ahead of it did not: failed in this call, or demoted by earlier failures). A
        variant this device could never run is not a fallback: the bundle offers alternatives."""
        failed: list[tuple[_Variant, str]] = []
        tried: set[str] = set()
        for variant in self._candidates():
            tried.add(variant.id)
            try:
                result = self._run_variant(variant, feeds)
            except Exception as exc:  # any runtime failure moves this call on down the chain
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                if all(_all_finite(r) for r in result):
                    # Another variant answered this input, so the earlier failures were theirs.
                    for bad, why in failed:
                        self._failed(bad, why)
                    self._succeeded(variant)
                    return dict(zip(self.outputs, result)), variant.id, self._why_not(variant, failed, tried)
                reason = "non-finite output"
            self._note(variant.id, reason)
            failed.append((variant, reason))
        if failed:
            # No variant could answer: the input, not a variant, is the likely culprit, so
            # nothing is demoted (a stream of bad inputs must not take the model down).
            self._events.append({"time": time.time(), "variant": None, "event": "input failed on every variant",
                                 "reason": failed[-1][1]})
        if self.fallback is not None:
            self._note("caller", "caller fallback: every variant failed")
            return dict(self.fallback(feeds)), None, [f"{v.id}: {why}" for v, why in failed] + ["caller fallback"]
        raise PredictionFailed(f"every variant of {self.name} failed for this input",
                               "see model.stats()['events'], or pass fallback= to load()")

    def _why_not(self, answered: _Variant, failed: list, tried: set) -> list[str]:
        reasons = [f"{v.id}: {why}" for v, why in failed]
        for variant in self.variants:
            if variant is answered:
                break
            if variant.id not in tried and variant.demoted:
                reasons.append(f"{variant.id}: demoted")
        return reasons

    def _run_variant(self, variant: _Variant, feeds):
        if variant.executor is None:
            return variant.session.run(feeds)
        future = variant.executor.submit(variant.session.run, feeds)
        try:
            return future.result(timeout=self.timeout_ms / 1000)
        except FutureTimeout:
            # The stuck call cannot be interrupted; its thread is abandoned with its executor.
            variant.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edgekit-{variant.id}")
            raise TimeoutError(f"no answer within {self.timeout_ms} ms") from None

    def _failed(self, variant: _Variant, reason: str) -> None:
        with self._state:
            variant.failures += 1
            if variant.demoted:  # failed its retry: wait twice as long before the next one
                variant.backoff_s = min(variant.backoff_s * 2, 3600.0)
                variant.retry_at = time.monotonic() + variant.backoff_s
                return
            if variant.failures < self.demote_after:
                return
            variant.demoted, variant.backoff_s = True, self.retry_demoted_s
            variant.retry_at = time.monotonic() + variant.backoff_s
            self._events.append({"time": time.time(), "variant": variant.id, "event": "demoted",
                                 "reason": f"{variant.failures} consecutive failures ({reason}); "
                                           f"retried after {variant.backoff_s:.0f} s"})
            log.warning("%s: variant %s demoted after %d consecutive failures", self.name, variant.id, variant.failures)
            self._pick_active()

    def _succeeded(self, variant: _Variant) -> None:
        if variant.failures == 0 and not variant.demoted:
            return
        with self._state:
            variant.failures = 0
            if variant.demoted:
                variant.demoted, variant.backoff_s = False, 0.0
                self._events.append({"time": time.time(), "variant": variant.id, "event": "restored",
                                     "reason": "answered again after its back-off"})
                log.warning("%s: variant %s restored", self.name, variant.id)
                self._pick_active()

    def _pick_active(self) -> None:
        self.active = next((v for v in self.variants if not v.demoted and self._bring_up(v)), None)

    def _note(self, variant: str, reason: str) -> None:
        kind = reason.split(":")[0]
        self._fallbacks[kind] += 1
        self._events.append({"time": time.time(), "variant": variant, "event": "fallback", "reason": reason})
        log.warning("%s: fallback from %s: %s", self.name, variant, reason)

    # -- helpers --------------------------------------------------------------------------
    def batched(self, max_batch_size: int = 16, max_delay_ms: float = 5.0, workers: int = 1):
        """A thread-safe callable that groups concurrent requests into one forward pass;
        ``workers`` batches may run at once (use with ``threads=1`` sessions on small cores)."""
        odd = [s["name"] for s in self.inputs if s.get("batch_axis", 0) not in (0, None) or s.get("state_of")]
        if odd:
            raise InputError(f"{self.name} takes {', '.join(odd)} with the batch on another axis or as a recurrent "
                             "state", "call predict() per stream; requests of different streams cannot share a batch")
        static = [s["name"] for s in self.inputs if s.get("value") is None and s.get("batch_axis", 0) is not None
                  and not (s["shape"] and isinstance(s["shape"][0], str))]
        if static:
            raise InputError(f"{self.name} has a fixed batch dimension on {', '.join(static)}",
                             "micro-batching needs a dynamic first dimension; re-export with one")
        if self.active is not None and getattr(self.active.session, "fixed_batch", False):
            raise InputError(f"the active variant {self.active.id} was converted with a fixed batch of 1, so a "
                             "batch would run row by row", "package a variant with a dynamic batch (ONNX) first")
        from .batching import MicroBatcher

        return MicroBatcher(self, max_batch_size, max_delay_ms, workers)

    def stats(self) -> dict:
        lat = np.asarray(self._latencies) if self._latencies else np.zeros(1)
        return {
            "calls": self._calls, "active_variant": self.active.id if self.active else None,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                           "p99": float(np.percentile(lat, 99))},
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses, "size": len(self.cache)} if self.cache else None,
            "fallbacks": sum(self._fallbacks.values()), "fallbacks_by_reason": dict(self._fallbacks),
            "variants": [{"id": v.id, "format": v.info.get("format"), "precision": v.info.get("precision"),
                          "loaded": v.session is not None, "skipped": v.skip_reason, "demoted": v.demoted,
                          "provider": getattr(v.session, "active_provider", None)} for v in self.variants],
            "events": list(self._events),
        }

    def close(self) -> None:
        for variant in self.variants:
            if variant.executor:
                variant.executor.shutdown(wait=False)
        if self._holder is not None:
            self._holder.cleanup()
