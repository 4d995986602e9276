"""The optimize report (JSON and Markdown), the runtime manifest and the output directory."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .. import __version__, formats
from .lengths import batch_buckets
from .._schema import Document, SchemaError, from_dict, replace, to_dict
from .._io import installed_versions, sha256_file, to_json
from .._plot import pyplot, save
from ..manifest import Golden, Manifest, Processing, SCHEMA_VERSION as MANIFEST_SCHEMA
from ..errors import EdgekitError

TOOLS = ("torch", "onnx", "onnxruntime", "onnxconverter-common", "onnxscript", "litert-torch",
         "ai-edge-quantizer", "ai-edge-litert", "numpy")


def toolchain() -> dict:
    return {"edgekit": __version__} | installed_versions(TOOLS)


class CandidateRow(Document, frozen=False):
    """One candidate as the report shows it: the plan's entry, then what happened to it."""

    id: str
    format: str
    precision: str
    runtime: str
    reason: str  # why it failed or was rejected ("" when it passed)
    settings: str
    fused: bool
    onnx_int8: Optional[dict]
    tflite_exclude: list[str]
    tflite_quantizer: Optional[str]
    status: str  # passed, rejected (accuracy), failed (conversion), unfit (size), skipped (time)
    file: Optional[str]  # artifacts/NAME, None when nothing was built
    size_bytes: Optional[int]
    build: dict
    metrics: dict  # the accuracy guard's numbers: cosine, task metric, per-slice errors
    repairs: list[dict]
    latency_host: dict
    latency_target_ms: Optional[float]
    latency_source: str


class ModelSummary(Document, frozen=False):
    name: str
    source: str
    format: str
    task: str
    inputs: list[dict]
    outputs: list[dict]


class TargetSummary(Document):
    id: str
    name: str
    is_host: bool


class HostSummary(Document):
    name: str
    cores: int
    isa_int8: str


class DataSummary(Document):
    eval: str
    eval_synthetic: bool
    calibration: Optional[str]


# keys the report carries only when they apply (today's JSON leaves them out otherwise)
_WHEN_SET = ("arm64", "plot", "self_test", "bundle", "latency_by_length")


class OptimizeReport(Document, frozen=False):
    """What one optimize run did and found; ``to_dict()`` is report.json. Filled as the run goes
    (the ARM64 check, the plot, the self-test bar, the bundle), hence not frozen."""

    schema: str
    created: str
    seconds: float
    model: ModelSummary
    target: TargetSummary
    host: HostSummary
    data: DataSummary
    tolerance: dict
    tolerance_text: str
    exports: dict
    plan: dict
    candidates: list[CandidateRow]
    winner: Optional[str]
    closest: Optional[str]
    notes: list[str]
    toolchain: dict
    int8_host: Optional[dict] = None
    budget: Optional[dict] = None
    arm64: Optional[dict] = None
    latency_by_length: Optional[dict] = None  # the winner at the data's median/p90/p99/longest length
    plot: Optional[str] = None
    self_test: Optional[dict] = None
    bundle: Optional[str] = None

    def candidate(self, cid: str) -> CandidateRow:
        return next(c for c in self.candidates if c.id == cid)

    def to_dict(self) -> dict:
        data = to_dict(self)
        for key in _WHEN_SET:
            if data[key] is None:
                data.pop(key)
        return data

    @classmethod
    def load(cls, path: Path) -> "OptimizeReport":
        """A report.json as written, typed again (``edgekit report``, the loop's gate)."""
        return from_dict(cls, json.loads(Path(path).read_text()))


def _candidate_row(o) -> CandidateRow:
    return CandidateRow(**{
        **o.candidate.to_dict(), "status": o.status, "reason": o.reason,
        "file": f"artifacts/{o.path.name}" if o.path and o.status != "failed" else None,
        "size_bytes": o.size, "build": o.build, "metrics": o.metrics, "repairs": o.repairs,
        "latency_host": o.latency, "latency_target_ms": o.target_ms, "latency_source": o.latency_source,
    })


def build_report(model, profile, opt, outcomes, winner, closest, eval_data, calibration, tolerance,
                 plan, notes, seconds) -> OptimizeReport:
    tol = tolerance.to_dict()
    tol_text = f"mean cosine >= {tol['min_cosine']}"
    if model.task == "classification":
        tol_text += (f", accuracy drop <= {tol['max_accuracy_drop']} points" if eval_data.labels is not None
                     else f", top-1 agreement >= {tol['min_top1']}")
    if tol["min_cosine_floor"] is not None:
        tol_text += f", min cosine >= {tol['min_cosine_floor']}"
    if tol["max_abs"] is not None:
        tol_text += f", max |diff| <= {tol['max_abs']}"
    if tol["min_iou"] is not None:
        tol_text += f", IoU above {tol['threshold']} >= {tol['min_iou']}"
    if model.task.startswith("ctc"):
        tol_text += f", character error rate of the greedy-decoded text against fp32's <= {tol['max_cer']}"
    if model.task == "detection":
        tol_text += f", mAP@0.5 of the decoded boxes against fp32's >= {tol['min_map']}"
    tol_text += f", each output field within {tol['max_slice_error']} of its fp32 spread and not collapsed"
    return OptimizeReport(
        schema="edgekit.optimize/1",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(seconds, 1),
        model=ModelSummary(name=model.name, source=model.source, format=model.format, task=model.task,
                           inputs=[s.to_dict() for s in model.inputs], outputs=[s.to_dict() for s in model.outputs]),
        target=TargetSummary(id=profile.id, name=profile.name, is_host=profile.id == "host"),
        host=HostSummary(name=opt.host.name, cores=opt.host.cpu.cores, isa_int8=opt.host.precisions[0]),
        data=DataSummary(eval=eval_data.describe(), eval_synthetic=eval_data.synthetic,
                         calibration=calibration.describe() if calibration is not None else None),
        tolerance=tol, tolerance_text=tol_text,
        exports=opt.builder.exports,
        plan=plan.to_dict(),
        candidates=[_candidate_row(o) for o in outcomes],
        winner=winner.candidate.id if winner else None,
        closest=closest,
        notes=notes + [f"transformer fusions: SkipLayerNormalization {reason}" for reason in
                       [opt.builder.exports.get("onnx-fused", {}).get("skip_layer_norm")] if reason],
        toolchain=toolchain(),
    )


def _fmt(value, spec=".4f", none="-"):
    return none if value is None else format(value, spec)


def markdown(report: OptimizeReport) -> str:
    lines = [f"# edgekit optimize: {report.model.name} for {report.target.name}", ""]
    if report.winner:
        row = report.candidate(report.winner)
        lines.append(f"**Winner: `{row.id}`** ({row.format}, {row.precision}"
                     f"{', ' + row.settings if row.settings else ''}): "
                     f"{_fmt(row.latency_target_ms, '.2f')} ms on the target ({row.latency_source}), "
                     f"{row.size_bytes / 1e6:.2f} MB, mean cosine {_fmt(row.metrics.get('cosine_mean'))}.")
    else:
        lines.append(f"**No candidate met the tolerance.** Closest: `{report.closest}`.")
    lines += ["", f"Tolerance: {report.tolerance_text}. Evaluation: {report.data.eval}."]
    if report.data.calibration:
        lines.append(f"Calibration: {report.data.calibration}.")
    lines += [""] + [f"> {note}" for note in report.notes] + [""]
    lines += ["## Candidates", "",
              "| candidate | settings | status | size MB | host p50 ms | target ms | cos mean | cos min | task metric | reason |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in report.candidates:
        m = c.metrics
        task = (f"{m['accuracy']:.4f}" if "accuracy" in m else f"CER {m['cer']:.4f}" if "cer" in m
                else f"mAP@0.5 {m['map50']:.4f}" if "map50" in m else _fmt(m.get("top1_agreement")))
        lines.append(
            f"| {c.id} | {c.settings or '-'} | {c.status} | {_fmt(c.size_bytes and c.size_bytes / 1e6, '.2f')} "
            f"| {_fmt(c.latency_host.get('p50_ms'), '.2f')} | {_fmt(c.latency_target_ms, '.2f')} "
            f"| {_fmt(m.get('cosine_mean'))} | {_fmt(m.get('cosine_min'))} | {task} | {c.reason or '-'} |")
    if report.latency_by_length:
        lines += ["", f"## `{report.latency_by_length['candidate']}` at the data's own lengths", "",
                  "| at | length | host p50 ms | target ms |", "|---|---|---|---|"]
        lines += [f"| {r['at']} | {r['length']} | {r['host_ms']:.2f} | {_fmt(r['target_ms'], '.2f')} |"
                  for r in report.latency_by_length["rows"]]
    repaired = [c for c in report.candidates if c.repairs]
    if repaired:
        lines += ["", "## Repairs", ""]
        for c in repaired:
            lines.append(f"- `{c.id}`:")
            for r in c.repairs:
                result = ("error: " + r["error"] if "error" in r else r["skipped"] if "skipped" in r
                          else "passed" if r["passed"] else f"failed ({r['why']})")
                lines.append(f"  - {r['repair']}: {result}")
    plan = report.plan
    lines += ["", "## Plan", "", f"Architecture: {plan['architecture']}.", ""]
    lines += [f"- `{c['id']}` for {c['runtime']}: {c['reason']}" for c in plan["candidates"]]
    if plan["skipped"]:
        lines += ["", "Skipped:"] + [f"- {s['what']}: {s['why']}" for s in plan["skipped"]]
    lines += ["", "## Conversions", ""]
    lines += [f"- {key}: {json.dumps(value)}" for key, value in report.exports.items()]
    lines += ["", "## Toolchain", "", ", ".join(f"{k} {v}" for k, v in report.toolchain.items()), ""]
    return "\n".join(lines)


def url_safe_stamp(created: str) -> str:
    """2026-11-28T23:24:45+00:00 -> 20261128T232445Z: a default version that sorts and fits a URL."""
    return created.replace("-", "").replace(":", "").replace("+0000", "Z")


def varying_axes(model, dataset) -> dict[str, dict]:
    """The dims besides the batch that vary between calls, as the manifest records them: the sizes
    judged (the data's shortest and longest sample) and the most a variant takes (a tokenizer's
    max_length for a sequence)."""
    axes: dict[str, dict] = {}
    text = (model.meta.get("processing") or {}).get("text") or {}
    for spec in model.inputs:
        if not spec.is_data:
            continue
        for axis, dim in enumerate(spec.shape):
            if not isinstance(dim, str) or axis == spec.batch_axis or dim in axes:
                continue
            sample_axis = axis + 1 - (spec.batch_axis is not None and spec.batch_axis < axis)  # in the data's arrays
            array = dataset.arrays.get(spec.name)
            if dataset.lengths is not None and spec.name in dataset.ragged:
                judged = dataset.length_range()
            elif array is not None and array.ndim > sample_axis:
                judged = (array.shape[sample_axis],) * 2
            else:
                judged = ()
            most = text.get("max_length") if spec.name in (text.get("ids"), text.get("mask"), text.get("type_ids")) else None
            axes[dim] = {"min": 1, "max": most, "judged": list(judged)}
            if dataset.lengths is not None and spec.name in dataset.ragged:
                axes[dim]["buckets"] = batch_buckets(dataset.lengths, most)
    return axes


def manifest(report: OptimizeReport, outcomes, winner, model, profile, out: Path, axes: Optional[dict] = None) -> Manifest:
    """The variants a device should try, in order: the winner, the other passing candidates by
    target latency, and an fp32 variant last as the safe fallback."""
    passing = sorted((o for o in outcomes if o.status == "passed"), key=lambda o: o.target_ms or 1e9)
    others = [o for o in passing if o is not winner]
    order = (([winner] if winner else []) + [o for o in others if o.candidate.precision != "fp32"]
             + [o for o in others if o.candidate.precision == "fp32"])
    variants = [{
        "id": o.candidate.id, "file": f"artifacts/{o.path.name}", "format": o.candidate.format,
        "precision": o.candidate.precision, "sha256": sha256_file(out / "artifacts" / o.path.name),
        "runtime": formats.get(o.candidate.format).runtime, "target_runtime": o.candidate.runtime,
        "provider": "cpu" if o.candidate.runtime.endswith(("cpu", "xnnpack")) else o.candidate.runtime.split("-")[-1],
        "layout": model.meta.get("tflite_layout") if o.candidate.format == "tflite" and model.format == "onnx" else None,
    } for o in order]
    return Manifest.parse({
        # as manifest.schema_needed: 5 only where a dim varies, so older devices keep taking the rest
        "schema_version": MANIFEST_SCHEMA if axes else 4,
        "model": {"name": model.name, "version": model.meta.get("version") or url_safe_stamp(report.created)},
        "target": profile.id, "created": report.created, "toolchain": report.toolchain,
        "inputs": report.model.inputs, "outputs": report.model.outputs, "variants": variants, "axes": axes or {},
    })


def plot(report: OptimizeReport, path: Path) -> dict:
    """Latency against accuracy for every timed candidate: the trade-off, not just the winner.
    Marker area follows file size (relative to the largest); labels never overlap: a label that
    would collide moves up and keeps a leader line to its point. Returns the layout (marker
    areas and label boxes in pixels, by candidate), empty when there is nothing to plot."""
    plt = pyplot()
    if plt is None:
        return {}
    from matplotlib.text import Text

    rows = [c for c in report.candidates if c.latency_target_ms is not None]
    if not rows:
        return {}
    layout: dict = {"areas": {}, "labels": {}}
    largest = max(c.size_bytes or 1 for c in rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for c in rows:
        colour = "tab:green" if c.id == report.winner else ("tab:blue" if c.format == "onnx" else "tab:orange")
        layout["areas"][c.id] = 30 + 600 * (c.size_bytes or 0) / largest
        ax.scatter(c.latency_target_ms, c.metrics["cosine_mean"], s=layout["areas"][c.id],
                   color=colour, alpha=0.6, edgecolors="black", linewidths=0.5, zorder=3)
    ax.axhline(report.tolerance["min_cosine"], color="grey", linestyle="--", linewidth=1)
    xs = [c.latency_target_ms for c in rows]
    ys = [c.metrics["cosine_mean"] for c in rows] + [report.tolerance["min_cosine"]]
    xpad, ypad = (max(xs) - min(xs)) * 0.15 or max(xs) * 0.1, (max(ys) - min(ys)) * 0.25 or 0.002
    ax.set_xlim(min(xs) - xpad, max(xs) + xpad * 2.5)
    ax.set_ylim(min(ys) - ypad, max(ys) + ypad * 3)
    ax.set_xlabel(f"latency on {report.target.id} (ms, {'measured' if report.target.is_host else 'estimated'})")
    ax.set_ylabel("mean cosine vs fp32")
    ax.set_title(f"{report.model.name}: candidates (marker area ~ file size; green = winner)", fontsize=10)
    # The layout is final before labels are placed: placed in pixels, then moved by a later
    # tight_layout, two labels overlapped in the saved picture while the placement said they did not.
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed, texts = [], {}
    for c in sorted(rows, key=lambda c: (-c.metrics["cosine_mean"], c.latency_target_ms)):
        point = (c.latency_target_ms, c.metrics["cosine_mean"])
        label = f"{c.id} ({(c.size_bytes or 0) / 1e6:.2f} MB)"
        offset = 8
        while True:
            text = ax.annotate(label, point, xytext=(10, offset), textcoords="offset points", fontsize=8,
                               arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6}, zorder=4)
            text.set_in_layout(False)  # a label must not move the axes, and with them every point
            text.update_positions(renderer)  # where it will be drawn: before a draw, it is at its point
            box = Text.get_window_extent(text, renderer).expanded(1.02, 1.2)  # the words, not the leader line
            if not any(box.overlaps(other) for other in placed) or offset > 400:
                placed.append(box)
                texts[c.id] = text
                break
            text.remove()
            offset += box.height * 0.6
    def measure():  # the label boxes of the figure as saved
        layout["labels"] = {cid: tuple(Text.get_window_extent(t, fig.canvas.get_renderer()).bounds)
                            for cid, t in texts.items()}

    save(fig, path, measure=measure)
    return layout


GOLDEN_SAMPLES = 4


def bundle_processing(declared: dict | None, out: Path):
    """The model's declared processing as the manifest's, its tokenizer copied in and pinned."""
    if not declared:
        return None

    data = json.loads(json.dumps(declared))
    text = data.get("text")
    if text:
        source = Path(text["tokenizer"])
        if not source.is_file():
            raise EdgekitError(f"the tokenizer file {source} does not exist", "check the processing declaration")
        (out / "processing").mkdir(exist_ok=True)
        shutil.copyfile(source, out / "processing" / source.name)
        text["tokenizer"] = f"processing/{source.name}"
        text["sha256"] = sha256_file(out / "processing" / source.name)
    try:
        return from_dict(Processing, data, "processing")
    except SchemaError as exc:
        raise EdgekitError(f"bad processing declaration: {exc}", "see the README's processing section") from None


def write(out: Path, report: OptimizeReport, outcomes, winner, model, profile, golden=None) -> None:
    """``golden``: (inputs, reference outputs) for the bundle's on-device self-test."""
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True)
    for o in outcomes:
        if o.path and o.path.exists() and o.status != "failed":
            shutil.copyfile(o.path, artifacts / o.path.name)
    if winner:
        shutil.copyfile(winner.path, out / f"best{winner.path.suffix}")
    if plot(report, out / "tradeoff.png"):
        report.plot = "tradeoff.png"
    # nothing a device could run: no manifest, so nothing can be packaged by mistake
    if any(o.status == "passed" for o in outcomes):
        _write_manifest(out, report, outcomes, winner, model, profile, golden)
    (out / "report.json").write_text(to_json(report.to_dict(), indent=2))
    (out / "report.md").write_text(markdown(report))


def _write_manifest(out: Path, report: OptimizeReport, outcomes, winner, model, profile, golden) -> None:
    """manifest.json and golden.npz; the self-test bar (report.self_test) once they are on disk."""
    data = manifest(report, outcomes, winner, model, profile, out, varying_axes(model, golden[0]) if golden else None)
    if golden is not None:
        import numpy as np

        dataset, outputs = golden
        from ..models.interface import standard

        if standard(model.inputs):
            pick = slice(0, GOLDEN_SAMPLES)
            if dataset.lengths is not None:
                # samples of the data's longest length, so that one call takes them unpadded and the
                # reference outputs, padded to the longest (Dataset.grouped), are theirs as they are
                pick = np.flatnonzero(dataset.lengths == dataset.lengths.max())[:GOLDEN_SAMPLES]
                dataset = dataset.subset(pick)
            inputs = dataset.feeds(0, GOLDEN_SAMPLES)
            arrays = {f"input:{k}": v for k, v in inputs.items()}
            arrays |= {f"output:{spec.name}": o[pick] for spec, o in zip(data.outputs, outputs)}
        else:  # one call as the model takes it: batch axes where they are, fixed values, zero state
            inputs = dataset.feeds(0, 1)
            arrays = {f"input:{k}": v for k, v in inputs.items()}
            arrays |= {f"output:{spec.name}": o[:1] if spec.batch_axis is None else np.moveaxis(o[:1], 0, spec.batch_axis)
                       for spec, o in zip(model.outputs, outputs)}
        np.savez(out / "golden.npz", **arrays)
        data = data.replace(golden=Golden(file="golden.npz", min_cosine=report.tolerance["min_cosine"],
                                          samples=min(len(dataset), GOLDEN_SAMPLES),
                                          sha256=sha256_file(out / "golden.npz")))
    processing = bundle_processing(model.meta.get("processing"), out)
    if processing is not None:
        data = data.replace(processing=processing)
    (out / "manifest.json").write_bytes(data.dumps())
    if data.golden is not None:  # the runtime measures it from the files written, as a device would
        _set_self_test_bar(out, data, report)


SELF_TEST_MARGIN = 0.01  # of cosine, for another CPU's kernels (ARM int8 moves it ~1e-3)


def self_test_bar(scores: dict, tolerance: float) -> float:
    """The device's self-test checks that a runtime runs a shipped file as it ran here; the guard
    already judged accuracy on all the data. Four golden samples can average below the guard's
    mean over hundreds (MiniLM int8 read 0.9888 against a bar of 0.99, so every device skipped the
    winner): the bar is the lowest score the shipped variants reach here, less a margin, and never
    above the tolerance. Garbage from a broken runtime still scores far below it."""
    measured = [s for s in scores.values() if isinstance(s, float)]
    # rounded down: a bar printed to four places must not end above a score less its margin
    return tolerance if not measured else min(tolerance, math.floor((min(measured) - SELF_TEST_MARGIN) * 1e4) / 1e4)


def _set_self_test_bar(out: Path, data, report: OptimizeReport) -> None:
    from ..runtime.model import self_test_scores

    scores = self_test_scores(out)
    bar = self_test_bar(scores, data.golden.min_cosine)
    report.self_test = {"bar": bar, "scores": scores, "margin": SELF_TEST_MARGIN}
    if bar != data.golden.min_cosine:
        data = data.replace(golden=replace(data.golden, min_cosine=bar))
        (out / "manifest.json").write_bytes(data.dumps())
