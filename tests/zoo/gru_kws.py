"""A keyword-spotting GRU as audio projects export it: log-mel frames in (the front end runs
outside the graph, as in TFLite Micro's and Arm's KWS examples), a two-layer GRU, the last step's
class scores out; batch 1 and the 49-frame window fixed in the graph. The "keywords" are one
voiced syllable whose pitch rises, falls or stays level, or silence (noise only), synthesised
here with random speakers; judged by its labels on fresh clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE, FRAMES, BANDS = 16000, 49, 40
WORDS = ("silence", "rising", "falling", "level")


def _clip(word: int, rng) -> np.ndarray:
    n = RATE
    t = np.arange(n) / RATE
    x = rng.normal(0, rng.uniform(0.002, 0.02), n)
    if word:
        start, length = rng.uniform(0.05, 0.4), rng.uniform(0.35, 0.5)
        m = (t >= start) & (t < start + length)
        u = (t[m] - start) / length
        base = rng.uniform(100, 220)
        glide = {1: 1 + 0.6 * u, 2: 1.6 - 0.6 * u, 3: 1.2 + 0.0 * u}[word]
        f0 = base * glide
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        f1 = rng.uniform(400, 900)
        voiced = sum(np.sin(k * phase) / k * (np.exp(-((k * f0 - f1) / 300) ** 2) + 0.05) for k in range(1, 25))
        x[m] += rng.uniform(0.2, 0.5) * np.sin(np.pi * u) ** 2 * voiced
    return x


def log_mel(x: np.ndarray) -> np.ndarray:
    """[49, 40] log band energies: 30 ms Hann windows every 20 ms, 40 mel-spaced triangles."""
    win, hop, nfft = 480, 320, 512
    frames = np.stack([x[i * hop:i * hop + win] * np.hanning(win) for i in range(FRAMES)])
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), BANDS + 2)
    edges = np.floor((nfft + 1) * 700 * (10 ** (mel / 2595) - 1) / RATE).astype(int)
    bank = np.zeros((BANDS, nfft // 2 + 1))
    for b in range(BANDS):
        lo, mid, hi = edges[b], max(edges[b + 1], edges[b] + 1), max(edges[b + 2], edges[b] + 2)
        bank[b, lo:mid] = np.linspace(0, 1, mid - lo, endpoint=False)
        bank[b, mid:hi] = np.linspace(1, 0, hi - mid, endpoint=False)
    return np.log(power @ bank.T + 1e-6).astype(np.float32)


def clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips as log-mel windows [n, 49, 40] and their word labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(WORDS), n)
    return np.stack([log_mel(_clip(int(w), rng)) for w in labels]), labels.astype(np.int64)


def build(folder: Path) -> Path:
    """Train the spotter and export it; returns the .onnx path (made once per folder)."""
    import torch

    from . import fit_classifier

    path = folder / "kws_gru.onnx"
    if path.exists():
        return path
    nn = torch.nn

    class Spotter(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(BANDS)
            self.gru = nn.GRU(BANDS, 64, num_layers=2, batch_first=True)
            self.head = nn.Linear(64, len(WORDS))

        def forward(self, x):
            out, _ = self.gru(self.norm(x))
            return self.head(out[:, -1])

    torch.manual_seed(0)
    model = Spotter()
    x, y = clips(800, seed=0)
    fit_classifier(model, x, y, steps=300)
    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, FRAMES, BANDS),), str(path), input_names=["mel"],
                      output_names=["scores"], dynamo=False, opset_version=17)
    return path
