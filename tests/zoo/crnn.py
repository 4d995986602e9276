"""A CRNN text-line recogniser as OCR projects export it: convolutions over a line image, a
per-column classifier and log-softmax for CTC (blank = class 0), exported by torch.onnx's
TorchScript exporter with a fixed batch of 1 and a dynamic width (PaddleOCR's recognisers take
[1, 3, 48, width]).

Trained and judged here on real rendered lines: dates, times, prices and phone numbers drawn
with TrueType fonts (Pillow's own, Debian's DejaVu and Liberation) at several sizes and strokes,
scaled to 32 px tall at their natural width, as a detector's crop reaches a recogniser. So every
line has its own width; ``held_out`` gives them one at a time, and ``padded`` stacks them for an
.npz with each line's width under ``lengths`` (what ``edgekit optimize --data`` reads). Ink is 1
on a background of 0, so right-padding a line with zeros adds background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEIGHT = 32
CHARSET = "0123456789.:-/"
CLASSES = len(CHARSET) + 1  # blank first
FONT_FILES = (  # Debian's fonts-dejavu-core and fonts-liberation (.ci/run installs them)
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
)


def _fonts(size: int) -> list:
    from PIL import ImageFont

    missing = [f for f in FONT_FILES if not Path(f).exists()]
    if missing:
        raise RuntimeError(f"font {missing[0]} is missing: apt-get install fonts-dejavu-core fonts-liberation")
    return [ImageFont.load_default(size)] + [ImageFont.truetype(f, size) for f in FONT_FILES]


def _text(rng) -> str:
    n = lambda k: "".join(str(d) for d in rng.integers(0, 10, k))  # noqa: E731
    kind = rng.integers(0, 5)
    if kind == 0:
        return f"{n(2)}.{n(2)}.{n(4)}"  # a date
    if kind == 1:
        return f"{n(2)}:{n(2)}" + (f":{n(2)}" if rng.random() < 0.5 else "")  # a time
    if kind == 2:
        return f"{n(int(rng.integers(1, 4)))}.{n(2)}"  # a price
    if kind == 3:
        return f"{n(4)}-{n(3)}-{n(int(rng.integers(2, 5)))}"  # a phone number
    return f"{n(int(rng.integers(1, 4)))}/{n(int(rng.integers(1, 4)))}"  # a fraction, a page


def render(text: str, font, stroke: int, rng) -> np.ndarray:
    """One line: ``text`` drawn in ``font``, cropped to its ink with a small margin, scaled to 32
    px tall at its own aspect ratio, light noise; float32 [1, 32, width], ink 1 on 0."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=font, stroke_width=stroke,
                                stroke_fill=255)
    width = max(8, round(canvas.width * HEIGHT / canvas.height))
    line = np.asarray(canvas.resize((width, HEIGHT), Image.BILINEAR), np.float32) / 255.0
    line = np.clip(line + rng.normal(0, 0.03, line.shape).astype(np.float32), 0, 1)
    return line[None]


def lines(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` rendered lines ([1, 32, width] each, widths differ) and their text."""
    rng = np.random.default_rng(seed)
    by_size = {}
    images, texts = [], []
    for _ in range(n):
        size = int(rng.integers(18, 30))
        fonts = by_size.setdefault(size, _fonts(size))
        text = _text(rng)
        images.append(render(text, fonts[int(rng.integers(0, len(fonts)))], int(rng.integers(0, 2)), rng))
        texts.append(text)
    return images, texts


def padded(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lines stacked [n, 1, 32, longest] with background on the right, and each line's width."""
    widths = np.array([x.shape[-1] for x in images], np.int64)
    out = np.zeros((len(images), 1, HEIGHT, int(widths.max())), np.float32)
    for i, x in enumerate(images):
        out[i, :, :, :x.shape[-1]] = x
    return out, widths


def text_of(logits: np.ndarray) -> list[str]:
    """Greedy CTC decoding of [samples, steps, classes] scores into text."""
    from edgekit.optimizer.accuracy import ctc_decode

    return ["".join(CHARSET[k - 1] for k in seq) for seq in ctc_decode(logits, blank=0)]


def build(folder: Path, steps: int = 300) -> Path:
    """Train the recogniser on rendered lines and export it; returns the .onnx path (made once per folder)."""
    import torch

    path = folder / "crnn.onnx"
    if path.exists():
        return path
    nn = torch.nn

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()
            block = lambda i, o, pool: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),  # noqa: E731
                                        nn.MaxPool2d(pool)]
            self.body = nn.Sequential(*block(1, 32, 2), *block(32, 64, 2), *block(64, 96, (2, 1)),
                                      *block(96, 96, (4, 1)))
            self.head = nn.Linear(96, CLASSES)

        def forward(self, x):
            columns = self.body(x).squeeze(2).permute(0, 2, 1)  # [batch, width / 4, features]
            return torch.log_softmax(self.head(columns), -1)

    torch.manual_seed(0)
    model = CRNN()
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    pool, truth = lines(4096, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        pick = rng.integers(0, len(pool), 32)
        x, _ = padded([pool[i] for i in pick])
        text = [truth[i] for i in pick]
        target = torch.tensor([CHARSET.index(c) + 1 for t in text for c in t])
        out = model(torch.from_numpy(x)).permute(1, 0, 2)  # CTC wants [steps, batch, classes]
        loss = ctc(out, target, torch.full((32,), out.shape[0]), torch.tensor([len(t) for t in text]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 1, HEIGHT, 96)
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {3: "width"}, "logits": {1: "steps"}}, dynamo=False, opset_version=17)
    return path


def held_out(n: int, seed: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """Fresh lines (texts, fonts and sizes drawn anew), each [1, 1, 32, width] as the model takes one."""
    images, texts = lines(n, seed=1000 + seed)
    return [x[None] for x in images], texts


def data_file(path: Path, n: int = 256, seed: int = 5) -> Path:
    """An .npz of ``n`` fresh lines for ``edgekit optimize --data``: x padded, and each width."""
    images, _ = lines(n, seed=2000 + seed)
    x, widths = padded(images)
    np.savez(path, x=x, lengths=widths)
    return path
