"""Converters (and tools we measure against) that cannot share edgekit's environment run in their
own, as a subprocess.

onnx2tf pins TensorFlow 2.19, numpy 1.26, onnx 1.19 and protobuf 4 exactly; edgekit's stack
(onnxruntime, litert-torch, ai-edge-quantizer) needs newer ones. So the ONNX -> TFLite converter
lives in a virtual environment of its own, found in this order: ``$EDGEKIT_ONNX2TF_PYTHON``, the
tool folder next to edgekit's own environment (``<venv>/tools/onnx2tf``, where ``make install``
puts it), or edgekit's interpreter itself when it happens to import onnx2tf and TensorFlow. It is
a workstation tool: devices never need it.

    python -m edgekit.convert.tool_env install onnx2tf     # creates <venv>/tools/onnx2tf

``make test`` installs it; anything else installs it when a run first needs it (``ensure``), with
a line that says so, unless ``EDGEKIT_NO_TOOL_INSTALL=1`` (then the converter is skipped, and why).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class Tool:
    name: str
    env_var: str
    modules: tuple[str, ...]  # importable in a working environment
    requirements: tuple[str, ...]  # installed with their dependencies
    no_deps: tuple[str, ...] = ()  # installed without (their own pins would undo the list above)
    about: str = ""  # what the first install fetches, for the line that says it takes minutes


TOOLS = {t.name: t for t in (
    Tool("onnx2tf", "EDGEKIT_ONNX2TF_PYTHON", ("onnx2tf", "tensorflow", "tf_keras"),
         # onnx2tf 1.29's own pins, with tensorflow-cpu for tensorflow (no CUDA wheels)
         ("tensorflow-cpu==2.19.0", "tf-keras==2.19.0", "numpy==1.26.4", "onnx==1.19.1", "onnxruntime==1.23.0",
          "onnxsim==0.4.36", "onnx-graphsurgeon==0.5.8", "simple-onnx-processing-tools==1.1.32", "psutil==5.9.5",
          "protobuf==4.25.5", "h5py==3.11.0", "ml-dtypes==0.5.1", "flatbuffers==25.12.19", "ai-edge-litert==2.1.0",
          "onnxoptimizer==0.4.2", "requests"),
         ("onnx2tf==1.29.24",), "TensorFlow and its pins, about 1.5 GB"),
    # benchmarks/fleet_monitoring.py compares drift verdicts with Evidently's DataDriftPreset;
    # Evidently 0.7 imports a pandas helper that pandas 3 removed
    Tool("evidently", "EDGEKIT_EVIDENTLY_PYTHON", ("evidently", "pandas"), ("evidently==0.7.23", "pandas==2.3.3"),
         about="Evidently and pandas, about 800 MB"),
)}


def default_prefix(tool: str) -> Path:
    return Path(sys.prefix) / "tools" / tool


def python_for(tool: str) -> Optional[Path]:
    """The interpreter of an environment where ``tool`` runs, or None."""
    spec = TOOLS[tool]
    given = os.environ.get(spec.env_var)
    if given:
        return Path(given)
    local = default_prefix(tool) / "bin" / "python"
    if local.exists():
        return local
    if all(importlib.util.find_spec(m) is not None for m in spec.modules):
        return Path(sys.executable)
    return None


def install_hint(tool: str) -> str:
    return (f"install its environment: python -m edgekit.convert.tool_env install {tool} (make test does), "
            f"or point {TOOLS[tool].env_var} at a Python that has it")


class ToolInstallError(RuntimeError):
    """The tool's environment could not be created (no registry, no disk space...)."""


_failures: dict[str, str] = {}  # tool -> why this process could not install it (said once, not retried)


def install(tool: str, prefix: Optional[Path] = None, quiet: bool = True) -> Path:
    """Create the tool's environment at ``prefix`` (idempotent: a complete one is left as it is;
    one process at a time, so two runs that need it at once install it once)."""
    import fcntl

    spec = TOOLS[tool]
    prefix = Path(prefix or default_prefix(tool))
    python = prefix / "bin" / "python"
    stamp = prefix / ".edgekit-tool"
    wanted = "\n".join(spec.requirements + spec.no_deps)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / f".{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted:
            return python
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(prefix)], tool)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"] + (["--quiet"] if quiet else [])
        _run(pip + list(spec.requirements), tool)
        if spec.no_deps:
            _run(pip + ["--no-deps"] + list(spec.no_deps), tool)
        check = subprocess.run([str(python), "-c", "import " + ", ".join(spec.modules)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ToolInstallError(f"the {tool} environment at {prefix} does not import: "
                                   f"{check.stderr.strip().splitlines()[-1:]}")
        stamp.write_text(wanted)
    return python


def _run(cmd: list[str], tool: str) -> None:
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ToolInstallError(f"installing the {tool} environment failed ({' '.join(cmd[:4])}...): {tail}")


def ensure(tool: str, log: Optional[Callable[[str], None]] = None) -> Optional[Path]:
    """The tool's interpreter, installing its environment the first time a run needs it (one line
    says so: it takes minutes). None, with the reason in ``missing_reason``, where it cannot be."""
    found = python_for(tool)
    if found is not None or os.environ.get("EDGEKIT_NO_TOOL_INSTALL", "") in ("1", "true", "yes"):
        return found
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.monotonic()
    log(f"installing {tool}'s own environment into {default_prefix(tool)} ({TOOLS[tool].about} from PyPI): "
        "a few minutes, once")
    try:
        python = install(tool)
    except (ToolInstallError, OSError) as exc:
        _failures[tool] = str(exc)
        log(f"{tool} could not be installed: {exc}")
        return None
    log(f"{tool} installed in {time.monotonic() - started:.0f} s")
    return python


def missing_reason(tool: str) -> str:
    why = _failures.get(tool)
    if why:
        return f"{tool} could not be installed ({why[:300]}); {install_hint(tool)}"
    return f"{tool} is not installed (EDGEKIT_NO_TOOL_INSTALL is set); {install_hint(tool)}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgekit.convert.tool_env",
                                     description="Install a converter's own environment (e.g. onnx2tf).")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("install", help="create the tool's virtual environment")
    add.add_argument("tool", choices=sorted(TOOLS))
    add.add_argument("--prefix", type=Path, help="where [<venv>/tools/TOOL]")
    where = sub.add_parser("where", help="print the interpreter edgekit would use")
    where.add_argument("tool", choices=sorted(TOOLS))
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            print(install(args.tool, args.prefix))
        except ToolInstallError as exc:
            raise SystemExit(str(exc)) from None
    else:
        found = python_for(args.tool)
        print(found if found else f"not installed; {install_hint(args.tool)}")
        raise SystemExit(0 if found else 1)


if __name__ == "__main__":
    main()
