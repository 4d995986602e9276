"""``edgekit:digits-cnn``: a small CNN trained on scikit-learn's bundled digits data set.

Real data with no download: 1,797 8x8 grey images of handwritten digits. The model is trained
deterministically on first use (a few seconds on two cores) and cached; the held-out quarter of the
data is the labelled evaluation set, the training part feeds calibration.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from .._io import atomic_write_bytes, cache_dir
from ..dataset import Dataset
from ..errors import require
from ..spec import Model, TensorSpec

VERSION = 1  # bump when the architecture or the training recipe changes: it keys the cache
SEED = 0
EPOCHS = 40


def _split():
    datasets = require("sklearn.datasets", "scikit-learn", "zoo", "the digits demo model")
    from sklearn.model_selection import train_test_split

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # N x 1 x 8 x 8 in [0, 1]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def build_module():
    torch = require("torch", "torch", "zoo", "the digits demo model")
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(x_train, y_train):
    torch = require("torch", "torch", "zoo", "the digits demo model")
    torch.manual_seed(SEED)
    module = build_module()
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    module.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
    return module.eval()


def factory():
    """The untrained CNN as a factory (``edgekit.zoo.digits:factory``): what the memorisation
    check of the retraining loop's gate trains from scratch."""
    torch = require("torch", "torch", "zoo", "the digits demo model")
    return build_module(), (torch.zeros(1, 1, 8, 8),)


def fit(dataset, current, out):
    """The demo's training hook for ``edgekit loop`` (``train = "edgekit.zoo.digits:fit"``): the
    same CNN and recipe, trained on the data set's train split (a few seconds on two cores)."""
    from pathlib import Path

    with np.load(Path(dataset) / "train.npz") as data:
        x, y = data["input"].astype(np.float32), data["labels"].astype(np.int64)
    return train(x, y)


def _cache_path():
    import torch

    key = hashlib.sha256(f"digits-cnn v{VERSION} seed{SEED} e{EPOCHS} torch{torch.__version__}".encode())
    return cache_dir() / "zoo" / f"digits-cnn-{key.hexdigest()[:12]}.pt"


def trained_module():
    """The trained CNN, from the cache or trained now and cached atomically."""
    torch = require("torch", "torch", "zoo", "the digits demo model")
    path = _cache_path()
    module = build_module()
    if path.exists():
        try:
            module.load_state_dict(torch.load(path, weights_only=True))
            return module.eval()
        except Exception:  # a damaged cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    x_train, _, y_train, _ = _split()
    module = train(x_train, y_train)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return module


def dataset(split: str) -> Dataset:
    x_train, x_test, y_train, y_test = _split()
    if split == "eval":
        return Dataset({"input": x_test}, y_test, source="sklearn digits, held-out 25%")
    # Calibration draws from the training part only, so evaluation stays unseen.
    return Dataset({"input": x_train}, y_train, source="sklearn digits, training 75%")


# A picture of a digit in: grey, light ink on dark (inverted when the border is bright, as for ink
# on paper), box-averaged down to 8x8 as the data set was made (32x32 bitmaps counted in 4x4
# blocks), scaled to [0, 1] like the training data. Out: the ten classes.
PROCESSING = {
    "image": {"input": "input", "height": 8, "width": 8, "mode": "L", "scale": 1 / 255, "layout": "NCHW",
              "invert": "auto", "resample": "box"},
    "outputs": [{"output": "logits", "labels": [str(d) for d in range(10)], "softmax": True, "top_k": 3}],
}


def load() -> Model:
    torch = require("torch", "torch", "zoo", "the digits demo model")
    module = trained_module()
    example = (torch.from_numpy(_split()[1][:1]),)
    return Model(
        name="digits-cnn", format="pytorch", source="edgekit:digits-cnn",
        inputs=[TensorSpec("input", ("batch", 1, 8, 8), "float32")],
        outputs=[TensorSpec("logits", ("batch", 10), "float32")],
        module=module, example_inputs=example, task="classification", data_factory=dataset,
        meta={"description": "CNN on sklearn digits (8x8 grey, 10 classes)", "processing": PROCESSING},
    )
