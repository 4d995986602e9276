"""Hot reload: an app's model switches bundles between two requests.

``HotModel`` holds one loaded :class:`RuntimeModel` and hands each call the one that is current
when the call starts. ``swap(bundle)`` loads the new bundle completely (every variant opened, the
golden self-test run) *before* the switch, so no request meets a half-loaded model; calls already
running finish on the old one, which is closed once the last of them returns. A bundle that does
not load leaves the old model serving and raises.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from .model import RuntimeModel
from . import load


class HotModel:
    def __init__(self, bundle: str | Path, loader: Optional[Callable[[Path], RuntimeModel]] = None,
                 shadow_backlog: int = 64, **options):
        self._loader = loader or (lambda path: load(path, **options))
        # The shadow model logs through the same store itself (its records carry its version);
        # it never logs through the runtime, which would give it request ids of its own.
        self._shadow_loader = lambda path: load(path, **{k: v for k, v in options.items() if k != "log_store"})
        self._store = options.get("log_store")
        self._lock = threading.Lock()
        self._model = self._loader(Path(bundle))
        self._bundle = Path(bundle)
        self._users = {id(self._model): 0}
        self._retired: dict[int, RuntimeModel] = {}
        self.swaps = 0
        self._shadow: Optional[RuntimeModel] = None
        self._shadow_pool = None
        self._shadow_backlog, self._shadow_pending = shadow_backlog, 0
        self.shadow_skipped = 0

    @property
    def model(self) -> RuntimeModel:
        return self._model

    @property
    def bundle(self) -> Path:
        return self._bundle

    @property
    def version(self) -> Optional[str]:
        return self._model.version

    @contextmanager
    def _current(self):
        with self._lock:
            model = self._model
            self._users[id(model)] = self._users.get(id(model), 0) + 1
        try:
            yield model
        finally:
            with self._lock:
                self._users[id(model)] -= 1
                retired = self._retired.get(id(model)) if self._users[id(model)] == 0 else None
                if retired is not None:
                    del self._retired[id(model)], self._users[id(model)]
            if retired is not None:
                retired.close()

    def swap(self, bundle: str | Path) -> RuntimeModel:
        """Load ``bundle`` fully, then make it the model of every call that starts from now."""
        new = self._loader(Path(bundle))  # raises on a bundle that does not load: nothing changes
        with self._lock:
            old, self._model, self._bundle = self._model, new, Path(bundle)
            self._users.setdefault(id(new), 0)
            idle = self._users.get(id(old), 0) == 0
            if idle:
                self._users.pop(id(old), None)
            else:
                self._retired[id(old)] = old
            self.swaps += 1
        if idle:
            old.close()
        return new

    def predict(self, inputs: dict, **kwargs):
        with self._current() as model:
            out = model.predict(inputs, **kwargs)
        if self._shadow is not None:
            self._shadow_submit(inputs, out)
        return out

    # -- shadow mode ------------------------------------------------------------------------------
    @property
    def shadow_version(self) -> Optional[str]:
        return self._shadow.version if self._shadow is not None else None

    def set_shadow(self, bundle: Optional[str | Path]) -> None:
        """Run ``bundle`` beside the served model on the same inputs, in the background: its
        outputs are logged (as ``<request id>:shadow``, with its version), never returned.
        None stops it. A shadow that falls behind skips requests rather than slow the app."""
        from concurrent.futures import ThreadPoolExecutor

        new = self._shadow_loader(Path(bundle)) if bundle is not None else None
        old, self._shadow = self._shadow, new
        if new is not None and self._shadow_pool is None:
            self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-shadow")
        if old is not None:
            old.close()

    def flush_shadow(self, timeout_s: float = 30.0) -> bool:
        """Wait until the shadow has caught up (before shipping the log, or in tests)."""
        deadline = time.monotonic() + timeout_s
        while self._shadow_pending and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._shadow_pending

    def _shadow_submit(self, inputs: dict, out) -> None:
        if self._store is None or getattr(out, "request_id", None) is None:
            return
        with self._lock:
            if self._shadow_pending >= self._shadow_backlog:
                self.shadow_skipped += 1
                return
            self._shadow_pending += 1
        self._shadow_pool.submit(self._shadow_run, self._shadow, inputs, out.request_id)

    def _shadow_run(self, shadow: RuntimeModel, inputs: dict, request_id: str) -> None:
        try:
            start = time.perf_counter()
            got = shadow.predict(inputs)
            self._store.append(inputs, dict(got), shadow.name, shadow.version or "", "shadow",
                               (time.perf_counter() - start) * 1000, request_id=f"{request_id}:shadow")
        except Exception:  # noqa: BLE001 - the shadow never harms the app; its failures show as missing records
            pass
        finally:
            with self._lock:
                self._shadow_pending -= 1

    def predict_raw(self, data):
        with self._current() as model:
            return model.predict_raw(data)

    def feedback(self, request_id: str, label=None, outcome=None) -> None:
        with self._current() as model:
            model.feedback(request_id, label=label, outcome=outcome)

    def stats(self) -> dict:
        with self._current() as model:
            return {**model.stats(), "bundle": str(self._bundle), "swaps": self.swaps}

    def close(self) -> None:
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        with self._lock:
            models = [self._model, *self._retired.values(), *([self._shadow] if self._shadow else [])]
            self._retired.clear()
        for model in models:
            model.close()
