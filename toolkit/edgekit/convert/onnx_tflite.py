"""ONNX -> TFLite: fix the shapes, clean the graph, convert, find the layout, check against ONNX.

Models published as ONNX (PaddleOCR, Silero VAD, most of a model zoo) reach LiteRT and the Edge
TPU through here. The converters are a registry tried in order, and the report records which
ran and why the others did not:

- ``onnx2torch`` + ``litert-torch``: stays in edgekit's own environment where it works
  (onnx2torch imports torchvision, which a CPU-only torch install usually lacks).
- ``onnx2tf``: the converter the community uses for exactly this, run in its own environment
  (see :mod:`edgekit.convert.tool_env`: it pins TensorFlow, numpy and onnx versions of its own).

Before converting, dynamic dims are fixed to the evaluation data's sizes with batch 1, inputs with
a fixed value (``--input sr:=16000``) become constants of the graph, node names are made valid
TensorFlow scope names (Paddle's ``Softmax@0`` is not), and onnxslim folds constants and
simplifies shapes; what that changed is reported. onnx2tf lays images out NHWC: the layout of
every input and output is found (from the shapes, then confirmed against onnxruntime's outputs),
recorded, and applied by the LiteRT session, so the guard and the device feed it right.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import ConversionError, first_line
from ..backends.base import pad_sequence
from ..dataset import first_along
from ..metrics import max_relative_error
from ..spec import Model
from .onnx_clean import clean
from .tflite_export import SIGNATURE
from .tool_env import ensure, install_hint, missing_reason, python_for

TOLERANCE = 1e-3  # relative to the largest output value: a conversion, not a quantisation


@dataclass(frozen=True)
class Converter:
    name: str
    unavailable: Callable[[], Optional[str]]  # why it cannot run here, or None
    run: Callable[..., dict]  # (fixed onnx, dst, timeout s, calibration npz or None) -> info


def _onnx2torch_missing() -> Optional[str]:
    import importlib.util

    for module, why in (("onnx2torch", "onnx2torch is not installed"),
                        ("torchvision", "onnx2torch imports torchvision, which is not installed"),
                        ("litert_torch", "litert-torch is not installed (the tflite extra)")):
        if importlib.util.find_spec(module) is None:
            return why
    return None


def _via_onnx2torch(src: Path, dst: Path, timeout_s: float, calib: Optional[Path] = None) -> dict:
    if not isinstance(src, Path):
        raise ConversionError("one graph per length is onnx2tf's route here", "onnx2torch+litert-torch")
    import onnx
    import torch
    from onnx2torch import convert

    from .._quiet import native_quiet, quiet

    module = convert(onnx.load(str(src))).eval()
    proto = onnx.load(str(src), load_external_data=False)
    example = tuple(torch.zeros([d.dim_value for d in i.type.tensor_type.shape.dim],
                                dtype=torch.float32) for i in proto.graph.input)
    import litert_torch

    with quiet(), native_quiet():
        litert_torch.convert(module, example).export(str(dst))
    return {}


def _onnx2tf_missing() -> Optional[str]:
    return None if ensure("onnx2tf") else missing_reason("onnx2tf")


def _via_onnx2tf(src: Path, dst: Path, timeout_s: float, calib: Optional[Path] = None) -> dict:
    python = python_for("onnx2tf")
    driver = Path(__file__).with_name("_onnx2tf_driver.py")
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"  # onnx2tf calls the onnxsim CLI
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx2tf-") as work:
        try:
            # absolute paths: the driver works in its own directory
            extra = [str(Path(calib).resolve()), str(int8_path(dst).resolve())] if calib else []
            done = subprocess.run([str(python), str(driver), _sources(src), work, str(Path(dst).resolve())]
                                  + extra, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"onnx2tf ran past {timeout_s:.0f} s", "onnx2tf",
                                  hint="raise --time-budget") from None
    if done.returncode != 0 or not dst.exists():
        text = done.stderr + done.stdout
        lines = [ln for ln in text.splitlines() if re.search(r"Error|error:|Exception", ln)] or text.splitlines()[-1:]
        raise ConversionError(f"onnx2tf failed: {(lines[-1] if lines else 'no output').strip()[:300]}", "onnx2tf",
                              detail=text[-3000:])
    last = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(last[-1]) if last else {}


def _sized(value: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``value`` zero-padded or cut to ``size`` along ``axis``: the shape a length's graph is fixed at."""
    return first_along(pad_sequence(value, size, axis), axis, size)


def _calibration_rows(calibration, buckets: tuple, ragged: dict, folded: list) -> dict[str, np.ndarray]:
    """The converter's calibration samples, stacked per input; with one graph per length, per
    ``SIGNATURE/INPUT``: the samples each length's graph takes (those longer than the bucket below
    it), zero-padded to its length, 16 at most."""
    if not buckets:
        rows = [calibration.feeds(i, i + 1) for i in range(min(len(calibration), 64))]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in folded}
    arrays, below = {}, 0
    lengths = calibration.lengths if calibration.lengths is not None else np.full(len(calibration), buckets[-1])
    for bucket in buckets:
        mine = [i for i, n in enumerate(lengths) if below < n <= bucket][:16] or [0]
        rows = [{k: _sized(v, bucket, ragged[k]) if k in ragged else v
                 for k, v in calibration.feeds(i, i + 1).items()} for i in mine]
        arrays |= {f"{SIGNATURE.format(bucket)}/{k}": np.stack([r[k] for r in rows]) for k in rows[0] if k not in folded}
        below = bucket
    return arrays


def _sources(src) -> str:
    """The driver's SRC: one fixed ONNX file, or ``len64=a.onnx,len128=b.onnx`` (one per length)."""
    if isinstance(src, dict):
        return ",".join(f"{SIGNATURE.format(length)}={Path(p).resolve()}" for length, p in src.items())
    return str(Path(src).resolve())


def int8_path(dst: Path) -> Path:
    """Where the converter's own full-integer TFLite goes, next to the fp32 one."""
    return dst.with_name(dst.stem + "-int8-tf.tflite")


CONVERTERS = (
    Converter("onnx2torch+litert-torch", _onnx2torch_missing, _via_onnx2torch),
    Converter("onnx2tf", _onnx2tf_missing, _via_onnx2tf),
)


def _channel_last(rank: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, rank)) + (1,)


def _input_layout(model: Model, tflite: Path, examples: list[dict[str, np.ndarray]]) -> dict[str, tuple[int, ...]]:
    """Per input, the permutation from the source's layout to the TFLite's, by shape (against the
    example of each length where the file has one signature per length)."""
    from ..backends.litert import LiteRTSession
    from ..backends.base import SessionOptions

    session = LiteRTSession(tflite, SessionOptions(threads=1), model)
    perms = {}
    for name, detail in zip(session._names, session._in):
        got = tuple(int(d) for d in detail["shape"])
        wants = [tuple(e[name].shape) for e in examples]
        if got in wants:
            continue
        last = [w for w in wants if len(w) >= 3 and got == tuple(w[i] for i in _channel_last(len(w)))]
        if not last:
            raise ConversionError(f"the TFLite input {name} is {list(got)} for the source's {list(wants[0])}", "onnx2tf")
        perms[name] = _channel_last(len(last[0]))
    return perms


def _output_layout(model: Model, tflite: Path, perms_in: dict, example: dict, reference: list) -> dict:
    """Per output, the permutation that makes the TFLite's output match onnxruntime's."""
    from ..backends.litert import LiteRTSession
    from ..backends.base import SessionOptions

    raw = LiteRTSession(tflite, SessionOptions(threads=1), model, {"inputs": perms_in}).run(example)
    perms = {}
    for spec, got, want in zip(model.outputs, raw, reference):
        options = [None] + ([_channel_last(got.ndim)] if got.ndim >= 3 else [])

        def error(perm, got=got, want=want):
            back = got if perm is None else np.transpose(got, np.argsort(perm))
            return np.inf if back.shape != want.shape else float(np.max(np.abs(back - want), initial=0.0))

        best = min(options, key=lambda p: (error(p), p is not None))
        if best is not None:
            perms[spec.name] = best
    return perms


def export_tflite_from_onnx(model: Model, dst: Path, probe, timeout_s: float = 600.0, calibration=None) -> dict:
    """Convert ``model`` (ONNX) to fp32 TFLite at ``dst``; ``probe`` (a Dataset checked against the
    model) gives the sizes and the samples the result is checked on. With ``calibration`` the
    converter also leaves its own full-integer model at ``int8_path(dst)``, the fallback where
    ai-edge-quantizer cannot quantise. Returns what happened, with ``layout`` for the manifest."""
    from ..backends import SessionOptions
    from ..formats import open_session
    from ..data import run_dataset

    start = time.perf_counter()
    attempts = []
    example = probe.feeds(0, 1)
    # one graph per length where the data's samples vary along an axis without a mask to hide
    # padding (a text line's width): the sources fixed at each bucket, zero-padded (background)
    buckets = tuple(model.meta.get("sequence_buckets", ())) if probe.lengths is not None else ()
    examples = {b: {k: _sized(v, b, probe.ragged[k]) if k in probe.ragged else v for k, v in example.items()}
                for b in buckets}
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-tflite-") as tmp:
        fixed = Path(tmp) / f"{model.name}-static.onnx"
        if examples:
            fixed = {b: Path(tmp) / f"{model.name}-{b}.onnx" for b in buckets}
            cleaned = [clean(model, fixed[b], e) for b, e in examples.items()][-1]
            cleaned["fixed_shapes"] = {k: [("|".join(map(str, buckets)) if k in probe.ragged and a == probe.ragged[k]
                                            else n) for a, n in enumerate(v.shape)] for k, v in example.items()}
        else:
            cleaned = clean(model, fixed, example)
        calib = None
        if calibration is not None and len(calibration):
            calib = Path(tmp) / "calibration.npz"
            np.savez(calib, **_calibration_rows(calibration, buckets, probe.ragged, cleaned["folded_inputs"]))
        chosen = None
        for conv in CONVERTERS:
            why = conv.unavailable()
            if why:
                attempts.append({"converter": conv.name, "skipped": why})
                continue
            t0 = time.perf_counter()
            try:
                info = conv.run(fixed, dst, max(timeout_s - (time.perf_counter() - start), 30.0), calib)
            except ConversionError as exc:
                attempts.append({"converter": conv.name, "error": str(exc)})
                dst.unlink(missing_ok=True)
                continue
            except Exception as exc:
                attempts.append({"converter": conv.name, "error": f"{type(exc).__name__}: {first_line(exc, 200)}"})
                dst.unlink(missing_ok=True)
                continue
            attempts.append({"converter": conv.name, "seconds": round(time.perf_counter() - t0, 2), **info})
            chosen = conv.name
            break
    if chosen is None:
        reasons = "; ".join(f"{a['converter']}: {a.get('skipped') or a.get('error')}" for a in attempts)
        # Install advice only when no converter could run: one that ran and failed is installed,
        # and the model's graph is what it could not map.
        ran = [a["converter"] for a in attempts if "error" in a]
        hint = (install_hint("onnx2tf") if not ran else
                f"{' and '.join(ran)} could not map this graph to TFLite (recurrent layers and control flow often "
                "do not convert); target a runtime that takes ONNX, or export the model without those ops")
        raise ConversionError(f"no ONNX -> TFLite converter worked ({reasons})", "onnx2tf",
                              hint=hint, detail=json.dumps(attempts)[:2000])
    source = open_session(model.path, SessionOptions(), model)
    perms_in = _input_layout(model, dst, list(examples.values()) or [example])
    perms_out = _output_layout(model, dst, perms_in, example, source.run(example))
    layout = {"inputs": {k: list(v) for k, v in perms_in.items()}, "outputs": {k: list(v) for k, v in perms_out.items()}}
    # the guard before anything else happens to it: the probe samples through both runtimes
    model.meta["tflite_layout"] = layout
    converted = open_session(dst, SessionOptions(), model)
    if examples:  # the conversion of each length's graph, at its own length; what padding a shorter
        # sample to it costs is the accuracy guard's to judge, by the task's metric
        diff = max(max_relative_error(source.run(e), converted.run(e)) for e in examples.values())
    else:
        diff = max_relative_error(run_dataset(source, probe, model), run_dataset(converted, probe, model))
    if not np.isfinite(diff) or diff > TOLERANCE:
        model.meta.pop("tflite_layout", None)
        dst.unlink(missing_ok=True)
        raise ConversionError(f"the TFLite from {chosen} differs from the ONNX source by {diff:.3g} (relative) on "
                              f"{len(probe)} samples", chosen, detail=json.dumps(attempts)[:2000])
    return {"exporter": chosen, "attempts": attempts, "cleaned": cleaned, "layout": layout,
            "max_rel_diff": diff, "checked_on": len(examples) or len(probe), "signatures": list(examples),
            "seconds": round(time.perf_counter() - start, 2)}
