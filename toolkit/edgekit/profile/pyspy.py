"""Python-side hot spots of a whole pipeline with py-spy (native frames on).

py-spy records once in its raw (collapsed stacks) format; edgekit writes the flame graph SVG and
the speedscope JSON from those stacks, and summarises the top functions by own time and the
share of samples spent inside the model runtime.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ..errors import EdgekitError

RUNTIME_MARKERS = ("onnxruntime", "ai_edge_litert", "tflite_runtime", "libtensorflowlite", "_pywrap_litert",
                   "torch/", "libtorch", "xnnpack", "mlas", "libonnxruntime", "litert")


def find_pyspy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise EdgekitError("py-spy is not installed", "install it with: pip install 'edgekit[profile]'")
    return exe


def record(command: list[str], out_dir: Path, rate: int = 200) -> dict:
    if not command:
        raise EdgekitError("no command to profile", "use: edgekit profile --pyspy -- python my_app.py ARGS")
    exe = find_pyspy()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "pyspy.collapsed.txt"
    args = [exe, "record", "--native", "--rate", str(rate), "--format", "raw", "--output", str(raw), "--", *command]
    done = subprocess.run(args, capture_output=True, text=True)
    text = (done.stderr or "") + (done.stdout or "")
    if "ptrace" in text.lower() or "permission denied" in text.lower() or "operation not permitted" in text.lower():
        raise EdgekitError(
            "py-spy may not trace processes here (ptrace is not permitted)",
            "run as root, or allow it: sudo sysctl kernel.yama.ptrace_scope=0; in a container add --cap-add SYS_PTRACE",
        )
    if not raw.exists() or raw.stat().st_size == 0:
        last = text.strip().splitlines()[-1] if text.strip() else f"exit code {done.returncode}"
        raise EdgekitError(f"py-spy recorded nothing: {last}", "check that the command runs on its own")
    stacks = parse_collapsed(raw.read_text())
    (out_dir / "flamegraph.svg").write_text(flamegraph_svg(stacks, title=" ".join(command)))
    (out_dir / "profile.speedscope.json").write_text(json.dumps(speedscope(stacks, " ".join(command))))
    summary = summarise(stacks)
    summary.update(command=command, exit_code=done.returncode, files=["flamegraph.svg", "profile.speedscope.json",
                                                                     "pyspy.collapsed.txt"])
    return summary


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _is_runtime(frame: str) -> bool:
    lowered = frame.lower()
    return any(marker in lowered for marker in RUNTIME_MARKERS)


def summarise(stacks: list[tuple[list[str], int]], top: int = 15) -> dict:
    total = sum(c for _, c in stacks) or 1
    own: Counter = Counter()
    in_runtime = 0
    for frames, count in stacks:
        # The process/thread header frames py-spy adds are not code.
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        if code:
            own[code[-1]] += count
        if any(_is_runtime(f) for f in code):
            in_runtime += count
    return {"samples": total, "runtime_share": in_runtime / total, "python_share": 1 - in_runtime / total,
            "top_own": [{"function": f, "samples": c, "share": c / total} for f, c in own.most_common(top)]}


def speedscope(stacks, name: str) -> dict:
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks:
        samples.append([frames.setdefault(f, len(frames)) for f in stack])
        weights.append(count)
    return {"$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": [{"name": f} for f in frames]},
            "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                          "endValue": sum(weights), "samples": samples, "weights": weights}],
            "name": name, "exporter": "edgekit"}


def flamegraph_svg(stacks, title: str, width: int = 1200, row: int = 16) -> str:
    """A static flame graph: one rectangle per frame, width proportional to samples."""
    tree: dict = {"children": {}, "count": 0}
    for stack, count in stacks:
        node = tree
        node["count"] += count
        for frame in stack:
            node = node["children"].setdefault(frame, {"children": {}, "count": 0})
            node["count"] += count
    total = tree["count"] or 1
    rects = []
    depth_max = [0]

    def walk(node, x, depth):
        for name, child in sorted(node["children"].items()):
            w = child["count"] / total * width
            if w >= 0.5:
                depth_max[0] = max(depth_max[0], depth)
                hue = 10 + (hash(name) % 40) if not _is_runtime(name) else 200 + (hash(name) % 30)
                label = html.escape(name if len(name) * 7 < w else name[: max(int(w / 7) - 1, 0)])
                rects.append((x, depth, w, hue, html.escape(name), child["count"], label))
                walk(child, x, depth + 1)
            x += w

    walk(tree, 0.0, 0)
    height = (depth_max[0] + 2) * row + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
             f'font-size="11"><text x="4" y="16">{html.escape(title)} ({total} samples; blue = model runtime)</text>']
    for x, depth, w, hue, name, count, label in rects:
        y = height - (depth + 1) * row
        parts.append(f'<g><title>{name} ({count} samples, {count / total:.1%})</title>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="hsl({hue},70%,60%)"/>'
                     f'<text x="{x + 2:.1f}" y="{y + row - 4}">{label}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)
