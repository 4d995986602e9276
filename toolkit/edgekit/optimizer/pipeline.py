"""``edgekit optimize``: plan, build, guard accuracy, repair, time, choose, write."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._io import InterruptGuard, atomic_directory, check_replaceable, sweep_stale
from ..backends import SessionOptions
from ..formats import open_session
from ..data import Dataset, load_data, run_dataset, synthesize
from ..devices import Profile, host_profile, resolve
from ..devices.host import available_cores
from ..errors import ConversionError, DataError, EdgekitError, first_line
from ..models import Model, load_model
from ..names import as_file_name
from . import report as report_mod
from .accuracy import Tolerance, compare, shortfall, verdict
from .budget import Budget
from .build import Builder
from .estimate import ASSUMPTION, compute_precision, estimate_ms, peak
from .int8_host import judge as judge_int8
from .lengths import length_picks, round_up, signature_buckets
from .int8_host import text as int8_text
from .options import OptimizeOptions
from .plan import Candidate, Plan, make_plan
from .select import TIE, median_ci, pick
from .sizes import drop_fixed_sizes
from .timing import cycle, interleaved, summary, timed_samples


class NoCandidatePassed(EdgekitError):
    """Raised after the report is written: no candidate met the tolerance."""


@dataclass
class Outcome:
    candidate: Candidate
    status: str = "pending"  # passed, rejected (accuracy), failed (conversion), unfit (size), skipped (time)
    path: Optional[Path] = None
    build: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    reason: str = ""
    repairs: list[dict] = field(default_factory=list)
    latency: dict = field(default_factory=dict)
    target_ms: Optional[float] = None
    latency_source: str = ""

    @property
    def size(self) -> Optional[int]:
        return self.path.stat().st_size if self.path and self.path.exists() else None


@dataclass
class OptimizeResult:
    report: Optional[report_mod.OptimizeReport]  # None for a plan-only run
    out_dir: Optional[Path]
    winner: Optional[str]
    plan: dict = field(default_factory=dict)

    @property
    def best_path(self) -> Optional[Path]:
        if self.out_dir is None or self.winner is None:
            return None
        return next(iter(self.out_dir.glob("best.*")), None)

    def package(self, out: Optional[str | Path] = None, sign_key: Optional[str | Path] = None,
                version: Optional[str] = None, name: Optional[str] = None) -> Path:
        """The deployable bundle of this run (default: the output folder's name with .ekb), signed
        with ``sign_key`` when given; the report records where it went."""
        from ..bundle import make_bundle

        if self.out_dir is None:
            raise EdgekitError("a plan-only run has nothing to package", "run optimize without --plan")
        bundle = Path(out) if out is not None else self.out_dir.with_suffix(".ekb")
        make_bundle(self.out_dir, bundle, sign_key=sign_key, version=version, name=name)
        self.report.bundle = str(bundle)
        return bundle


def _reference(model: Model, data: Dataset) -> list[np.ndarray]:
    """fp32 outputs of the source model itself: torch eager, or the source file's runtime."""
    if model.is_torch:
        import torch

        def run(batch: dict) -> list[np.ndarray]:
            with torch.no_grad():
                out = model.module(*(torch.from_numpy(batch[s.name]) for s in model.inputs))
            outs = [out] if isinstance(out, torch.Tensor) else list(out.values()) if isinstance(out, dict) else list(out)
            return [o.numpy() for o in outs]

        return data.grouped(run, 32)  # every sample at its own length where the data has lengths
    return run_dataset(open_session(model.path, SessionOptions(), model), data, model)


def _checked_reference(model: Model, data: Dataset) -> list[np.ndarray]:
    """The source model's own outputs; a failure of the user's model on our inputs is one line
    that names the inputs fed and how to give real ones."""
    try:
        return _reference(model, data)
    except Exception as exc:
        fed = ", ".join(f"{k}: {v.dtype}{list(v.shape[1:])} in [{v.min()}, {v.max()}]" for k, v in data.arrays.items())
        fed += "".join(f", {s.name}: fixed at {s.fixed_value().tolist()}" for s in model.inputs if s.value is not None)
        raise DataError(f"{model.name} failed on the {'synthetic ' if data.synthetic else ''}evaluation inputs "
                        f"({fed}): {type(exc).__name__}: {first_line(exc, 200)}",
                        "pass --data with real inputs (an .npz with one array per input)" if data.synthetic else
                        "check that --data holds inputs the model accepts") from None


class Optimizer:
    def __init__(self, model: Model, target: Profile, eval_data: Dataset, calibration: Optional[Dataset],
                 tolerance: Tolerance, plan: Plan, workdir: Path, progress: Callable[[str], None],
                 timing_s: float, budget: Optional["Budget"] = None):
        self.model, self.target, self.eval, self.calibration = model, target, eval_data, calibration
        self.tolerance, self.plan, self.workdir, self.progress = tolerance, plan, workdir, progress
        self.budget = budget or Budget(None)
        self.builder = Builder(model, workdir, calibration, eval_data.head(8), self.budget,
                               measure_here=target.id == "host")
        self.host = host_profile()
        self.timing_s = timing_s
        self.reference = _checked_reference(model, eval_data)
        self.options = SessionOptions(threads=available_cores())

    def evaluate(self, path: Path) -> dict:
        session = open_session(path, self.options, self.model)
        outputs = run_dataset(session, self.eval, self.model)
        threshold = self.tolerance.threshold if self.tolerance.min_iou is not None else None
        return compare(self.pick(self.reference), self.pick(outputs), self.eval.labels, self.model.task, threshold)

    def pick(self, outputs: list) -> list:
        """The outputs the guard judges (not a recurrent state: edgekit.models.interface.judged)."""
        from ..models.interface import judged

        return [outputs[i] for i in judged(self.model.inputs, self.model.outputs)]

    def attempt(self, candidate: Candidate) -> tuple[Path, dict, dict]:
        path, info = self.builder.build(candidate)
        return path, info, self.evaluate(path)

    def run_candidate(self, candidate: Candidate) -> Outcome:
        outcome = Outcome(candidate)
        if self.budget.spent():
            outcome.status, outcome.reason = "skipped", self.budget.skip(f"building {candidate.id}")
            return outcome
        self.progress(f"building {candidate.id}")
        try:
            outcome.path, outcome.build, outcome.metrics = self.attempt(candidate)
        except ConversionError as exc:
            outcome.status, outcome.reason = "failed", str(exc)
            outcome.build = {"exporter": exc.exporter, "error": str(exc), "detail": exc.detail[:1000]}
            return outcome
        except Exception as exc:  # the runtime rejected the artifact: report it, go on with the plan
            outcome.status, outcome.reason = "failed", f"running the artifact failed: {first_line(exc)}"
            outcome.build = {"exporter": candidate.runtime, "error": outcome.reason}
            return outcome
        ok, why = verdict(outcome.metrics, self.tolerance)
        if ok:
            outcome.status = "passed"
            return outcome
        outcome.status, outcome.reason = "rejected", why
        self.repair(outcome)
        return outcome

    def repair(self, outcome: Outcome) -> None:
        """Try what an engineer would, in order; keep the first repaired variant that passes."""
        from .repair import progressing, repairs

        gaps = [shortfall(outcome.metrics, self.tolerance)]
        steps = repairs(outcome.candidate, self)
        while True:
            try:
                label, fixed = next(steps)
            except StopIteration:
                return
            except Exception as exc:  # finding the next repair (a sensitivity run) failed: say so, go on
                outcome.repairs.append({"repair": "sensitivity analysis", "error": f"{type(exc).__name__}: "
                                        f"{first_line(exc, 200)}"})
                return
            if self.budget.spent():
                outcome.repairs.append({"repair": label, "skipped": self.budget.skip(f"repair of {fixed.id}: {label}")})
                return
            if not progressing(gaps):
                outcome.repairs.append({"repair": label, "skipped": "the last repairs closed almost none of the gap "
                                        "to the tolerance; more of the same would not"})
                return
            self.progress(f"repairing {outcome.candidate.id}: {label}")
            try:
                path, info, metrics = self.attempt(fixed)
            except ConversionError as exc:
                outcome.repairs.append({"repair": label, "error": str(exc)})
                continue
            ok, why = verdict(metrics, self.tolerance)
            gaps.append(shortfall(metrics, self.tolerance))
            outcome.repairs.append({"repair": label, "passed": ok, "why": why, "metrics": metrics,
                                    "settings": fixed.settings_label()})
            if ok:
                outcome.candidate, outcome.path, outcome.build, outcome.metrics = fixed, path, info, metrics
                outcome.status, outcome.reason = "passed", f"repaired: {label}"
                return

    def fits(self, outcome: Outcome) -> bool:
        limit = self.target.constraints.max_model_mb
        size_mb = outcome.size / 1e6
        if limit is not None and size_mb > limit:
            outcome.status, outcome.reason = "unfit", f"{size_mb:.1f} MB > the target's {limit} MB limit"
            return False
        if size_mb * 2 > self.target.memory.ram_mb:  # weights plus activations and the runtime
            outcome.status, outcome.reason = "unfit", f"{size_mb:.0f} MB does not fit {self.target.memory.ram_mb} MB of RAM"
            return False
        return True

    def time(self, outcomes: list[Outcome]) -> None:
        """Interleaved host latency at batch 1 for every passing candidate, then the target estimate."""
        passing = [o for o in outcomes if o.status == "passed"]
        if not passing:
            return
        self.progress(f"timing {len(passing)} candidates side by side")
        samples = timed_samples(self.eval)
        # As the runtime runs them: onnxruntime's threads spinning between runs (a 12-token MiniLM
        # sentence took 2.9 ms without, 1.8 ms with; timed without, TFLite won on a host where the
        # shipped ONNX ran faster). In bursts of ~20 ms, so that one session's spin after its
        # burst costs the next at most its first call.
        spinning = replace(self.options, allow_spinning=True)
        sessions = {o.candidate.id: open_session(o.path, spinning, self.model) for o in passing}
        calls = {cid: cycle([s.bind(f) for f in samples]) for cid, s in sessions.items()}
        samples = interleaved(calls, budget_s=self.budget.share(self.timing_s), burst_ms=20.0)
        same = self.target.id == "host"
        fitted = None if same else self.fitted_estimate()
        roofline = None if same or fitted else self.roofline_ratios()
        for o in passing:
            o.latency = summary(samples[o.candidate.id])
            o.latency["p50_ci_ms"] = list(median_ci(samples[o.candidate.id]))
        for o in passing:
            if same:
                o.target_ms, o.latency_source = o.latency["p50_ms"], "measured on this host"
            elif fitted is not None:
                # The device model fitted to measurements on the target gives the level; among
                # candidates computing in the same precision, the host's measured ratio to the
                # fastest of them keeps what the format and runtime change.
                from ..profile.fitted import describe

                kind = compute_precision(o.candidate.precision, o.candidate.format, self.target)
                peers = [p.latency["p50_ms"] for p in passing
                         if compute_precision(p.candidate.precision, p.candidate.format, self.target) == kind]
                o.target_ms = max(fitted["total_ms"][kind] * o.latency["p50_ms"] / min(peers),
                                  self.measured_floor(o, passing, fitted["total_ms"]["fp32"]))
                o.latency_source = f"estimate ({describe(fitted['basis'])})"
            elif roofline is not None:
                # The profile command's estimate: per-op roofline on both machines, calibrated by
                # this host's measured efficiency per op class; scales the candidate's own timing.
                target_ms, host_ms = roofline
                t_kind = compute_precision(o.candidate.precision, o.candidate.format, self.target)
                h_kind = compute_precision(o.candidate.precision, o.candidate.format, self.host)
                o.target_ms = o.latency["p50_ms"] * target_ms[t_kind] / host_ms[h_kind]
                o.latency_source = "estimate (per-op roofline, host-calibrated)"
            else:
                o.target_ms = estimate_ms(o.latency["p50_ms"], o.candidate.precision, o.candidate.format,
                                          self.host, self.target, o.size)
                o.latency_source = "estimate (peak ratio)"

    def by_length(self, o: Outcome) -> list[dict]:
        """``o``'s latency at the data's median, 90th and 99th percentile and longest length, timed
        side by side on this host, and on the target scaled as ``o``'s estimate is (its target/host
        ratio: the op mix is taken to be the same at every length; a transformer's attention share
        grows with it, which the host timing already holds)."""
        picks = length_picks(self.eval.lengths)
        session = open_session(o.path, replace(self.options, allow_spinning=True), self.model)
        calls = {label: session.bind(self.eval.feeds(i, i + 1)) for label, _, i in picks}
        times = interleaved(calls, min_rounds=10, budget_s=self.budget.share(2.0), burst_ms=20.0)
        scale = o.target_ms / o.latency["p50_ms"] if o.target_ms and o.latency.get("p50_ms") else None
        rows = []
        for label, length, _ in picks:
            host = float(np.median(times[label]))
            rows.append({"at": label, "length": length, "host_ms": round(host, 4),
                         "target_ms": round(host * scale, 4) if scale else None})
        return rows

    def measured_floor(self, o: Outcome, passing: list[Outcome], fp32_level_ms: float) -> float:
        """The least the target can take for ``o`` given what this host measured: its ratio to the
        fastest candidate computing in fp32 there, scaled by how much more the target's peak for ``o``'s precision
        exceeds its fp32 peak than the host's does. The fitted device model knows the precision's
        peak, not a small model's quantise/dequantise costs per op; a detector's dynamic int8 that
        ran 3x slower than fp32 here was estimated faster than fp32 on a Pi, whose int8 peak is only
        2x the host's relative to fp32."""
        # the candidates the fitted fp32 level belongs to: those computing in fp32 on the target
        fp32 = [p.latency["p50_ms"] for p in passing
                if compute_precision(p.candidate.precision, p.candidate.format, self.target) == "fp32"]
        if not fp32:
            return 0.0
        h_kind = compute_precision(o.candidate.precision, o.candidate.format, self.host)
        t_kind = compute_precision(o.candidate.precision, o.candidate.format, self.target)
        gain_host = peak(self.host, h_kind) / peak(self.host, "fp32")
        gain_target = peak(self.target, t_kind) / peak(self.target, "fp32")
        return fp32_level_ms * o.latency["p50_ms"] / min(fp32) * gain_host / gain_target

    def fitted_estimate(self):
        """The target's fitted device model over the fp32 ONNX graph, or None where the profile
        has no fitted model or there is no ONNX graph."""
        if self.target.estimator.fit is None:
            return None
        import onnx

        from ..profile.fitted import estimate
        from ..profile.static import analyse

        try:
            path = self.builder.base("onnx")
        except ConversionError:
            return None
        feeds = self.eval.feeds(0, 1)
        static = analyse(onnx.load(str(path)), {k: list(v.shape) for k, v in feeds.items()})
        return estimate(static, self.target, self.target.estimator.fit)

    def roofline_ratios(self):
        """(target ms, host ms) per compute precision from the fp32 ONNX graph, or None where
        there is no ONNX graph to analyse (a TFLite-only source)."""
        import onnx

        from ..profile.dynamic import profile_onnx
        from ..profile.roofline import estimate, host_efficiency
        from ..profile.static import analyse

        try:
            path = self.builder.base("onnx")
        except ConversionError:
            return None
        self.progress("calibrating the target estimate (per-op profile on this host)")
        feeds = self.eval.feeds(0, 1)
        static = analyse(onnx.load(str(path)), {k: list(v.shape) for k, v in feeds.items()})
        measured = profile_onnx(path, feeds, runs=10, warmup=3, optimized=False)
        efficiency = host_efficiency(static, {n: r["us_per_run"] for n, r in measured["nodes"].items()}, self.host)
        return (estimate(static, self.target, efficiency)["total_ms"], estimate(static, self.host, efficiency)["total_ms"])

    def choose(self, outcomes: list[Outcome]) -> tuple[Optional[Outcome], list[Outcome]]:
        """(the winner, the candidates whose speed it could not be told from: edgekit.optimizer.select)."""
        return pick([o for o in outcomes if o.status == "passed" and o.target_ms is not None and self.fits(o)])


def _labels_are_classes(model: Model, labels: Optional[np.ndarray]) -> bool:
    """Integer labels, one per sample, that index the first output's last axis: a classifier,
    whose labels the user gave to be judged by (an ONNX file says nothing of its task)."""
    if labels is None or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) == 0:
        return False
    shape = model.outputs[0].sample_shape
    return len(shape) == 1 and isinstance(shape[0], int) and 0 <= labels.min() and labels.max() < shape[0]


def _calibration_for(model: Model, data_ref: Optional[str], target: Profile, plan: Plan,
                     allow_synthetic: bool, notes: list[str]) -> Optional[Dataset]:
    needs = any(c.precision == "int8-static" for c in plan.candidates)
    if not needs:
        return None
    if data_ref:
        return load_data(data_ref, model, limit=512)
    builtin = model.builtin_data("calibration")
    if builtin is not None:
        return builtin
    if target.constraints.full_int8_required and not allow_synthetic:
        raise DataError(
            f"target {target.id} needs full-integer int8, which needs calibration data, and none was given",
            "pass --data data.npz (representative inputs), or --allow-synthetic-calibration to accept "
            "random inputs and poor accuracy",
        )
    notes.append("static int8 was calibrated on SYNTHETIC inputs: expect poor accuracy; pass --data")
    return synthesize(model, n=64, seed=1)


def optimize(model: str | Model | None = None, target: str | Profile = "host", data: Optional[str] = None,
             out: Optional[str | Path] = None, options: Optional[OptimizeOptions] = None,
             progress: Callable[[str], None] = lambda msg: None, **more) -> OptimizeResult:
    """Optimise ``model`` for ``target``; writes ``out`` atomically and returns the result.
    ``options`` (:class:`OptimizeOptions`, or its fields as keywords) says what to try and how to
    judge it; ``progress`` hears one line per step."""
    if options is None or more:
        unknown = set(more) - OptimizeOptions.names()
        if unknown:
            raise TypeError(f"optimize() got unknown options {', '.join(sorted(unknown))}")
        options = replace(options, **more) if options is not None else OptimizeOptions(**more)
    with InterruptGuard() as guard:
        def step(msg: str) -> None:  # every step first honours a Ctrl-C that a library swallowed
            guard.check()
            progress(msg)

        return _optimize(model, target, data, out, options, Budget(options.time_budget_s), step)


def _optimize(model, target, data, out, o: OptimizeOptions, budget, progress) -> OptimizeResult:
    started = time.time()
    model = model if isinstance(model, Model) else load_model(model, o.inputs, o.batch_axes, o.states)
    if o.name:
        model.name = o.name
    if o.version:
        model.meta["version"] = o.version
    if o.task is not None:
        model.task = o.task
    if o.processing is not None:
        processing = o.processing
        for post in processing.get("outputs", []):
            post["output"] = post.get("output") or model.outputs[0].name
        model.meta["processing"] = processing
        first = next(iter(processing.get("outputs", [])), {})
        if model.task == "generic" and first.get("labels") and first["output"] == model.outputs[0].name:
            model.task = "classification"  # class names declared: judged by top-1 and accuracy
    profile = target if isinstance(target, Profile) else resolve(target)
    if o.verify_arm64 and profile.arch != "aarch64":
        raise EdgekitError(f"--verify-arm64 runs ARM64 kernels; {profile.id} is {profile.arch}",
                           "use it with an ARM64 target such as raspberrypi, or drop it")
    tolerance = o.tolerance
    plan = make_plan(model, profile, o.formats, o.precisions)
    if o.plan_only:
        return OptimizeResult(None, None, None, plan=plan.to_dict())

    notes: list[str] = list(plan.notes)
    if data:
        eval_data = load_data(data, model)
    else:
        eval_data = model.builtin_data("eval")
    if eval_data is None:
        eval_data = synthesize(model, n=64)
        notes.append("ACCURACY WAS CHECKED ON SYNTHETIC INPUTS ONLY: no --data was given; the metrics "
                     "say how close candidates are to fp32 on random inputs, not on real data")
    eval_data = eval_data.head(o.eval_samples)
    if o.task is None and model.task == "generic" and _labels_are_classes(model, eval_data.labels):
        model.task = "classification"
        notes.append(f"judged as classification: --data has labels 0-{int(eval_data.labels.max())} and "
                     f"{model.outputs[0].name} has one score per class; --task generic judges by cosine only")
    calibration = _calibration_for(model, data, profile, plan, o.allow_synthetic_calibration, notes)
    text = (model.meta.get("processing") or {}).get("text")
    if eval_data.lengths is not None and text and model.is_torch:
        # a TFLite export gets one signature per length bucket of the data (convert.tflite_export)
        model.meta["sequence_buckets"] = signature_buckets(eval_data.lengths, text["max_length"])
    elif eval_data.lengths is not None and model.format == "onnx" and not text:
        # text lines of different widths: one graph per width bucket (convert.onnx_tflite), up to
        # the widest line judged, rounded up
        model.meta["sequence_buckets"] = signature_buckets(eval_data.lengths, round_up(eval_data.lengths.max(), 8))

    out_dir = check_replaceable(Path(out) if out else Path("edgekit-out") / as_file_name(f"{model.name}-{profile.id}"))
    sweep_stale("edgekit-opt-")  # work directories of runs that were killed
    with tempfile.TemporaryDirectory(prefix=f"edgekit-opt-{os.getpid()}-") as tmp:
        progress(f"reference outputs on {eval_data.describe()}")
        opt = Optimizer(model, profile, eval_data, calibration, tolerance, plan, Path(tmp), progress, o.timing_s, budget)
        # The source's own format first, then ONNX (the quickest, surest export), fp32 first within
        # each: the safe candidate, and the variants its base already allows, must not be what a
        # short --time-budget leaves out after a slow converter; the report keeps the plan's order
        first = sorted(plan.candidates, key=lambda c: (c.format != model.format, c.format != "onnx",
                                                        c.precision != "fp32"))
        built = {c.id: opt.run_candidate(c) for c in first}
        outcomes = [built[c.id] for c in plan.candidates]
        arm64 = None
        from ..models.interface import standard

        if o.verify_arm64 and not standard(model.inputs):
            notes.append("ARM64 check skipped: it runs batch-first models only, and this one has fixed, "
                         "recurrent or non-batch-first inputs")
        elif o.verify_arm64 and budget.spent():
            budget.skip("the ARM64 check")
        elif o.verify_arm64:
            from .arm64 import verify

            arm64 = verify(opt, outcomes, o.verify_arm64, progress)
            failed = [v for v, row in arm64["variants"].items() if not row["passed"]]
            notes.append(f"ARM64 check: {len(arm64['variants'])} passing variants re-run on an emulated "
                         f"{arm64['cpu']} over {arm64['samples']} samples"
                         + (f"; rejected there: {', '.join(failed)}" if failed else "; all held")
                         + " (latency under emulation means nothing and is not reported)")
        drop_fixed_sizes(opt, outcomes)
        opt.time(outcomes)
        int8_host = None if budget.spent() else judge_int8(outcomes, opt.host, eval_data.feeds(0, 1), opt.options.threads)
        if int8_host:
            notes.append(int8_text(int8_host))
        from .recipes.edgetpu import describe as edgetpu_text

        notes += [f"{o.candidate.id}: {edgetpu_text(o.build['edgetpu'])}" for o in outcomes if o.build.get("edgetpu")]
        winner, tied = opt.choose(outcomes)
        by_length = None
        if winner is not None and eval_data.lengths is not None and not budget.spent():
            by_length = {"candidate": winner.candidate.id, "rows": opt.by_length(winner)}
            how = "measured" if profile.id == "host" else "estimated as its target latency is"
            notes.append(f"{winner.candidate.id} at the data's own lengths on {profile.name} ({how}): "
                         + ", ".join(f"{r['length']} ({r['at']}) {r['target_ms']:.2f} ms" for r in by_length["rows"]
                                     if r["target_ms"] is not None))
        if tied:
            notes.append(f"{winner.candidate.id} won on accuracy, then size: its latency cannot be told apart from "
                         f"{', '.join(o.candidate.id for o in tied)} (95% intervals of the median overlap, or "
                         f"within {TIE:.0%})")
        closest = None
        if winner is None:
            scored = [o for o in outcomes if o.metrics]
            closest = min(scored, key=lambda o: shortfall(o.metrics, tolerance)).candidate.id if scored else None
        if profile.id != "host":
            notes.append(f"target latency is an {ASSUMPTION}; host: {opt.host.name}")
        report = report_mod.build_report(model, profile, opt, outcomes, winner, closest, eval_data,
                                         calibration, tolerance, plan, notes, time.time() - started)
        report.arm64, report.int8_host, report.budget = arm64, int8_host, budget.to_dict()
        report.latency_by_length = by_length
        if budget.skipped:
            report.notes.append(f"the --time-budget of {budget.seconds:g} s ran out; left out: "
                                + "; ".join(budget.skipped))
        progress(f"writing {out_dir}")
        with atomic_directory(out_dir) as staging:
            report_mod.write(staging, report, outcomes, winner, model, profile,
                             golden=(eval_data, opt.reference))
            progress(f"writing {out_dir}")  # a Ctrl-C during the write leaves nothing behind
    result = OptimizeResult(report, out_dir, winner.candidate.id if winner else None, plan=report.plan)
    if winner is None and not any(o.metrics for o in outcomes) and budget.skipped:
        error = NoCandidatePassed(f"the --time-budget of {budget.seconds:g} s ran out before any candidate was "
                                  "evaluated", f"raise --time-budget; the report is in {out_dir}")
        error.result = result
        raise error
    if winner is None and not any(o.metrics for o in outcomes):
        # nothing reached the guard: "met the tolerance" would name the wrong cause
        reasons = "; ".join(f"{o.candidate.id}: {first_line(o.reason or 'failed', 300)}" for o in outcomes)
        error = NoCandidatePassed(f"no candidate for {profile.id} could be built ({reasons})",
                                  f"the report is in {out_dir}; each candidate's reason says what to change")
        error.result = result
        raise error
    if winner is None:
        error = NoCandidatePassed(
            f"no candidate met the tolerance ({report.tolerance_text}); closest: {closest or 'none'}",
            f"the report is in {out_dir}; loosen --tolerance or give better --data",
        )
        error.result = result
        raise error
    return result
