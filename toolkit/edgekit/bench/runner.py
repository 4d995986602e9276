"""Run benchmarks: expand artifacts into variants, one worker process each, interleave them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from .._io import sha256_file
from .._schema import Document, field, to_dict
from ..errors import EdgekitError, ModelLoadError
from .env import environment
from .stats import latency_stats
from .. import formats

SCHEMA = "edgekit.bench/1"
BURST_MS = 20.0  # interleaving granularity: each worker's turn lasts about this long


class BenchOptions(Document):
    threads: list[Optional[int]] = field(default_factory=lambda: [None])
    batches: list[int] = field(default_factory=lambda: [1])
    # sequence lengths to sweep (the varying axis 1 of token inputs, synthetic inputs); None: as given
    lengths: list[Optional[int]] = field(default_factory=lambda: [None])
    provider: str = "cpu"
    input_data: Optional[str] = None
    warmup_runs: int = 10
    warmup_s: float = 0.5
    min_runs: int = 100
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    strict_provider: bool = False
    baseline: Optional[str] = None
    allow_spinning: Optional[bool] = None  # None: on for a single variant, off when interleaving

    def __post_init__(self):
        if self.provider not in ("cpu", "cuda", "tensorrt", "xnnpack"):
            raise EdgekitError(f"unknown provider {self.provider!r}", "use cpu, cuda, tensorrt or xnnpack")
        if any(b < 1 for b in self.batches) or any(t is not None and t < 1 for t in self.threads):
            raise EdgekitError("--batch and --threads must be positive")
        if any(n is not None and not 1 <= n <= 65536 for n in self.lengths):
            raise EdgekitError("--length must be 1-65536")
        if self.input_data and self.lengths != [None]:
            raise EdgekitError("--length sizes synthetic inputs; --input-data has its own lengths", "drop one of them")
        if self.max_seconds <= 0:
            raise EdgekitError("--max-seconds must be positive")

    def to_dict(self) -> dict:
        return to_dict(self)


class BenchRow(Document, frozen=False):
    """One artifact x threads x batch, measured."""

    label: str
    artifact: str
    format: str
    sha256: Optional[str]
    file_size_bytes: Optional[int]
    threads: Optional[int]
    batch: int
    provider_requested: str
    provider_active: str
    fell_back: bool
    inputs: str  # "real: FILE" or "synthetic ..."
    input_shapes: dict[str, list[int]]
    phases: dict  # load_ms, first_inference_ms, warmup
    steady: dict  # latency_stats: n, mean, p50, p90, p95, p99, throughput...
    samples_ms: list[float]
    memory: dict  # rss_bare_mb, peak_rss_mb, increase_mb
    ratio_p50_vs_baseline: float = 1.0
    ratio_p90_vs_baseline: float = 1.0
    length: Optional[int] = None  # the sequence length swept (--length), None where not


class BenchResult(Document, frozen=False):
    """What ``edgekit bench`` measured; ``to_dict()`` is its JSON (results.json, --json, and the
    agent's answer, which a remote bench reads back through this type)."""

    schema: str
    created: str
    device: str
    environment: dict
    options: dict
    interleaved: bool
    spinning: bool
    baseline: str
    results: list[BenchRow]
    plots: Optional[list[str]] = None  # the PNGs written beside results.json

    def to_dict(self) -> dict:
        data = to_dict(self)
        if data["plots"] is None:
            data.pop("plots")
        return data


def _format_of(path: Path) -> str:
    spec = formats.by_suffix(path)
    return spec.name if spec else ""


def expand(refs: list[str]) -> list[tuple[str, str, str]]:
    """(label, path or ref, format) for each artifact; an optimize output directory gives all
    the variants of its manifest (or every model file in it)."""
    items = []
    for ref in refs:
        path = Path(ref)
        if path.is_dir():
            manifest = path / "manifest.json"
            if manifest.exists():
                variants = json.loads(manifest.read_text())["variants"]
                items += [(v["id"], str(path / v["file"]), v["format"]) for v in variants]
            else:
                files = sorted(p for p in path.rglob("*") if _format_of(p))
                if not files:
                    raise ModelLoadError(f"{path} holds no .onnx or .tflite files", "pass a model file or an optimize output")
                items += [(str(p.relative_to(path)), str(p), _format_of(p)) for p in files]
        elif _format_of(path):
            if not path.exists():
                raise ModelLoadError(f"model file {path} does not exist", "check the path")
            items.append((path.name, str(path), _format_of(path)))
        elif ":" in ref:
            items.append((ref.rpartition(":")[2] + " (torch eager)", ref, "pytorch"))
        else:
            raise ModelLoadError(f"cannot benchmark {ref!r}", "pass .onnx, .tflite, an optimize output directory or module:function")
    labels = [label for label, _, _ in items]
    if len(set(labels)) != len(labels):  # two files of the same name from different places
        items = [(f"{label} [{i}]", p, f) for i, (label, p, f) in enumerate(items)]
    return items


class WorkerProcess:
    def __init__(self, spec: dict):
        self.spec = spec
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit.bench.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, cmd: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            err = self.proc.stderr.read()[-2000:] if self.proc.poll() is not None else ""
            raise EdgekitError(f"the benchmark worker for {self.spec['path']} died: {err.strip().splitlines()[-1] if err.strip() else 'no output'}")
        reply = json.loads(line)
        if "error" in reply:
            self.close()
            raise EdgekitError(reply["error"]) if reply.get("user_error") else EdgekitError(
                f"benchmarking {self.spec['path']} failed: {reply.get('kind')}: {reply['error']}")
        return reply

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_bench(refs: list[str], options: Optional[BenchOptions] = None,
              progress: Callable[[str], None] = lambda m: None) -> BenchResult:
    options = options or BenchOptions()
    items = expand(refs)
    variants = []
    for label, path, fmt in items:
        for threads in options.threads:
            for batch in options.batches:
                for length in options.lengths:
                    suffix = []
                    if len(options.threads) > 1:
                        suffix.append(f"t{threads or 'auto'}")
                    if len(options.batches) > 1:
                        suffix.append(f"b{batch}")
                    if length is not None:
                        suffix.append(f"len{length}")
                    variants.append({"label": label + (f" [{' '.join(suffix)}]" if suffix else ""), "path": path,
                                     "format": fmt, "threads": threads, "batch": batch, "length": length})
    spinning = options.allow_spinning if options.allow_spinning is not None else len(variants) == 1
    workers: list[tuple[dict, WorkerProcess, dict]] = []
    try:
        for v in variants:  # loaded one at a time, so that load times are not contended
            progress(f"loading {v['label']}")
            spec = dict(v, provider=options.provider, allow_spinning=spinning, input_data=options.input_data,
                        warmup_runs=options.warmup_runs, warmup_s=options.warmup_s)
            worker = WorkerProcess(spec)
            info = worker.ask({"cmd": "load", "spec": spec})
            if options.strict_provider and info["provider_active"] != info["provider_requested"]:
                raise EdgekitError(
                    f"{v['label']}: asked for {info['provider_requested']}, but {info['provider_active']} ran",
                    "install the provider's runtime (e.g. onnxruntime-gpu) or drop --strict-provider")
            workers.append((v, worker, info))
        samples = _steady(workers, options, progress)
        memory = [w.ask({"cmd": "finish"}) for _, w, _ in workers]
    finally:
        for _, w, _ in workers:
            w.close()
    return _result(workers, samples, memory, options, spinning)


def _steady(workers, options: BenchOptions, progress) -> list[list[float]]:
    """Steady-state runs: a single variant runs one continuous loop; several take turns."""
    if len(workers) == 1:
        progress("measuring")
        _, w, _ = workers[0]
        ms = w.ask({"cmd": "run", "seconds": options.min_seconds, "min_runs": options.min_runs})["ms"]
        if len(ms) < options.min_runs:  # pragma: no cover - guarded by min_runs above
            ms += w.ask({"cmd": "run", "n": options.min_runs - len(ms)})["ms"]
        return [ms]
    bursts = [max(1, int(BURST_MS / max(info["warmup"]["mean_ms"], 1e-3))) for _, _, info in workers]
    samples: list[list[float]] = [[] for _ in workers]
    start = time.perf_counter()
    rounds = 0
    while True:
        offset = rounds % len(workers)
        order = list(range(offset, len(workers))) + list(range(offset))
        for i in order:
            samples[i] += workers[i][1].ask({"cmd": "run", "n": bursts[i]})["ms"]
        rounds += 1
        elapsed = time.perf_counter() - start
        progress(f"measuring interleaved: round {rounds}, {elapsed:.0f}s")
        enough = all(len(s) >= options.min_runs for s in samples) and elapsed >= options.min_seconds
        if enough or elapsed >= options.max_seconds:
            return samples


def _result(workers, samples, memory, options: BenchOptions, spinning: bool) -> BenchResult:
    rows = []
    for (v, _, info), ms, mem in zip(workers, samples, memory):
        size = Path(v["path"]).stat().st_size if Path(v["path"]).is_file() else None
        rows.append(BenchRow(
            label=v["label"], artifact=v["path"], format=v["format"],
            sha256=sha256_file(Path(v["path"])) if Path(v["path"]).is_file() else None,
            file_size_bytes=size, threads=v["threads"], batch=v["batch"], length=v.get("length"),
            provider_requested=info["provider_requested"], provider_active=info["provider_active"],
            # cpu is always satisfied (LiteRT's default XNNPACK delegate is still the CPU)
            fell_back=info["provider_requested"] != "cpu" and info["provider_active"] != info["provider_requested"],
            inputs=info["inputs"], input_shapes=info["input_shapes"],
            phases={"load_ms": info["load_ms"], "first_inference_ms": info["first_ms"], "warmup": info["warmup"]},
            steady=latency_stats(ms, v["batch"]), samples_ms=ms,
            memory={"rss_bare_mb": mem["rss_bare_mb"], "peak_rss_mb": mem["peak_rss_mb"],
                    "increase_mb": mem["peak_rss_mb"] - mem["rss_bare_mb"]},
        ))
    baseline = next((r for r in rows if options.baseline and options.baseline in (r.label, r.artifact)), rows[0])
    for r in rows:
        r.ratio_p50_vs_baseline = r.steady["p50_ms"] / baseline.steady["p50_ms"]
        r.ratio_p90_vs_baseline = r.steady["p90_ms"] / baseline.steady["p90_ms"]
    return BenchResult(schema=SCHEMA, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       device="local", environment=environment(), options=options.to_dict(),
                       interleaved=len(rows) > 1, spinning=spinning, baseline=baseline.label, results=rows)
