"""A MobileNet-style classifier as torch.onnx.export writes it by default: depthwise-separable
blocks with ReLU6 and a global pool, exported with the example's batch of 1 fixed in the graph
(no dynamic axes). Trained here on scikit-learn digits scaled to 32x32; judged by its labels on
held-out digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32


def _digits(part: slice) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images[part].repeat(4, axis=1).repeat(4, axis=2)[:, None] / 16.0
    return x.astype(np.float32), digits.target[part].astype(np.int64)


def held_out() -> tuple[np.ndarray, np.ndarray]:
    """397 digits the model never saw, [n, 1, 32, 32] in [0, 1], and their labels."""
    return _digits(slice(1400, None))


def build(folder: Path) -> Path:
    """Train the classifier and export it; returns the .onnx path (made once per folder)."""
    import torch

    from . import fit_classifier

    path = folder / "mobilenet.onnx"
    if path.exists():
        return path
    nn = torch.nn

    def separable(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                             nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                          separable(16, 32, 1), separable(32, 64, 2), separable(64, 64, 1), separable(64, 128, 2),
                          separable(128, 128, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    x, y = _digits(slice(0, 1400))
    fit_classifier(model, x, y, steps=250)
    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, SIZE, SIZE),), str(path), input_names=["input"],
                      output_names=["logits"], dynamo=False, opset_version=17)
    return path
