"""When to retrain: ad hoc, on a schedule, on a volume of new labels, or on a monitoring alert;
held back by a cool-down and a budget of runs per week. Every decision, retrain or not, is
recorded with its reason and the numbers behind it (edgekit loop history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..monitor.rules import evaluate, load_rules, parse_duration
from .config import LoopConfig
from .state import last_run, record_decision, runs_since

WEEK = 7 * 86400.0
TRIGGERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class Decision:
    retrain: bool
    trigger: str
    reason: str
    numbers: dict


def trigger(name: str):
    def wrap(fn):
        TRIGGERS[name] = fn
        return fn
    return wrap


@trigger("schedule")
def _schedule(config: LoopConfig, db, now: float, since: float):
    if not config.trigger.schedule:
        return None
    every = parse_duration(config.trigger.schedule)
    waited = now - since
    return waited >= every, f"{waited / 3600:.1f} h since the last run (schedule: every {config.trigger.schedule})", \
        {"hours_since_last": round(waited / 3600, 2)}


@trigger("volume")
def _volume(config: LoopConfig, db, now: float, since: float):
    """Users' labelled feedback on this model's predictions received since the last run."""
    if not config.trigger.volume:
        return None
    from ..collector.db import LABEL_STORE

    with db.read() as tx:
        count = tx.one("SELECT COUNT(*) FROM feedback f JOIN records r ON r.device = f.device AND r.request_id = "
                       "f.request_id WHERE r.model = ? AND f.received > ? AND f.store <> ? AND f.label IS NOT NULL "
                       "AND f.label <> 'null'", (config.model, since, LABEL_STORE))[0]
    return count >= config.trigger.volume, f"{count} new labelled feedback (volume trigger at {config.trigger.volume})", \
        {"new_labels": count}


@trigger("alert")
def _alert(config: LoopConfig, db, now: float, since: float):
    """The monitor's rules (its default ones, or the loop's rules file) over the fleet now."""
    if not config.trigger.alerts:
        return None

    rules = [r for r in load_rules(config.path(config.trigger.rules)) if r.name in config.trigger.alerts]
    if not rules:
        return False, f"none of the alert rules {list(config.trigger.alerts)} exists", {}
    alerts = evaluate(db, config.model, tuple(rules), now=now)
    fired = [f"{a.rule} on {a.scope} ({a.signal} = {a.value:.3g} {a.threshold}, {a.samples} samples)" for a in alerts]
    return bool(fired), ("; ".join(fired) if fired else "no alert fires"), \
        {"alerts": [a.to_dict() for a in alerts]}


def _open_canary(config: LoopConfig, db):
    """The rollout of this model still in canary (or paused there), when the loop hands its
    releases to the fleet; else None."""
    if not (config.publish_store and config.canary):
        return None
    from ..collector.releases import current_rollout

    rollout = current_rollout(db, config.model)
    return rollout if rollout is not None and rollout.state in ("canary", "paused") else None


def decide(config: LoopConfig, db, now: float, forced: bool = False) -> Decision:
    """Ask each trigger; the first that fires wins, unless the cool-down, the weekly budget or a
    canary still undecided holds it back (``forced``: ad hoc, which only the budget and the canary
    hold back). Recorded either way."""
    previous = last_run(db, config.model)
    since = previous.started if previous else 0.0
    numbers: dict = {"since_last_run_h": round((now - since) / 3600, 2) if previous else None}
    week = runs_since(db, config.model, now - WEEK)
    numbers["runs_this_week"] = week
    rollout = _open_canary(config, db)
    if week >= config.trigger.max_runs_per_week:
        decision = Decision(False, "budget", f"{week} runs in the last 7 days (budget: "
                            f"{config.trigger.max_runs_per_week})", numbers)
    elif rollout is not None:  # a release the fleet has not decided yet: the next one could not roll out
        numbers["in_canary"] = rollout.version
        where = "in canary" if rollout.state == "canary" else "paused in canary"
        decision = Decision(False, "canary", f"{config.model} {rollout.version} is still {where} on the fleet: "
                            f"decide it first (edgekit release decide, promote or rollback {config.model})", numbers)
    elif forced:
        decision = Decision(True, "now", "asked for (loop run --now)", numbers)
    elif previous and now - previous.started < parse_duration(config.trigger.cooldown):
        decision = Decision(False, "cooldown", f"the last run started {(now - previous.started) / 3600:.1f} h ago "
                            f"(cool-down {config.trigger.cooldown})", numbers)
    else:
        decision = Decision(False, "none", "no trigger fired", numbers)
        reasons = []
        for name, fn in TRIGGERS.items():
            answer = fn(config, db, now, since)
            if answer is None:
                continue
            fired, reason, detail = answer
            numbers[name] = detail
            reasons.append(f"{name}: {reason}")
            if fired:
                decision = Decision(True, name, reason, numbers)
                break
        if not decision.retrain and reasons:
            decision = Decision(False, "none", "; ".join(reasons), numbers)
    record_decision(db, config.model, now, decision.retrain, decision.trigger, decision.reason, decision.numbers)
    return decision
