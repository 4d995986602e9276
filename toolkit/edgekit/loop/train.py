"""Training through the user's hook, in a subprocess with a time limit and a kept log.

The hook, ``fit(dataset_dir, current, out_dir)``, gets the data set folder (train/val/test .npz),
the bundle the fleet runs now and a folder for its files, and returns a model: a path edgekit
loads (ONNX, TFLite, .pt2) or a ``torch.nn.Module``, which is exported to ONNX under the current
bundle's input and output names (so the new model is a drop-in replacement). A hook that hangs
is killed at the limit; one that crashes leaves its traceback in ``train.log``.

Run as ``python -m edgekit.loop.train HOOK DATASET CURRENT OUT``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EdgekitError


def _die_with_parent() -> None:
    """Linux: the trainer is killed when the loop dies (kill -9 included), so a resumed run never
    races an orphan writing into the same folder. Its own session lets a time-out kill its
    children too."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc Linux: the time limit still holds
        pass


def run_training(hook: str, dataset: Path, current: str, out: Path, timeout_s: float) -> dict:
    """Train in a child process; returns {"model": path, "seconds": ..., "log": ...}."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"
    start = time.time()
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit.loop.train", hook, str(dataset), str(current), str(out)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the hook's own children (data loaders) too
            proc.wait()
            raise EdgekitError(f"training ran past its limit of {timeout_s:.0f} s and was stopped (log: {log})",
                               "raise train_timeout in loop.toml, or make the hook faster") from None
    result_file = out / "result.json"
    if code != 0 or not result_file.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise EdgekitError(f"training failed (exit {code}): {tail[0][:300]}", f"see the whole log in {log}")
    result = json.loads(result_file.read_text())
    result_file.unlink()  # a retried step trains again, never takes a model this check refused
    check_trained(result["model"], dataset, log)
    result_file.write_text(json.dumps(result))
    result["seconds"] = round(time.time() - start, 2)
    result["log"] = str(log)
    return result


def check_trained(model: str, dataset: Path, log: Path) -> None:
    """The trained model loads and answers a few validation rows with finite outputs of the
    current model's shape, before the step counts as done: a hook that returns a broken file would
    otherwise stop every later run at the gate, on the same file, however the hook is fixed."""
    import numpy as np

    from ..testing.models import Predictor
    from ..tables import load_columns

    try:
        predictor = Predictor(model)
        columns = load_columns(dataset / "val.npz")
        rows = {k: v[:8] for k, v in columns.items()}
        outputs = predictor.outputs(predictor.feeds(rows))
    except Exception as exc:  # noqa: BLE001 - whatever the hook produced, the step failed
        raise EdgekitError(f"the trained model {model} does not run on the validation data: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                           f"fix the training hook (its log: {log}); the next loop run trains again") from None
    if not np.all(np.isfinite(outputs)):
        raise EdgekitError(f"the trained model {model} answers NaN or infinity on the validation data",
                           f"fix the training hook (its log: {log}); the next loop run trains again")


def _interface(current: str):
    """The current bundle's input and output specs (names, dtypes, dynamic batch)."""
    from ..bundle import read_manifest
    from ..spec import TensorSpec

    manifest = read_manifest(current)
    inputs = [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in manifest.inputs]
    outputs = [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in manifest.outputs]
    return manifest.model.name, inputs, outputs


def _export(module, dataset: Path, current: str, out: Path) -> Path:
    import numpy as np
    import torch

    from ..convert.onnx_export import export_onnx
    from ..spec import Model

    name, inputs, outputs = _interface(current)
    with np.load(dataset / "train.npz") as data:
        example = tuple(torch.from_numpy(np.ascontiguousarray(data[s.name][:2])) for s in inputs)
    model = Model(name=name, format="pytorch", source="training hook", inputs=inputs, outputs=outputs,
                  module=module.eval(), example_inputs=example)
    path = out / "model.onnx"
    export_onnx(model, path)
    return path


def main(argv: list[str]) -> int:
    hook_ref, dataset, current, out = argv
    from .._hooks import import_callable

    dataset, out = Path(dataset), Path(out)
    hook = import_callable(hook_ref, "training hook")
    print(f"training with {hook_ref} on {dataset}", flush=True)
    result = hook(dataset, current, out)
    if hasattr(result, "parameters") and hasattr(result, "eval"):
        path = _export(result, dataset, current, out)
    elif isinstance(result, (str, Path)) and Path(result).is_file():
        path = Path(result)
    else:
        raise TypeError(f"the training hook returned {type(result).__name__}: return a torch.nn.Module or the path "
                        "of a model file")
    (out / "result.json").write_text(json.dumps({"model": str(path.resolve()), "hook": hook_ref}))
    print(f"model: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
