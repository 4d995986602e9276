#!/usr/bin/env bash
# Install edgekit's runtime-only part on a Raspberry Pi (or any Linux box) into a virtual env.
# No torch, no toolkit: the device runs optimised .tflite files with LiteRT (and .onnx ones with
# onnxruntime when asked for).
#
#   ./install.sh                       # venv in ~/edgekit-venv, edgekit from this checkout, LiteRT
#   ./install.sh --venv /opt/edgekit --source edgekit-0.1.0-py3-none-any.whl
#   ./install.sh --onnxruntime         # LiteRT and onnxruntime (bundles with ONNX variants)
#   ./install.sh --no-litert           # onnxruntime only
#   ./install.sh --text                # also sentences as input (tokenizers: MiniLM-style bundles)
#   ./install.sh --serve               # also edgekit serve (Starlette, uvicorn, Pillow, tokenizers)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${EDGEKIT_VENV:-$HOME/edgekit-venv}"
source_spec=""
extras="litert"
python="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --source) source_spec="$2"; shift 2 ;;
    --no-litert) extras="${extras/litert/onnxruntime}"; shift ;;
    --onnxruntime) [[ "$extras" == *onnxruntime* ]] || extras="${extras:+$extras,}onnxruntime"; shift ;;
    --text) extras="${extras:+$extras,}text"; shift ;;
    --serve) extras="${extras:+$extras,}serve"; shift ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$source_spec" ]; then
  if [ -f "$here/../../pyproject.toml" ]; then
    source_spec="$(cd "$here/../.." && pwd)"   # this checkout
  else
    source_spec="edgekit"                      # the published package
  fi
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "error: edgekit needs Python 3.10 or newer ($("$python" --version 2>&1) found); install python3.11" >&2
  exit 1
}

echo "==> creating $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
spec="$source_spec"
[ -n "$extras" ] && spec="$source_spec[$extras]"
echo "==> installing $spec (runtime only, no torch)"
"$venv/bin/python" -m pip install --quiet "$spec"

if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "warning: torch is importable in $venv; the runtime does not need it" >&2
fi
"$venv/bin/edgekit" --version
# what the device carries: the venv's packages (make test-arm64 reports it)
echo "==> installed $(du -sm "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" | cut -f1) MB of packages ($extras)"
echo "==> done. Try: $venv/bin/python $here/app.py model.onnx --input $here/sample_digits.npz"
