"""``make bench``: run every benchmark script, one after another, and print one summary table.

Each script measures side by side in its own run and records its goals (see _common.Goals);
this runner only collects them. Exit status 1 when any goal fails or any script crashes.

    .venv/bin/python benchmarks/run_all.py [--only runtime_batching,sync_throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import print_table  # noqa: E402


def scripts() -> list[Path]:
    # fit_profiles.py is a tool, not a benchmark: it rewrites the shipped profiles' fits
    return sorted(p for p in HERE.glob("*.py")
                  if not p.name.startswith("_") and p.name not in ("run_all.py", "fit_profiles.py"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    args = parser.parse_args()
    chosen = scripts()
    if args.only:
        wanted = {name.strip().removesuffix(".py") for name in args.only.split(",")}
        unknown = wanted - {p.stem for p in chosen}
        if unknown:
            print(f"error: no benchmark named {', '.join(sorted(unknown))} (have: {', '.join(p.stem for p in chosen)})",
                  file=sys.stderr)
            return 2
        chosen = [p for p in chosen if p.stem in wanted]
    summary = Path(tempfile.mkstemp(prefix="edgekit-bench-", suffix=".jsonl")[1])
    env = {**os.environ, "EDGEKIT_BENCH_SUMMARY": str(summary), "PYTHONPATH": str(HERE.parent)}
    crashed = []
    for script in chosen:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.monotonic()
        done = subprocess.run([sys.executable, str(script)], env=env, cwd=HERE.parent)
        print(f"=== {script.name}: exit {done.returncode} after {time.monotonic() - start:.0f} s ===", flush=True)
        recorded = {json.loads(line)["script"] for line in summary.read_text().splitlines()}
        if done.returncode not in (0, 1) or script.name not in recorded:
            crashed.append(script.name)
    rows = [json.loads(line) for line in summary.read_text().splitlines()]
    summary.unlink()
    print("\nSummary (each goal measured side by side against its baseline in its script's own run)\n")
    print_table(["script", "goal", "baseline", "measured", "result"],
                [[r["script"], r["goal"], r["baseline"] or "-", r["measured"], "PASS" if r["ok"] else "FAIL"]
                 for r in rows] + [[name, "(crashed or checked no goal)", "-", "-", "FAIL"] for name in crashed])
    failed = sum(not r["ok"] for r in rows) + len(crashed)
    print(f"\n{len(rows) - sum(not r['ok'] for r in rows)} of {len(rows)} goals met" +
          (f"; {len(crashed)} script(s) crashed" if crashed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
