#!/usr/bin/env python3
"""Example app for a Raspberry Pi: load an optimised model and predict.

Runs a .onnx file with onnxruntime or a .tflite file with LiteRT (ai-edge-litert, or
tflite_runtime on older images) - no torch, no edgekit internals.

    python app.py best.onnx --input sample_digits.npz        # real digits shipped beside this app
    python app.py best.tflite --runs 100                      # random inputs, latency only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


class OnnxModel:
    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.shape, i.type) for i in self.session.get_inputs()]

    def predict(self, feeds: dict) -> list:
        return self.session.run(None, feeds)


class TfliteModel:
    def __init__(self, path: str, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()
        self.inputs = [(d["name"], list(d["shape"]), np.dtype(d["dtype"]).name) for d in details]
        self._in = details
        self._out = self.interpreter.get_output_details()
        # Converters often fix the batch at 1; such a model is fed one row at a time.
        self.fixed_batch = all(d["shape_signature"][0] > 0 for d in details if len(d["shape_signature"]))

    def predict(self, feeds: dict) -> list:
        batch = len(next(iter(feeds.values())))
        if self.fixed_batch and batch != self._in[0]["shape"][0]:
            rows = [self.predict({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch)]
            return [np.concatenate(parts) for parts in zip(*rows)]
        for detail, value in zip(self._in, feeds.values()):
            if tuple(detail["shape"]) != value.shape:
                self.interpreter.resize_tensor_input(detail["index"], value.shape)
                self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self._out]


def _dtype(type_name: str):
    return {"tensor(float)": np.float32, "tensor(int64)": np.int64}.get(type_name, type_name)


def random_feeds(inputs) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, shape, dtype in inputs:
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        dtype = np.dtype(_dtype(dtype))
        feeds[name] = (rng.integers(0, 100, dims) if dtype.kind in "iu" else rng.random(dims)).astype(dtype)
    return feeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an optimised .onnx or .tflite file")
    parser.add_argument("--input", help=".npz with one array per model input (optional 'labels')")
    parser.add_argument("--runs", type=int, default=20, help="timed runs for the latency line")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    path = Path(args.model)
    if not path.is_file():
        print(f"error: model file {path} does not exist", file=sys.stderr)
        return 1
    model = (TfliteModel if path.suffix == ".tflite" else OnnxModel)(str(path), args.threads)

    labels = None
    if args.input:
        with np.load(args.input) as npz:
            data = {k: npz[k] for k in npz.files}
        labels = data.pop("labels", None)
        names = [name for name, _, _ in model.inputs]
        if len(names) == 1 and names[0] not in data and len(data) == 1:
            data = {names[0]: next(iter(data.values()))}  # a single unnamed array feeds the input
        feeds = {name: data[name] for name in names}
    else:
        feeds = random_feeds(model.inputs)

    outputs = model.predict(feeds)
    first = outputs[0]
    if first.ndim == 2 and first.shape[1] <= 1000:  # class scores: show the predicted classes
        predicted = first.argmax(axis=1)
        print("predicted:", " ".join(map(str, predicted[:20])), "..." if len(predicted) > 20 else "")
        if labels is not None:
            print(f"accuracy: {(predicted == labels).mean():.3f} on {len(labels)} samples")
    else:
        print("output shape:", first.shape)

    single = {k: v[:1] for k, v in feeds.items()}
    model.predict(single)  # warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.predict(single)
        times.append((time.perf_counter() - start) * 1000)
    print(f"latency (batch 1, {args.runs} runs): median {np.median(times):.3f} ms, "
          f"p90 {np.percentile(times, 90):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
