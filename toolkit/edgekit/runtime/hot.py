"""Hot reload: an app's model switches bundles between two requests.

``HotModel`` holds one loaded :class:`RuntimeModel` and hands each call the one that is current
when the call starts. ``swap(bundle)`` loads the new bundle completely (every variant opened, the
golden self-test run) *before* the switch, so no request meets a half-loaded model; calls already
running finish on the old one, which is closed once the last of them returns. A bundle that does
not load leaves the old model serving and raises.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from .model import RuntimeModel


class HotModel:
    def __init__(self, bundle: str | Path, loader: Optional[Callable[[Path], RuntimeModel]] = None, **options):
        from . import load

        self._loader = loader or (lambda path: load(path, **options))
        self._lock = threading.Lock()
        self._model = self._loader(Path(bundle))
        self._bundle = Path(bundle)
        self._users = {id(self._model): 0}
        self._retired: dict[int, RuntimeModel] = {}
        self.swaps = 0

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
            return model.predict(inputs, **kwargs)

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
        with self._lock:
            models = [self._model, *self._retired.values()]
            self._retired.clear()
        for model in models:
            model.close()
