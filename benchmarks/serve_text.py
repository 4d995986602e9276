"""edgekit serve with MiniLM taking text, against the FastAPI server a user writes by hand (issue 30).

Every request is one real sentence (the held-out half of edgekit's sentence set, cycled by wrk),
sent as text/plain; every answer is its normalised embedding as JSON. Servers, side by side in one
run, load runs alternating between them:
- edgekit serve on MiniLM's bundle (dynamic sequence, int8), the response cache off;
- baseline: FastAPI, one onnxruntime session, Hugging Face tokenizers padding to 128, over the
  fixed-128 int8 ONNX edgekit made before sequences were dynamic (what the model card's fixed
  export gives, and what edgekit served: 0.72-0.85x of this server on token ids);
- the same FastAPI server over edgekit's dynamic int8 ONNX, padding nothing: the best a hand-written
  server can do with edgekit's artifact, printed beside them.

Goals: edgekit's throughput >= 1.5x the baseline at 8 and at 32 connections, every request
answered (2xx); against the dynamic hand-written server, not slower (>= 1.0x) at 32 connections.

    .venv/bin/python benchmarks/serve_text.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import _common  # noqa: F401
from _common import Goals, free_port, print_table, scratch
from serve_http import alternate, onnx_of, wait_ready, wrk
from variable_length import fixed_model

BASELINE = '''
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from tokenizers import Tokenizer

session = ort.InferenceSession(os.environ["BASELINE_MODEL"], providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(os.environ["BASELINE_TOKENIZER"])
tokenizer.enable_truncation(128)
if os.environ["BASELINE_PAD"] == "128":
    tokenizer.enable_padding(length=128)
else:
    tokenizer.no_padding()
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    encoded = tokenizer.encode((await request.body()).decode())
    feeds = {"input_ids": np.array([encoded.ids], np.int64), "attention_mask": np.array([encoded.attention_mask], np.int64)}
    embedding = session.run(None, feeds)[0][0]
    return {"embedding": (embedding / np.linalg.norm(embedding)).tolist()}


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}
'''


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0, help="per wrk run (three rounds per server)")
    args = parser.parse_args()
    goals = Goals(__file__)
    if shutil.which("wrk") is None:
        goals.check("wrk is installed (the load generator)", "missing: apt-get install wrk", False)
        return goals.exit_code()

    from edgekit.models import load_model
    from edgekit.optimizer import optimize
    from edgekit.zoo import minilm

    work = scratch("serve-text-")
    sentences = work / "sentences.txt"
    sentences.write_text("\n".join(minilm.sentences()[1::2]) + "\n")
    model = load_model("edgekit:minilm")
    built = {}
    for name, source in (("fixed", fixed_model(model)), ("dynamic", model)):
        print(f"building MiniLM ({name}) ...", flush=True)
        result = optimize(source, target="host", out=work / name, formats={"onnx"}, precisions={"int8-dynamic"},
                          timing_s=0.5)
        built[name] = (result.package(), onnx_of(work / name))
    tokenizer = str(minilm.model_dir() / "tokenizer.json")
    (work / "baseline.py").write_text(BASELINE)
    procs, ports = [], {}
    try:
        for name, onnx, pad in (("baseline (fixed 128)", built["fixed"][1], "128"),
                                ("hand-written, dynamic", built["dynamic"][1], "none")):
            ports[name] = port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(work), "baseline:app",
                                           "--port", str(port), "--log-level", "warning", "--no-access-log"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          env={**os.environ, "BASELINE_MODEL": str(onnx), "BASELINE_TOKENIZER": tokenizer,
                                               "BASELINE_PAD": pad}))
            wait_ready(port, procs[-1])
        ports["edgekit"] = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(built["dynamic"][0]),
                                       "--port", str(ports["edgekit"]), "--cache-size", "0", "--max-batch", "32",
                                       "--max-queue", "256", "--max-wait-ms", "0"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_ready(ports["edgekit"], procs[-1])
        paths = {name: "/predict" for name in ports} | {"edgekit": "/v1/models/minilm/predict"}

        rows = []
        text_h = {"Content-Type": "text/plain"}
        for connections in (8, 32):
            print(f"{connections} connections ...", flush=True)
            result = alternate({name: (lambda name=name: wrk(f"http://127.0.0.1:{ports[name]}{paths[name]}", b"", text_h,
                                                             args.seconds, connections, lines_of=sentences))
                                for name in ports})
            rows += [[f"{connections}", name, f"{v['rps']:.0f}", f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}", v["non2xx"]]
                     for name, v in result.items()]
            ratio = result["edgekit"]["rps"] / result["baseline (fixed 128)"]["rps"]
            goals.check(f"MiniLM text, {connections} connections: throughput >= 1.5x", f"{ratio:.2f}x",
                        ratio >= 1.5 and result["edgekit"]["non2xx"] == 0, "FastAPI over the fixed-128 int8 ONNX")
            if connections == 32:
                ratio = result["edgekit"]["rps"] / result["hand-written, dynamic"]["rps"]
                goals.check("MiniLM text, 32 connections: not slower than a hand-written server on edgekit's ONNX",
                            f"{ratio:.2f}x", ratio >= 1.0, "FastAPI over the dynamic int8 ONNX, no padding")
        print_table(["connections", "server", "req/s", "p50 ms", "p99 ms", "non-2xx"], rows)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    return goals.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
