"""One way for the model tests to run any model: an ONNX or TFLite file, a bundle (.ekb or its
directory), or a PyTorch factory, all through edgekit's loaders; outputs in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from ..metrics import probabilities


class Predictor:
    """``outputs(arrays)`` -> the first output for all rows; ``input_gradient_norm`` where the
    model is PyTorch (None otherwise)."""

    def __init__(self, ref: str, inputs: tuple[str, ...] = ()):
        self.ref = str(ref)
        path = Path(self.ref)
        self._runtime = self._session = self._model = None
        if path.suffix == ".ekb" or (path.is_dir() and (path / "manifest.json").is_file()):
            from ..runtime import load

            self._runtime = load(path)
            self.name = f"{self._runtime.name} {self._runtime.version}".strip()
            self.input_names = [s["name"] for s in self._runtime.inputs]
        else:
            from ..models import load_model

            self._model = load_model(self.ref, inputs)
            self.name = self._model.name
            self.input_names = [s.name for s in self._model.inputs]
            if not self._model.is_torch:
                from ..formats import open_session

                self._session = open_session(self._model.path, model=self._model)

    @property
    def is_torch(self) -> bool:
        return self._model is not None and self._model.is_torch

    def feeds(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in data]
        if missing:
            raise DataError(f"the data lacks input {', '.join(missing)} of {self.name}",
                            f"its inputs are {', '.join(self.input_names)}")
        return {n: data[n] for n in self.input_names}

    def outputs(self, data: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
        feeds = self.feeds(data)
        rows = len(next(iter(feeds.values())))
        parts = []
        for start in range(0, rows, batch):
            part = {k: v[start:start + batch] for k, v in feeds.items()}
            if self._runtime is not None:
                parts.append(next(iter(self._runtime.predict(part).values())))
            elif self._session is not None:
                parts.append(self._session.run_batched(part)[0])
            else:
                import torch

                with torch.no_grad():
                    out = self._model.module(*(torch.from_numpy(part[n]) for n in self.input_names))
                out = out if isinstance(out, torch.Tensor) else (list(out.values()) if isinstance(out, dict) else out[0])
                parts.append(out.numpy())
        return np.concatenate(parts)

    def input_gradient_norm(self, data: dict[str, np.ndarray], labels: np.ndarray, batch: int = 256) -> Optional[np.ndarray]:
        """|d loss / d input| per example (cross-entropy against ``labels``): how sharply the
        model's answer turns near this input. PyTorch models with float inputs only."""
        if not self.is_torch:
            return None
        import torch

        feeds = self.feeds(data)
        if any(v.dtype.kind != "f" for v in feeds.values()):
            return None
        module = self._model.module.eval()
        norms = []
        for start in range(0, len(labels), batch):
            tensors = [torch.from_numpy(feeds[n][start:start + batch].copy()).requires_grad_(True) for n in self.input_names]
            out = module(*tensors)
            out = out if isinstance(out, torch.Tensor) else out[0]
            loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels[start:start + batch]).long(),
                                                     reduction="sum")
            grads = torch.autograd.grad(loss, tensors)
            norms.append(torch.sqrt(sum((g.reshape(len(g), -1) ** 2).sum(1) for g in grads)).numpy())
        return np.concatenate(norms)


def cross_entropy(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = probabilities(outputs)
    return -np.log(np.clip(p[np.arange(len(labels)), labels.astype(np.int64)], 1e-12, 1.0))
