"""all-MiniLM-L6-v2 as Optimum and sentence-transformers export it to ONNX: input_ids and
attention_mask with both the batch and the sequence dynamic, the mean-pooled, normalised sentence
embedding out. Judged by the cosine of its embeddings with fp32's on real sentences at their own
lengths (no padding to a fixed 128)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tokens(sentences: list[str], length: int | None = None) -> dict[str, np.ndarray]:
    """Token ids and mask cut to the longest sentence (or ``length``); the shared tokenizer pads to
    128 and is not changed (other callers rely on its padding)."""
    from edgekit.zoo import minilm

    padded = minilm.tokenize(sentences)
    width = length or int(padded["attention_mask"].sum(1).max())
    return {k: np.ascontiguousarray(v[:, :width]) for k, v in padded.items()}


def build(folder: Path) -> Path:
    """Export the model with a dynamic sequence; returns the .onnx path (made once per folder)."""
    import torch

    from edgekit.zoo import minilm

    path = folder / "minilm-dynamic.onnx"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.from_numpy(a) for a in tokens(minilm.sentences()[:2]).values())
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(minilm.build_module().eval(), example, str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                                                "embedding": {0: "batch"}},
                      dynamo=False, opset_version=17)
    return path
