"""all-MiniLM-L6-v2 as Optimum and sentence-transformers export it to ONNX: input_ids and
attention_mask with both the batch and the sequence dynamic, the mean-pooled, normalised sentence
embedding out. Judged by the cosine of its embeddings with fp32's on real sentences at their own
lengths (no padding to a fixed 128)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tokens(sentences: list[str], length: int | None = None) -> dict[str, np.ndarray]:
    """Token ids and mask padded to the longest sentence (or ``length``)."""
    from edgekit.zoo import minilm

    tok = minilm.tokenizer()
    tok.no_padding()
    encoded = tok.encode_batch(sentences)
    width = length or max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, :len(e.ids)], mask[i, :len(e.ids)] = e.ids[:width], 1
    return {"input_ids": ids, "attention_mask": mask}


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
