"""A CRNN text-line recogniser as OCR projects export it: convolutions over a line image, a
per-column classifier and log-softmax for CTC (blank = class 0), exported by torch.onnx's
TorchScript exporter with a fixed batch of 1 and a dynamic width. Trained here on lines of
scikit-learn digits (16 px tall, 16 px per digit); judged on lines of held-out digit images by
their greedy-decoded text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEIGHT, DIGIT_WIDTH, CLASSES = 16, 16, 11  # classes: blank + 10 digits


def _split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[:1400], digits.target[:1400]), (digits.images[1400:], digits.target[1400:])


def lines(n: int, length: int, images, labels, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` line images [n, 1, 16, 16*length] and their text."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(images), size=(n, length))
    pictures = images[index].repeat(2, axis=2).repeat(2, axis=3)  # n, length, 16, 16
    x = np.concatenate(list(pictures.transpose(1, 0, 2, 3)), axis=2)[:, None] / 16.0
    return x.astype(np.float32), ["".join(str(d) for d in row) for row in labels[index]]


def text_of(logits: np.ndarray) -> list[str]:
    """Greedy CTC decoding of [samples, steps, 11] scores into digit strings."""
    from edgekit.optimizer.accuracy import ctc_decode

    return ["".join(str(k - 1) for k in seq) for seq in ctc_decode(logits, blank=0)]


def build(folder: Path) -> Path:
    """Train the recogniser and export it; returns the .onnx path (made once per folder)."""
    import torch

    path = folder / "crnn.onnx"
    if path.exists():
        return path
    nn = torch.nn

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d((2, 1)),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d((4, 1)))
            self.head = nn.Linear(64, CLASSES)

        def forward(self, x):
            columns = self.body(x).squeeze(2).permute(0, 2, 1)  # [batch, steps, features]
            return torch.log_softmax(self.head(columns), -1)

    (images, labels), _ = _split()
    torch.manual_seed(0)
    model = CRNN()
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    ctc = nn.CTCLoss(blank=0)
    rng = np.random.default_rng(0)
    for step in range(300):
        length = int(rng.integers(3, 7))
        x, text = lines(64, length, images, labels, seed=step)
        target = torch.tensor([[int(c) + 1 for c in t] for t in text])
        out = model(torch.from_numpy(x)).permute(1, 0, 2)  # CTC wants [steps, batch, classes]
        loss = ctc(out, target, torch.full((64,), out.shape[0]), torch.full((64,), length))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 1, HEIGHT, 5 * DIGIT_WIDTH)
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {3: "width"}, "logits": {1: "steps"}}, dynamo=False, opset_version=17)
    return path


def held_out(n: int, length: int = 5, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    _, (images, labels) = _split()
    return lines(n, length, images, labels, seed)
