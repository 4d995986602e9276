"""The offline report card: a candidate against the current model before it ships.

Overall metrics (accuracy, macro F1 and calibration error for classifiers; agreement with the
baseline for embeddings), per-slice metrics with the worst slices first, the hard-case suite,
the data expectations, latency measured side by side, and a verdict from thresholds: the
"good enough" gate the retraining loop calls. With training and validation data (and labelled
recent data) it also says whether the model under-fits, over-fits or meets a shifted
distribution, with the numbers behind each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_directory, read_toml, to_json
from .._plot import pyplot, save
from .._schema import Document, SchemaError, from_dict
from ..errors import DataError, EdgekitError
from ..metrics import cosine_rows, mcnemar_p, probabilities
from .models import Predictor
from ..tables import labels_of, load_columns
from .expect import Suite, run_suite


class Thresholds(Document):
    """What 'good enough' means; a TOML file overrides any of these."""

    max_overall_drop_points: float = 0.5  # accuracy may not fall by more than this
    max_slice_drop_points: float = 2.0  # nor on any slice with at least min_slice_rows rows
    min_slice_rows: int = 20
    # ... where the drop is more than chance: a one-sided exact McNemar test on the paired
    # predictions (rows only the baseline got right against rows only the candidate got right)
    # below this p-value. One row on a 22-row slice is 4.5 points and proves nothing.
    significance: float = 0.05
    max_ece_increase: float = 0.03  # calibration may not get much worse
    max_hard_regressions: int = 0  # hard cases the baseline got right that the candidate gets wrong
    min_cosine: float = 0.99  # embeddings: agreement with the baseline's outputs
    underfit_accuracy: float = 0.9  # diagnosis: training accuracy below this is under-fitting
    overfit_gap_points: float = 5.0  # diagnosis: train - validation gap above this is over-fitting
    shift_gap_points: float = 5.0  # diagnosis: validation - recent gap above this is a shift
    curve_rising_points: float = 1.0  # learning curve: validation gain over the last doubling that says "more data"

    @classmethod
    def load(cls, path: Optional[str | Path]) -> "Thresholds":
        if path is None:
            return cls()

        try:
            return from_dict(cls, read_toml(path, "card config"))
        except SchemaError as exc:
            raise EdgekitError(f"{path}: {exc}") from None


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Card:
    candidate: str
    baseline: str
    data: str
    rows: int
    task: str
    overall: dict
    slices: list[dict] = field(default_factory=list)
    hard_cases: Optional[dict] = None
    expectations: Optional[dict] = None
    latency: Optional[dict] = None
    diagnosis: list[dict] = field(default_factory=list)
    learning_curve: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items()}, "passed": self.passed}


def classification_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    predicted = probs.argmax(1)
    correct = predicted == labels
    classes = np.unique(np.concatenate([labels, predicted]))
    f1s = []
    for c in classes:
        tp = int(((predicted == c) & (labels == c)).sum())
        fp, fn = int(((predicted == c) & (labels != c)).sum()), int(((predicted != c) & (labels == c)).sum())
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    confidence = probs.max(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    reliability = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap = abs(correct[mask].mean() - confidence[mask].mean())
            ece += mask.mean() * gap
            reliability.append([float(confidence[mask].mean()), float(correct[mask].mean()), int(mask.sum())])
    return {"accuracy": float(correct.mean()), "macro_f1": float(np.mean(f1s)), "ece": float(ece),
            "reliability": reliability, "rows": int(len(labels))}


def report_card(candidate: str, baseline: str, data: str | Path, slices: tuple[str, ...] = (),
                suite: Optional[str | Path] = None, expect: Optional[str | Path] = None,
                config: Optional[str | Path] = None, out: Optional[str | Path] = None, latency: bool = True,
                train: Optional[str | Path] = None, val: Optional[str | Path] = None,
                recent: Optional[str | Path] = None, train_hook=None,
                fractions: Optional[tuple[float, ...]] = None, progress=None) -> Card:
    thresholds = Thresholds.load(config)
    if train_hook is not None and (train is None or val is None):
        raise EdgekitError("a learning curve needs --train and --val", "give both with --train-hook")
    cand, base = Predictor(candidate), Predictor(baseline)
    columns = load_columns(data)
    feeds = cand.feeds(columns)
    if not len(next(iter(feeds.values()))):
        raise DataError(f"{data} holds no rows", "give the card data to judge on")
    out_c, out_b = cand.outputs(feeds), base.outputs(feeds)
    has_labels = any(c in columns for c in ("labels", "label"))
    card = Card(cand.name, base.name, str(data), len(out_c), "classification" if has_labels else "embedding", {})
    if has_labels:
        labels = labels_of(columns, None, str(data))
        pc, pb = probabilities(out_c), probabilities(out_b)
        outside = (labels < 0) | (labels >= pc.shape[1])
        if outside.any():  # every row would count as wrong for both models, and the card would pass
            raise DataError(f"{int(outside.sum())} labels in {data} are not classes of the model (e.g. "
                            f"{labels[outside][0]}; it has {pc.shape[1]}: 0-{pc.shape[1] - 1})",
                            "give labels as the model's class numbers")
        mc, mb = classification_metrics(pc, labels), classification_metrics(pb, labels)
        card.overall = {"candidate": mc, "baseline": mb}
        right_c, right_b = pc.argmax(1) == labels, pb.argmax(1) == labels
        whole = _paired("all", right_c, right_b, thresholds.max_overall_drop_points, thresholds)
        card.overall["paired"] = whole
        card.checks.append(Check("overall accuracy", not whole["worse"],
                                 f"{100 * mc['accuracy']:.2f}% vs {100 * mb['accuracy']:.2f}% "
                                 f"({-whole['drop_points']:+.2f} points{_evidence(whole)}; at most "
                                 f"{thresholds.max_overall_drop_points} lost beyond chance)"))
        card.checks.append(Check("calibration (ECE)", mc["ece"] - mb["ece"] <= thresholds.max_ece_increase,
                                 f"{mc['ece']:.3f} vs {mb['ece']:.3f} (at most +{thresholds.max_ece_increase})"))
        card.slices = _slices(columns, labels, right_c, right_b, slices, thresholds)
        judged = [s for s in card.slices if s["judged"]]
        worst = next((s for s in judged if s["worse"]), judged[0] if judged else None)
        card.checks.append(Check(
            "worst slice", worst is None or not worst["worse"],
            "no slice to judge" if worst is None else
            f"{worst['slice']}: {100 * worst['candidate']:.1f}% vs {100 * worst['baseline']:.1f}% "
            f"({-worst['drop_points']:+.1f} points on {worst['rows']} rows{_evidence(worst)}; at most "
            f"{thresholds.max_slice_drop_points} lost beyond chance)"))
    else:
        cos = cosine_rows(out_b, out_c)
        card.overall = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
        card.checks.append(Check("agreement with the baseline", float(cos.mean()) >= thresholds.min_cosine,
                                 f"mean cosine {cos.mean():.4f}, min {cos.min():.4f} (at least {thresholds.min_cosine})"))
    if suite is not None:
        from .hard import regression

        result = regression(candidate, baseline, suite, thresholds.max_hard_regressions)
        card.hard_cases = result.to_dict()
        card.checks.append(Check("hard-case suite", result.passed,
                                 f"{len(result.regressions)} regressions, {result.fixes} fixes on {result.examples} "
                                 f"examples (at most {thresholds.max_hard_regressions} regressions)"))
    if expect is not None:
        result = run_suite(expect if isinstance(expect, Suite) else Suite.load(expect), data)
        card.expectations = result.to_dict()
        card.checks.append(Check("data expectations", result.success,
                                 f"{len(result.outcomes) - len(result.failed())} of {len(result.outcomes)} met"))
    if latency:
        card.latency = _latency(cand, base)
    card.diagnosis = _diagnose(cand, train, val, recent, thresholds) if (train or val or recent) else []
    if train_hook is not None:
        from .curve import FRACTIONS, curve_dict, diagnose_curve, learning_curve

        points = learning_curve(train_hook, train, val, cand.input_names, fractions or FRACTIONS, progress=progress)
        card.learning_curve = curve_dict(points)
        card.diagnosis.append(diagnose_curve(points, thresholds.underfit_accuracy, thresholds.curve_rising_points))
    if out is not None:
        with atomic_directory(out) as tmp:
            card.plots = _plots(card, tmp, pc if has_labels else None, labels if has_labels else None)
            (tmp / "report.json").write_text(to_json(card.to_dict(), indent=2))
            (tmp / "report.md").write_text(markdown(card))
    return card


def _slices(columns, labels, right_c, right_b, names, thresholds) -> list[dict]:
    rows = []
    for name in names:
        if name == "class":
            key = labels.astype(str)
        elif name in columns and columns[name].ndim == 1:
            key = np.asarray([str(v) for v in columns[name]])
        else:
            raise EdgekitError(f"--slices {name}: no such column (or not one value per row)",
                               f"slice by 'class' or one of {', '.join(c for c in columns if columns[c].ndim == 1)}")
        for value in np.unique(key):
            mask = key == value
            row = _paired(f"{name}={value}", right_c[mask], right_b[mask], thresholds.max_slice_drop_points, thresholds)
            row["judged"] = row["rows"] >= thresholds.min_slice_rows
            row["worse"] = row["worse"] and row["judged"]
            rows.append(row)
    return sorted(rows, key=lambda r: (-r["drop_points"], r["slice"]))


def _paired(name: str, right_c: np.ndarray, right_b: np.ndarray, max_drop: float, t: Thresholds) -> dict:
    """Candidate against baseline on the same rows: accuracies, the rows each alone got right, the
    McNemar p-value, and whether that is a drop beyond ``max_drop`` points and beyond chance."""

    regressed, fixed = int((right_b & ~right_c).sum()), int((right_c & ~right_b).sum())
    n = len(right_c)
    drop = round(100 * (regressed - fixed) / max(n, 1), 3)
    p = mcnemar_p(regressed, fixed)
    return {"slice": name, "rows": n, "candidate": float(right_c.mean()) if n else 0.0,
            "baseline": float(right_b.mean()) if n else 0.0, "drop_points": drop, "regressed": regressed,
            "fixed": fixed, "p": p, "worse": drop > max_drop and p < t.significance}


def _evidence(row: dict) -> str:
    return f"; {row['regressed']} rows regressed, {row['fixed']} fixed, McNemar p = {row['p']:.2g}"


def _latency(cand: Predictor, base: Predictor) -> Optional[dict]:
    """p50 of each, measured interleaved by edgekit bench where both are model files."""
    def file_of(p: Predictor):
        if p._runtime is not None and p._runtime.active is not None:
            return str(p._runtime.active.path)
        if p._model is not None and p._model.path is not None and not p.is_torch:
            return str(p._model.path)
        return None

    files = [file_of(cand), file_of(base)]
    if None in files:
        return None
    from ..bench import BenchOptions, run_bench

    result = run_bench(files, BenchOptions(min_runs=50, min_seconds=1.0, max_seconds=5.0, threads=[1]))
    p50 = [r.steady["p50_ms"] for r in result.results]
    return {"candidate_p50_ms": p50[0], "baseline_p50_ms": p50[1], "ratio": p50[0] / p50[1]}


def _diagnose(model: Predictor, train, val, recent, t: Thresholds) -> list[dict]:
    """Under-fitting, over-fitting or a shifted distribution, from accuracies on each split."""
    acc = {}
    for name, path in (("train", train), ("validation", val), ("recent", recent)):
        if path is not None:
            cols = load_columns(path)
            acc[name] = float((probabilities(model.outputs(model.feeds(cols))).argmax(1)
                               == labels_of(cols, None, str(path))).mean())
    found = []
    if "train" in acc and acc["train"] < t.underfit_accuracy and acc.get("validation", acc["train"]) < t.underfit_accuracy:
        found.append({"finding": "under-fitting", "numbers": acc,
                      "advice": "training and validation accuracy are both low: scale the model (capacity, "
                                "training time), the data is not the limit yet"})
    if "train" in acc and "validation" in acc and 100 * (acc["train"] - acc["validation"]) > t.overfit_gap_points:
        found.append({"finding": "over-fitting", "numbers": acc,
                      "advice": f"a {100 * (acc['train'] - acc['validation']):.1f}-point train/validation gap: "
                                "scale the data (more, or augmented), or regularise"})
    if "validation" in acc and "recent" in acc and 100 * (acc["validation"] - acc["recent"]) > t.shift_gap_points:
        found.append({"finding": "distribution shift", "numbers": acc,
                      "advice": f"validation is {100 * (acc['validation'] - acc['recent']):.1f} points better than "
                                "recent logged data: retrain on the shifted data (and scale both)"})
    if not found:
        found.append({"finding": "none", "numbers": acc, "advice": "no sign of under-fitting, over-fitting or shift"})
    return found


def _plots(card: Card, out: Path, probs, labels) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    made = []
    if card.slices:
        shown = card.slices[:24]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.5))
        y = np.arange(len(shown))
        ax.barh(y - 0.2, [100 * s["baseline"] for s in shown], height=0.4, label="baseline", color="tab:gray")
        ax.barh(y + 0.2, [100 * s["candidate"] for s in shown], height=0.4, label="candidate", color="tab:blue")
        ax.set_yticks(y, [f"{s['slice']} ({s['rows']})" for s in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy % (worst slices first)")
        ax.legend(fontsize=8)
        made.append(save(fig, out / "slices.png"))
    if probs is not None:
        classes = int(max(labels.max(), probs.shape[1] - 1)) + 1
        matrix = np.zeros((classes, classes), int)
        np.add.at(matrix, (labels, probs.argmax(1)), 1)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.imshow(matrix, cmap="Blues")
        for i in range(classes):
            for j in range(classes):
                if matrix[i, j]:
                    ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > matrix.max() / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("candidate: confusion matrix", fontsize=10)
        made.append(save(fig, out / "confusion.png"))
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        for who, colour in (("baseline", "tab:gray"), ("candidate", "tab:blue")):
            points = np.asarray(card.overall[who]["reliability"])
            if len(points):
                ax.plot(points[:, 0], points[:, 1], marker="o", color=colour,
                        label=f"{who} (ECE {card.overall[who]['ece']:.3f})")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        ax.set_title("calibration", fontsize=10)
        made.append(save(fig, out / "calibration.png"))
    if card.learning_curve:
        rows = [p["rows"] for p in card.learning_curve]
        fig, ax = plt.subplots(figsize=(5, 4))
        for key, label, colour in (("train_accuracy", "train (its subset)", "tab:orange"),
                                   ("validation_accuracy", "validation", "tab:blue")):
            ax.plot(rows, [100 * p[key] for p in card.learning_curve], marker="o", label=label, color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("training rows (log)")
        ax.set_ylabel("accuracy %")
        ax.set_title("learning curve: still rising means more data helps", fontsize=10)
        ax.legend(fontsize=8)
        made.append(save(fig, out / "learning_curve.png"))
    return made


def markdown(card: Card) -> str:
    lines = [f"# Report card: {card.candidate} against {card.baseline}", "",
             f"Data: `{card.data}`, {card.rows} rows. **Verdict: {'PASS' if card.passed else 'FAIL'}**", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in card.checks]
    if card.task == "classification":
        o = card.overall
        lines += ["", "## Overall", "", "| | accuracy | macro F1 | ECE |", "|---|---|---|---|"]
        lines += [f"| {who} | {100 * o[who]['accuracy']:.2f}% | {o[who]['macro_f1']:.4f} | {o[who]['ece']:.4f} |"
                  for who in ("candidate", "baseline")]
    else:
        lines += ["", f"Agreement with the baseline: mean cosine {card.overall['cosine_mean']:.4f}, "
                      f"min {card.overall['cosine_min']:.4f}."]
    if card.slices:
        lines += ["", "## Slices (worst first)", "", "| slice | rows | candidate | baseline | change (points) | "
                  "regressed / fixed | McNemar p |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {s['slice']} | {s['rows']}{'' if s['judged'] else ' (too few to judge)'} | "
                  f"{100 * s['candidate']:.1f}% | {100 * s['baseline']:.1f}% | {-s['drop_points']:+.1f} | "
                  f"{s['regressed']} / {s['fixed']} | {s['p']:.2g}{' **worse**' if s['worse'] else ''} |"
                  for s in card.slices]
    if card.hard_cases:
        regs = card.hard_cases["regressions"]
        lines += ["", "## Hard cases", "", f"{len(regs)} regressions, {card.hard_cases['fixes']} fixes on "
                  f"{card.hard_cases['examples']} examples."]
        lines += [f"- example {r['example']} (source row {r['source_index']}, label {r['label']}, {r['why']})"
                  for r in regs[:50]]
    if card.expectations:
        failed = [o for o in card.expectations["outcomes"] if not o["success"]]
        lines += ["", "## Data expectations", "", f"{len(card.expectations['outcomes']) - len(failed)} of "
                  f"{len(card.expectations['outcomes'])} met."]
        lines += [f"- FAIL {o['dimension']}/{o['kind']} on {o['column']}: {o['observed']}" for o in failed]
    if card.latency:
        lines += ["", "## Latency", "", f"p50 {card.latency['candidate_p50_ms']:.3f} ms against "
                  f"{card.latency['baseline_p50_ms']:.3f} ms ({card.latency['ratio']:.2f}x), measured side by side."]
    if card.diagnosis:
        lines += ["", "## Diagnosis", ""]
        for d in card.diagnosis:
            numbers = ", ".join(f"{k} {100 * v:.1f}%" for k, v in d["numbers"].items())
            lines.append(f"- **{d['finding']}** ({numbers}): {d['advice']}")
    if card.learning_curve:
        lines += ["", "## Learning curve", "", "| fraction | rows | train | validation |", "|---|---|---|---|"]
        lines += [f"| {p['fraction']:.0%} | {p['rows']} | {100 * p['train_accuracy']:.1f}% | "
                  f"{100 * p['validation_accuracy']:.1f}% |" for p in card.learning_curve]
    lines += [""] + [f"![{p}]({p})" for p in card.plots]
    return "\n".join(lines) + "\n"
