"""Converters that cannot share edgekit's environment run in their own, as a subprocess.

onnx2tf pins TensorFlow 2.19, numpy 1.26, onnx 1.19 and protobuf 4 exactly; edgekit's stack
(onnxruntime, litert-torch, ai-edge-quantizer) needs newer ones. So the ONNX -> TFLite converter
lives in a virtual environment of its own, found in this order: ``$EDGEKIT_ONNX2TF_PYTHON``, the
tool folder next to edgekit's own environment (``<venv>/tools/onnx2tf``, where ``make install``
puts it), or edgekit's interpreter itself when it happens to import onnx2tf and TensorFlow. It is
a workstation tool: devices never need it.

    python -m edgekit.convert.tool_env install onnx2tf     # creates <venv>/tools/onnx2tf
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Tool:
    name: str
    env_var: str
    modules: tuple[str, ...]  # importable in a working environment
    requirements: tuple[str, ...]  # installed with their dependencies
    no_deps: tuple[str, ...] = ()  # installed without (their own pins would undo the list above)


TOOLS = {t.name: t for t in (
    Tool("onnx2tf", "EDGEKIT_ONNX2TF_PYTHON", ("onnx2tf", "tensorflow", "tf_keras"),
         # onnx2tf 1.29's own pins, with tensorflow-cpu for tensorflow (no CUDA wheels)
         ("tensorflow-cpu==2.19.0", "tf-keras==2.19.0", "numpy==1.26.4", "onnx==1.19.1", "onnxruntime==1.23.0",
          "onnxsim==0.4.36", "onnx-graphsurgeon==0.5.8", "simple-onnx-processing-tools==1.1.32", "psutil==5.9.5",
          "protobuf==4.25.5", "h5py==3.11.0", "ml-dtypes==0.5.1", "flatbuffers==25.12.19", "ai-edge-litert==2.1.0",
          "onnxoptimizer==0.4.2", "requests"),
         ("onnx2tf==1.29.24",)),
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
    return (f"install its environment: python -m edgekit.convert.tool_env install {tool} (make install does), "
            f"or point {TOOLS[tool].env_var} at a Python that has it")


def install(tool: str, prefix: Optional[Path] = None, quiet: bool = True) -> Path:
    """Create the tool's environment at ``prefix`` (idempotent: a complete one is left as it is)."""
    spec = TOOLS[tool]
    prefix = Path(prefix or default_prefix(tool))
    python = prefix / "bin" / "python"
    stamp = prefix / ".edgekit-tool"
    wanted = "\n".join(spec.requirements + spec.no_deps)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"] + (["--quiet"] if quiet else [])
    subprocess.run(pip + list(spec.requirements), check=True)
    if spec.no_deps:
        subprocess.run(pip + ["--no-deps"] + list(spec.no_deps), check=True)
    check = subprocess.run([str(python), "-c", "import " + ", ".join(spec.modules)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"the {tool} environment at {prefix} does not import: {check.stderr.strip().splitlines()[-1:]}")
    stamp.write_text(wanted)
    return python


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
        print(install(args.tool, args.prefix))
    else:
        found = python_for(args.tool)
        print(found if found else f"not installed; {install_hint(args.tool)}")
        raise SystemExit(0 if found else 1)


if __name__ == "__main__":
    main()
