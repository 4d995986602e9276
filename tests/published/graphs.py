"""Static profiles of the rebuilt published architectures, exported once per process."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=None)
def static_profile(name: str):
    import onnx

    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model
    from edgekit.profile.static import analyse

    model = load_model(f"tests.published.models:{name}")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / f"{name}.onnx", exporter="torchscript").path
        proto = onnx.load(str(path))
    shapes = {s.name: list(s.shape) for s in model.inputs}
    return analyse(proto, shapes)


def observations(rows):
    from edgekit.profile.fitted import Observation

    return [Observation(f"{r.model} {r.precision} {r.threads}T", static_profile(r.model), r.precision, r.threads, r.ms)
            for r in rows]
