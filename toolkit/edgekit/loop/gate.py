"""The offline gate: the trained model is optimised for the fleet's target and packaged, then
judged by the report card against the bundle the fleet runs now, on the data set's test split
(the newest fleet data), by slice, on the growing hard-case suite and, when a factory is named,
with the memorisation check of the training code. Only a candidate that passes becomes a release.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from .._schema import replace, to_dict
from .._io import atomic_write_bytes, atomic_write_text
from .config import Gate

# The loop's defaults for the report card: a retrained model may fix many hard cases and still
# flip a few near the decision boundary; it may not lose overall or on a slice.
DEFAULT_THRESHOLDS = {"max_hard_regressions": 3, "max_overall_drop_points": 0.5, "max_slice_drop_points": 2.0}


def _declaration(processing, root: Path) -> Optional[dict]:
    """The current bundle's processing as a declaration optimize accepts (the tokenizer by path)."""
    if processing is None:
        return None

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    data = clean(to_dict(processing))
    if data.get("text"):
        data["text"]["tokenizer"] = str(root / data["text"]["tokenizer"])
        data["text"].pop("sha256", None)
    return data


def package_candidate(model: str, current: str, dataset: Path, target: str, out: Path, version: str,
                      formats: Optional[tuple[str, ...]] = None, sign_key: Optional[str] = None,
                      progress=None) -> dict:
    """``edgekit optimize`` for the fleet's target with the current bundle's processing, packed
    into ``out/candidate.ekb``."""
    from ..bundle import open_bundle
    from ..models import load_model
    from ..optimizer import optimize

    root, manifest, holder = open_bundle(current)  # kept unpacked while optimize copies the tokenizer
    try:
        candidate = load_model(str(model))
        candidate.name = manifest.model.name  # the fleet logs, monitors and rolls out the model by this name
        result = optimize(candidate, target=target, data=str(dataset / "val.npz"), out=out / "optimized",
                          formats=set(formats) if formats else None,
                          processing=_declaration(manifest.processing, root), progress=progress or (lambda msg: None))
    finally:
        if holder is not None:
            holder.cleanup()
    bundle = result.package(out / "candidate.ekb", sign_key=sign_key, version=version)
    return {"bundle": str(bundle), "winner": result.report.winner, "report": str(result.out_dir / "report.md")}


def grow_hard_cases(current: str, labelled: Path, suite: Path, top: int = 50) -> dict:
    """Add the current model's hardest labelled fleet examples to the loop's hard-case suite
    (deduplicated by content), so each run's candidate is held to every earlier run's hard cases."""
    from ..testing.hard import hard_cases
    from ..testing.expect import combined_row_hashes

    found = hard_cases(current, labelled, top=top, out=suite.with_suffix(".new.npz"))
    new_path = suite.with_suffix(".new.npz")
    with np.load(new_path) as f:
        new = {k: f[k] for k in f.files}
    new_path.unlink()
    if suite.is_file():
        with np.load(suite) as f:
            old = {k: f[k] for k in f.files}
        merged = {k: np.concatenate([old[k], new[k]]) for k in old if k in new}
    else:
        merged = new
    inputs = [k for k in merged if k not in ("labels", "source_index", "score", "why", "source", "found_with")]
    _, first = np.unique(combined_row_hashes(merged, sorted(inputs)), return_index=True)
    merged = {k: v[np.sort(first)] for k, v in merged.items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **merged)
    atomic_write_bytes(suite, buffer.getvalue())
    return {"added": found["examples"], "examples": int(len(merged["labels"])), "file": str(suite)}


# Expectations of a feed that a data set the loop forms does not meet by design, and why.
CURATED = {"row_count": "curation and the split set a data set's size",
           "label_distribution": "curation picks the classes the model finds hard"}


def judge(candidate: str, current: str, dataset: Path, out: Path, gate: Gate, suite: Optional[Path]) -> dict:
    """The report card (and the memorisation check); returns the verdict with its reasons."""
    from ..testing.card import report_card

    limits = {**DEFAULT_THRESHOLDS, **gate.thresholds}
    config = out / "card.toml"
    atomic_write_text(config, "".join(f"{k} = {json.dumps(v)}\n" for k, v in limits.items()))
    expect, left_out = None, []
    if gate.expect:
        from ..testing.expect import Suite

        # a suite suggested from a keyed feed also checks its ids, which data sets do not carry
        with np.load(dataset / "test.npz") as split:
            expect, left_out = Suite.load(gate.expect).on_columns(split.files)
        # ... and its volume and class shares, which curation sets here: it queues what the model
        # finds hard, so a curated split's classes are skewed by design
        left_out += [f"{c.kind} ({CURATED[c.kind]})" for c in expect.checks if c.kind in CURATED]
        expect = replace(expect, checks=tuple(c for c in expect.checks if c.kind not in CURATED))
    card = report_card(candidate, current, dataset / "test.npz", slices=tuple(gate.slices),
                       suite=suite if suite and suite.is_file() else None,
                       expect=expect, config=config, out=out / "card", latency=True)
    checks = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in card.checks]
    for check in checks:
        if check["name"] == "data expectations" and left_out:
            check["detail"] += f"; left out, on columns the data set does not carry: {'; '.join(left_out)}"
    if gate.factory:
        from ..testing.memorize import memorize

        from ..bundle import read_manifest

        result = memorize(gate.factory, dataset / "train.npz", columns_of=dict(gate.inputs),
                          positional=tuple(s.name for s in read_manifest(current).inputs))
        detail = "; ".join(result.reasons) or f"the training code fits {result.steps}-step samples"
        checks.append({"name": "memorisation", "passed": result.passed, "detail": detail})
    failed = [c for c in checks if not c["passed"]]
    overall = card.overall
    return {"passed": not failed, "checks": checks, "failed": [f"{c['name']}: {c['detail']}" for c in failed],
            "candidate_accuracy": overall.get("candidate", {}).get("accuracy"),
            "current_accuracy": overall.get("baseline", {}).get("accuracy"),
            "card": str(out / "card" / "report.md")}
