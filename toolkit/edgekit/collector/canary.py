"""The canary decision: compare the new version with the baseline over the same period, Kayenta
style, and promote, roll back or wait - with the numbers in the record.

Per signal the canary is judged "worse" when a one-sided test says so (Fisher's exact test on
proportions, Mann-Whitney U on latencies; scipy) at ``alpha`` *and* the difference exceeds a
margin that matters (a p-value alone flags harmless differences on large samples). A version
that failed on any device (a self-test that did not pass, a crash on load) rolls back at once.
Promotion needs ``min_predictions`` on both sides and no signal worse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from .db import LABEL_STORE, Database
from .releases import current_rollout, set_state
from ..metrics import mcnemar_p


@dataclass(frozen=True)
class Policy:
    min_predictions: int = 200  # on each side before promotion
    alpha: float = 0.01
    accuracy_margin: float = 0.02  # feedback accuracy lower by more than this
    fallback_margin: float = 0.02  # fallback share higher by more than this
    latency_margin: float = 0.2  # median latency higher by more than this share
    # ... and by more than this many ms: on a 0.08 ms model, 20% is scheduling jitter between
    # devices, not a slower release, and must not roll a good one back
    latency_floor_ms: float = 0.5
    min_feedback: int = 30  # labelled feedback on each side to judge accuracy


@dataclass
class Verdict:
    decision: str  # promote, rollback, wait
    reason: str
    signals: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _counts(tx, model: str, version: str, since: float) -> dict:
    row = tx.one("SELECT COUNT(*), SUM(has_fallback) FROM records WHERE model = ? AND version = ? AND time >= ?",
                 (model, version, since))
    fb = tx.one("SELECT COUNT(*), SUM(CASE WHEN CAST(f.label AS TEXT) = CAST(r.top_class AS TEXT) THEN 1 ELSE 0 END) "
                "FROM feedback f JOIN records r ON r.device = f.device AND r.request_id = f.request_id "
                "WHERE r.model = ? AND r.version = ? AND r.time >= ? AND f.store <> ? AND f.label IS NOT NULL "
                "AND f.label <> 'null'", (model, version, since, LABEL_STORE))
    latency = [r[0] for r in tx.all("SELECT latency_ms FROM records WHERE model = ? AND version = ? AND time >= ? "
                                    "AND latency_ms IS NOT NULL ORDER BY time DESC LIMIT 5000",
                                    (model, version, since))]
    return {"predictions": row[0] or 0, "fallbacks": row[1] or 0, "labelled": fb[0] or 0, "correct": fb[1] or 0,
            "latency": latency}


def latency_signal(canary: list, control: list, policy: Policy) -> Optional[dict]:
    """Canary latency against control: worse only when significantly higher (Mann-Whitney), by
    more than the margin and by more than the floor; None below 20 samples a side."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    if len(canary) < 20 or len(control) < 20:
        return None
    med_c, med_b = float(np.median(canary)), float(np.median(control))
    p = mannwhitneyu(canary, control, alternative="greater").pvalue
    worse = p < policy.alpha and med_c > med_b * (1 + policy.latency_margin) and med_c - med_b > policy.latency_floor_ms
    return {"signal": "latency p50 ms", "canary": med_c, "baseline": med_b, "n": [len(canary), len(control)],
            "p": float(p), "verdict": "worse" if worse else "pass"}


def judge(db: Database, model: str, policy: Policy = Policy()) -> Optional[Verdict]:
    """The verdict on the model's canary (None when none runs)."""
    rollout = current_rollout(db, model)
    if rollout is None or rollout.state != "canary":
        return None
    with db.read() as tx:
        failed = tx.all("SELECT device, reason FROM device_models WHERE model = ? AND version = ? AND state = 'failed'",
                        (model, rollout.version))
        canary = _counts(tx, model, rollout.version, rollout.started)
        control = _counts(tx, model, rollout.baseline or "", rollout.started) if rollout.baseline else None
    if failed:
        return Verdict("rollback", f"{rollout.version} failed on {len(failed)} device(s): {failed[0][0]}: {failed[0][1]}")
    if rollout.shadow:
        return shadow_verdict(rollout.version, rollout.baseline, *_shadow_counts(db, model, rollout), policy)
    if control is None:
        return Verdict("wait", "no baseline version to compare with")
    return verdict(rollout.version, rollout.baseline, canary, control, policy)


def _proportion(name: str, bad_c: int, n_c: int, bad_b: int, n_b: int, margin: float, policy: Policy) -> Optional[dict]:
    """A share of bad outcomes, canary against control: worse when Fisher's exact test says so at
    ``alpha`` and the share is higher by more than ``margin``."""
    from scipy.stats import fisher_exact

    if n_c == 0 or n_b == 0:
        return None
    share_c, share_b = bad_c / n_c, bad_b / n_b
    p = fisher_exact([[bad_c, n_c - bad_c], [bad_b, n_b - bad_b]], alternative="greater")[1]
    worse = p < policy.alpha and share_c - share_b > margin
    return {"signal": name, "canary": share_c, "baseline": share_b, "n": [n_c, n_b], "p": float(p),
            "verdict": "worse" if worse else "pass"}


def verdict(version: str, baseline: str, canary: dict, control: dict, policy: Policy = Policy()) -> Verdict:
    """Promote, roll back or wait, from each side's counts (``_counts``: predictions, fallbacks,
    labelled, correct, latency): every signal is judged, the first worse one rolls back."""
    signals = [_proportion("fallback share", canary["fallbacks"], canary["predictions"], control["fallbacks"],
                           control["predictions"], policy.fallback_margin, policy)]
    if canary["labelled"] >= policy.min_feedback and control["labelled"] >= policy.min_feedback:
        signals.append(_proportion("feedback error rate", canary["labelled"] - canary["correct"], canary["labelled"],
                                   control["labelled"] - control["correct"], control["labelled"],
                                   policy.accuracy_margin, policy))
    signals.append(latency_signal(canary["latency"], control["latency"], policy))
    signals = [s for s in signals if s is not None]
    worse = [s for s in signals if s["verdict"] == "worse"]
    if worse:
        s = worse[0]
        return Verdict("rollback", f"{s['signal']}: {s['canary']:.4g} on {version} vs {s['baseline']:.4g} on "
                       f"{baseline} (p = {s['p']:.2g})", signals)
    short = min(canary["predictions"], control["predictions"])
    if short < policy.min_predictions:
        return Verdict("wait", f"{canary['predictions']} canary and {control['predictions']} baseline predictions "
                       f"(promotion needs {policy.min_predictions} each)", signals)
    return Verdict("promote", f"no signal worse on {canary['predictions']} canary predictions", signals)


# Shadow records are logged as "<request id>:shadow": each pairs with the prediction served.
_PAIRS = ("FROM records s JOIN records p ON p.device = s.device "
          "AND p.request_id = substr(s.request_id, 1, length(s.request_id) - 7) "
          "WHERE s.model = ? AND s.version = ? AND s.variant = 'shadow' AND s.time >= ?")


def _shadow_counts(db: Database, model: str, rollout) -> tuple[int, int, int, int]:
    """(pairs, pairs that differ, labelled pairs only the baseline got right, only the new one)."""
    params = (model, rollout.version, rollout.started)
    with db.read() as tx:
        pairs, differ = tx.one(f"SELECT COUNT(*), SUM(CASE WHEN s.top_class <> p.top_class THEN 1 ELSE 0 END) {_PAIRS}",
                               params)
        only_base, only_new = tx.one(
            "SELECT SUM(CASE WHEN CAST(f.label AS TEXT) = CAST(p.top_class AS TEXT) AND CAST(f.label AS TEXT) <> "
            "CAST(s.top_class AS TEXT) THEN 1 ELSE 0 END), SUM(CASE WHEN CAST(f.label AS TEXT) <> CAST(p.top_class AS "
            "TEXT) AND CAST(f.label AS TEXT) = CAST(s.top_class AS TEXT) THEN 1 ELSE 0 END) "
            f"{_PAIRS.replace('WHERE', 'JOIN feedback f ON f.device = p.device AND f.request_id = p.request_id WHERE')}"
            " AND f.store <> ? AND f.label IS NOT NULL AND f.label <> 'null'", (*params, LABEL_STORE))
    return pairs or 0, differ or 0, only_base or 0, only_new or 0


def shadow_verdict(version: str, baseline: str, pairs: int, differ: int, only_base: int, only_new: int,
                   policy: Policy = Policy()) -> Verdict:
    """Shadow: the new version answered the very requests the baseline served. Disagreement is
    reported; users' labels on those requests decide, paired (an exact McNemar test on the
    requests only one of the two got right)."""

    signals = [{"signal": "disagreement with the served version", "canary": differ / pairs if pairs else 0.0,
                "baseline": 0.0, "n": [pairs, pairs], "p": 1.0, "verdict": "pass"}]
    if only_base + only_new:
        p = mcnemar_p(only_base, only_new)
        worse = p < policy.alpha and (only_base - only_new) / pairs > policy.accuracy_margin
        signals.append({"signal": "labelled requests only the baseline got right", "canary": only_base,
                        "baseline": only_new, "n": [only_base + only_new, pairs], "p": float(p),
                        "verdict": "worse" if worse else "pass"})
        if worse:
            return Verdict("rollback", f"in shadow, {version} got {only_base} labelled requests wrong that "
                           f"{baseline} got right, and {only_new} the other way (p = {p:.2g})", signals)
    if pairs < policy.min_predictions:
        return Verdict("wait", f"{pairs} shadow predictions (promotion needs {policy.min_predictions})", signals)
    return Verdict("promote", f"in shadow on {pairs} requests, not worse ({100 * differ / pairs:.1f}% disagreement)",
                   signals)


def decide(db: Database, model: str, policy: Policy = Policy()) -> Optional[Verdict]:
    """Judge and act: promote or roll back with the verdict in the rollout's events."""
    verdict = judge(db, model, policy)
    if verdict is not None and verdict.decision in ("promote", "rollback"):
        state = "promoted" if verdict.decision == "promote" else "rolled_back"
        if state == "rolled_back" and current_rollout(db, model).baseline is None:
            # a first rollout has nothing to return to: stop it spreading, and say so
            state, verdict = "paused", Verdict("pause", f"{verdict.reason}; no earlier version to roll back to, so "
                                               "the rollout is paused", verdict.signals)
        set_state(db, model, state, verdict.reason, {"signals": verdict.signals, "automatic": True})
    return verdict
