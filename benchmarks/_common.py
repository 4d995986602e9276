"""Helpers shared by the benchmark scripts: side-by-side timing, a plain table and the goals.

Every script judges its numbers with :class:`Goals`: each goal names its baseline, prints
PASS/FAIL, and the script exits non-zero when any goal fails. ``benchmarks/run_all.py`` (``make
bench``) collects the goals of every script into one summary table.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# torch's OpenMP threads spin-wait after each op by default, stealing cores from onnxruntime and
# LiteRT when they are timed side by side; passive waiting keeps the comparison fair. Set before
# torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from edgekit.metrics import cosine_rows  # noqa: E402,F401  (the scripts import it from here)
from edgekit.optimizer.timing import interleaved, summary  # noqa: E402


def side_by_side(runs: dict, budget_s: float = 30.0, min_rounds: int = 30) -> dict[str, dict]:
    return {k: summary(v) for k, v in interleaved(runs, warmup=5, min_rounds=min_rounds,
                                                   max_rounds=2000, budget_s=budget_s).items()}


def print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max([len(str(h)), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(headers)]  # rows may be empty
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


class Goals:
    """Named goals for one script: ``check`` prints and records one, ``exit_code`` ends the run."""

    def __init__(self, script: str):
        self.script = os.path.basename(script)
        self.results: list[dict] = []

    def check(self, goal: str, measured: str, ok: bool, baseline: str = "") -> bool:
        row = {"script": self.script, "goal": goal, "measured": measured, "baseline": baseline, "ok": bool(ok)}
        self.results.append(row)
        against = f" vs {baseline}" if baseline else ""
        print(f"goal: {goal}{against}: {measured} -> {'PASS' if ok else 'FAIL'}", flush=True)
        summary = os.environ.get("EDGEKIT_BENCH_SUMMARY")
        if summary:
            with open(summary, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        return bool(ok)

    def exit_code(self) -> int:
        failed = [r for r in self.results if not r["ok"]]
        if not self.results:
            print("no goal was checked: FAIL", file=sys.stderr)
            return 1
        print(f"\n{self.script}: {len(self.results) - len(failed)} of {len(self.results)} goals met")
        return 1 if failed else 0


def postgres_base() -> str | None:
    """$EDGEKIT_TEST_POSTGRES, or None after saying that the script needs it."""
    base = os.environ.get("EDGEKIT_TEST_POSTGRES")
    if not base:
        print("needs PostgreSQL: set EDGEKIT_TEST_POSTGRES=postgresql://... (.ci/run starts one)")
    return base


def fresh_schema(base: str, name: str) -> str:
    """A URL of ``base`` (PostgreSQL) whose search path is schema ``name``, made empty."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"


def scratch(prefix: str) -> Path:
    """A work directory for one script's run, removed when the script exits (set
    EDGEKIT_BENCH_KEEP=1 to keep it for a look at the artifacts)."""
    import atexit
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=prefix))
    if not os.environ.get("EDGEKIT_BENCH_KEEP"):
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _service(name: str, argv: list[str], ready):
    """`python -m edgekit ARGV` in its own process until ``ready()``; stopped on the way out."""
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                if ready():
                    break
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait()


@contextlib.contextmanager
def collector(db_url: str, *extra: str):
    """`edgekit collector serve` in its own process on a free loopback port: yields (url, process)."""
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["collector", "serve", "--db", db_url, "--port", url.rsplit(":", 1)[1], *extra]
    with _service("collector", argv, lambda: urllib.request.urlopen(f"{url}/v1/health", timeout=1)) as proc:
        yield url, proc


@contextlib.contextmanager
def agent(token_file, storage):
    """`edgekit agent serve` in its own process on a free loopback port, with a new token: yields its URL."""
    subprocess.run([sys.executable, "-m", "edgekit", "agent", "token", str(token_file)], check=True,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    argv = ["agent", "serve", "--port", str(port), "--token-file", str(token_file), "--storage", str(storage)]
    # the agent answers only authorised requests: an accepted connection says it is up
    with _service("agent", argv, lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True):
        yield f"http://127.0.0.1:{port}"
