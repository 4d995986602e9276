"""A benchmark worker: one artifact in its own process, driven over stdin/stdout (JSON lines).

One process per artifact keeps one runtime's memory and threads out of another's numbers; the
parent interleaves the workers' bursts so that a comparison holds while the machine drifts.
Commands: ``load`` (load, first inference, warm-up), ``run`` (n timed runs, or until a time
budget), ``finish`` (memory figures, exit).
"""

from __future__ import annotations

import json
import os
import sys
import time

from ..errors import DataError, EdgekitError


def _rss_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc; ru_maxrss where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


BARE_RSS_KB = _rss_kb("VmRSS")  # the bare interpreter, before any runtime is imported


def _sized(model, spec: dict):
    """``model`` with the varying axis 1 of its inputs (a sequence) at ``spec['length']``."""
    length = spec.get("length")
    if not length:
        return model
    from dataclasses import replace

    varying = [s.name for s in model.inputs if len(s.shape) > 1 and isinstance(s.shape[1], str) and s.batch_axis == 0]
    if not varying:
        raise DataError(f"{spec['path']} has no input whose axis 1 varies (shapes: "
                        f"{', '.join(s.shape_str() for s in model.inputs)}); --length {length} cannot size it",
                        "drop --length, or give a model with a dynamic sequence")
    return replace(model, inputs=[s.with_(shape=(s.shape[0], length) + tuple(s.shape[2:])) if s.name in varying else s
                                  for s in model.inputs])


class Worker:
    def __init__(self, spec: dict):
        self.spec = spec
        self.batch = spec.get("batch", 1)

    def load(self) -> dict:
        import numpy as np

        from ..backends import SessionOptions
        from ..formats import open_session
        from ..models import load_model

        spec = self.spec
        t0 = time.perf_counter()
        if spec["format"] == "pytorch":
            import torch

            if spec.get("threads"):
                torch.set_num_threads(spec["threads"])
            model = load_model(spec["path"])
            module = model.module

            def run(feeds):
                with torch.no_grad():
                    return module(*(torch.from_numpy(feeds[s.name]) for s in model.inputs))

            def bind(feeds):
                return lambda: run(feeds)

            provider = ("cpu", "cpu")
        else:
            model = load_model(spec["path"])
            options = SessionOptions(threads=spec.get("threads"), provider=spec.get("provider", "cpu"),
                                     allow_spinning=spec.get("allow_spinning", False))
            session = open_session(spec["path"], options, model)
            bind = session.bind
            provider = (session.requested_provider, session.active_provider)
            if getattr(session, "buckets", None):  # a TFLite with a signature per length takes any length
                from dataclasses import replace

                model = replace(model, inputs=session.inputs)
        load_ms = (time.perf_counter() - t0) * 1000
        self.feeds, source = self._feeds(_sized(model, spec), np)
        self.call = bind(self.feeds)
        t0 = time.perf_counter()
        self.call()
        first_ms = (time.perf_counter() - t0) * 1000
        # Warm-up: at least warmup_runs and warmup_s, as TFLite's benchmark_model does.
        n, t_start = 0, time.perf_counter()
        while n < spec.get("warmup_runs", 10) or time.perf_counter() - t_start < spec.get("warmup_s", 0.5):
            self.call()
            n += 1
        warm_s = time.perf_counter() - t_start
        return {"load_ms": load_ms, "first_ms": first_ms, "warmup": {"n": n, "seconds": warm_s,
                "mean_ms": warm_s * 1000 / n}, "provider_requested": provider[0], "provider_active": provider[1],
                "inputs": source, "input_shapes": {k: list(v.shape) for k, v in self.feeds.items()},
                "rss_after_load_mb": _rss_kb("VmRSS") / 1024}

    def _feeds(self, model, np):
        from ..data import load_data, synthesize

        batch = self.batch
        if self.spec.get("input_data"):
            data = load_data(self.spec["input_data"], model)
            reps = -(-batch // len(data))
            feeds = {k: np.concatenate([v] * reps)[:batch] for k, v in data.arrays.items()}
            return feeds, f"real: {self.spec['input_data']}"
        fixed = model.inputs[0].shape[0] if model.inputs and model.inputs[0].shape else None
        if isinstance(fixed, int) and fixed != batch:
            raise DataError(f"{self.spec['path']} has a fixed batch of {fixed}; --batch {batch} cannot run",
                            f"use --batch {fixed}, or export the model with a dynamic batch")
        data = synthesize(model, n=batch)
        return data.arrays, "synthetic (from the input spec)"

    def timed(self, n: int | None, seconds: float | None, min_runs: int = 0) -> list[float]:
        """n timed runs, or runs until ``seconds`` have passed (and at least ``min_runs``)."""
        call, clock = self.call, time.perf_counter
        out = []
        start = clock()
        while True:
            t0 = clock()
            call()
            out.append((clock() - t0) * 1000)
            if n is not None and len(out) >= n:
                break
            if seconds is not None and len(out) >= min_runs and clock() - start >= seconds:
                break
        return out


def main() -> None:
    # Protocol replies go to the real stdout; anything a library prints goes to stderr.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    reply = os.fdopen(reply_fd, "w", buffering=1)
    worker = None
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "load":
                worker = Worker(cmd["spec"])
                result = worker.load()
            elif cmd["cmd"] == "run":
                result = {"ms": worker.timed(cmd.get("n"), cmd.get("seconds"), cmd.get("min_runs", 0))}
            elif cmd["cmd"] == "finish":
                result = {"rss_bare_mb": BARE_RSS_KB / 1024, "peak_rss_mb": _rss_kb("VmHWM") / 1024}
                reply.write(json.dumps(result) + "\n")
                return
            else:
                result = {"error": f"unknown command {cmd['cmd']!r}"}
        except Exception as exc:  # reported to the parent as one line; the parent decides

            result = {"error": str(exc), "kind": type(exc).__name__, "user_error": isinstance(exc, EdgekitError)}
        reply.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
