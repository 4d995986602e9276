"""Pay only for the sentence you have: MiniLM's bundle at each sentence's own length against the
fixed-128 int8 bundle edgekit made before sequences were dynamic (issue 30).

The sentences: the held-out half of edgekit's sentence set (the odd lines; calibration saw the
even ones), short real sentences, each sent alone as text. Both bundles are built here by
`edgekit optimize` with the same recipe (ONNX, transformer fusions, int8 dynamic) and packaged; the
only difference is the sequence axis: fixed at 128 (every sentence padded) or dynamic.

Measured side by side in one run: per round, every sentence through each bundle's predict_raw
(tokenizer, runtime, post-processing included), in blocks whose order alternates. Goals:
- the dynamic bundle >= 5x faster than the fixed-128 one over the sentence set (total time);
- mean cosine >= 0.99 against fp32 torch run on the same unpadded sentences;
- within 2x of the physical floor: per length, MACs / the host's peak int8 rate (host profile,
  from its ISA flags), against the bundle's forward pass (the runtime's predict on tokens, without
  the tokenizer). Printed per length bucket with both numbers.

    .venv/bin/python benchmarks/variable_length.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _common import Goals, print_table, scratch


def minilm_macs(length: int, layers: int = 6, hidden: int = 384, inner: int = 1536) -> int:
    """Multiply-accumulates of one sentence of ``length`` tokens through the encoder: the four
    hidden x hidden projections and the two feed-forward matrices per token, and attention's two
    length x length products per layer (embeddings, norms and softmax are not MACs)."""
    per_layer = length * (4 * hidden * hidden + 2 * hidden * inner) + 2 * length * length * hidden
    return layers * per_layer


def fixed_model(model):
    """MiniLM as edgekit exported it before: the sequence fixed at 128, every sentence padded."""
    from dataclasses import replace

    from edgekit.dataset import Dataset
    from edgekit.zoo import minilm

    def data(split: str) -> Dataset:
        items = minilm.sentences()
        chosen = items if split == "eval" else items[::2]
        return Dataset(minilm.tokenize(chosen, length=minilm.SEQ_LEN), None, source="sentences padded to 128")

    meta = {**model.meta, "processing": {"text": {**model.meta["processing"]["text"], "pad_to_max": True}}}
    example = tuple(t for t in (__import__("torch").from_numpy(a) for a in minilm.tokenize(minilm.sentences()[:2], 128).values()))
    return replace(model, inputs=[s.with_(shape=("batch", minilm.SEQ_LEN)) for s in model.inputs], meta=meta,
                   data_factory=data, example_inputs=example)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch

    from edgekit.devices import host_profile
    from edgekit.models import load_model
    from edgekit.optimizer import optimize
    from edgekit.runtime import load
    from edgekit.zoo import minilm

    torch.set_num_threads(2)
    goals = Goals(__file__)
    work = scratch("bench-varlen-")
    model = load_model("edgekit:minilm")
    held_out = minilm.sentences()[1::2]
    lengths = np.array([len(minilm.tokenizer().encode(s).ids) for s in held_out])
    print(f"{len(held_out)} held-out sentences, {lengths.min()}-{lengths.max()} tokens, mean {lengths.mean():.1f}",
          flush=True)

    bundles = {}
    for name, source in (("fixed-128 int8", fixed_model(model)), ("dynamic", model)):
        print(f"optimizing MiniLM ({name}) ...", flush=True)
        result = optimize(source, target="host", out=work / name, formats={"onnx"}, precisions={"int8-dynamic"},
                          timing_s=2)
        bundles[name] = load(result.package(), threads=2)
        print(f"  {name}: {result.winner}", flush=True)

    with torch.no_grad():  # fp32 torch, each sentence alone at its own length
        reference = np.concatenate([model.module(*(torch.from_numpy(a) for a in minilm.tokenize([s]).values())).numpy()
                                    for s in held_out])

    names = list(bundles)
    took = {n: np.zeros((args.rounds, len(held_out))) for n in names}
    answers = {n: [] for n in names}
    for n in names:  # warm up
        for s in held_out[:5]:
            bundles[n].predict_raw(s)
    # In blocks (every sentence through one bundle, then the other), alternating which goes first:
    # onnxruntime's threads spin for a moment after a run, and would steal the cores of a bundle
    # called right after it.
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            for i, sentence in enumerate(held_out):
                t0 = time.perf_counter()
                answer = bundles[n].predict_raw(sentence)
                took[n][r, i] = (time.perf_counter() - t0) * 1000
                if r == 0:
                    answers[n].append(answer["embedding"])

    def cosine(rows) -> np.ndarray:
        a = np.asarray(rows, np.float64)
        return (a * reference).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(reference, axis=1)

    per_sentence = {n: np.median(took[n], axis=0) for n in names}
    rows = [[n, f"{per_sentence[n].mean():.2f}", f"{np.median(per_sentence[n]):.2f}", f"{cosine(answers[n]).mean():.4f}",
             f"{cosine(answers[n]).min():.4f}"] for n in names]
    print_table(["bundle", "mean ms / sentence", "median ms", "cosine mean", "cosine min"], rows)
    speedup = per_sentence["fixed-128 int8"].sum() / per_sentence["dynamic"].sum()
    goals.check("the dynamic bundle >= 5x faster over the held-out sentences", f"{speedup:.2f}x", speedup >= 5.0,
                "the fixed-128 int8 bundle (same recipe)")
    quality = cosine(answers["dynamic"]).mean()
    goals.check("mean cosine >= 0.99 on unpadded sentences", f"{quality:.4f}", quality >= 0.99,
                "fp32 torch at each sentence's own length")

    # The floor: the forward pass alone (tokens in, no tokenizer), per length bucket.
    peak_ops = host_profile().estimator.peak_gops_int8 * 1e9
    runtime = bundles["dynamic"]
    table, ratios = [], []
    for low, high in ((1, 12), (13, 16), (17, 24), (25, 48), (49, 128)):
        chosen = [s for s, n in zip(held_out, lengths) if low <= n <= high]
        if not chosen:
            continue
        feeds = [runtime.preprocess([s]) for s in chosen]
        for f in feeds[:3]:
            runtime.predict(f)
        times = []
        for _ in range(args.rounds):
            for f in feeds:
                t0 = time.perf_counter()
                runtime.predict(f)
                times.append((time.perf_counter() - t0) * 1000)
        mean_len = float(np.mean([f["input_ids"].shape[1] for f in feeds]))
        floor_ms = 2 * minilm_macs(round(mean_len)) / peak_ops * 1000
        measured = float(np.median(times))
        ratios.append((len(chosen), measured / floor_ms))
        table.append([f"{low}-{high}", len(chosen), f"{mean_len:.1f}", f"{minilm_macs(round(mean_len)) / 1e6:.0f}",
                      f"{floor_ms:.2f}", f"{measured:.2f}", f"{measured / floor_ms:.2f}x"])
    print(f"\nfloor: MACs x 2 / the host's peak int8 rate ({peak_ops / 1e9:.0f} GOPS, {host_profile().name})")
    print_table(["tokens", "sentences", "mean length", "MMACs", "floor ms", "forward ms", "vs floor"], table)
    weighted = sum(c * r for c, r in ratios) / sum(c for c, _ in ratios)
    goals.check("forward pass within 2x of the int8 floor (sentence-weighted)", f"{weighted:.2f}x", weighted <= 2.0,
                "MACs / peak int8 rate")
    for bundle in bundles.values():
        bundle.close()
    return goals.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
