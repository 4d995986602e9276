"""Made-up but realistic inputs for real third-party models, so examples and tests need no
downloads: pages of rendered text (for OCR detectors and direction classifiers) and speech-like
audio (for voice-activity detectors).

    python -m edgekit.zoo.synthetic pages pages/ --count 32
    python -m edgekit.zoo.synthetic lines lines/ --count 48
    python -m edgekit.zoo.synthetic speech speech/ --count 8
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import numpy as np

WORDS = ("invoice total amount due date customer order shipping address payment received thank you "
         "quantity price item description tax subtotal account number reference page of terms").split()


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def pages(folder: Path, count: int = 32, size: tuple[int, int] = (640, 640), seed: int = 0) -> list[Path]:
    """Document-like pictures: lines of dark words on a light, slightly noisy page."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(215, 256, 3)))
        draw = ImageDraw.Draw(img)
        y = int(rng.integers(10, 40))
        while y < size[1] - 40:
            font = _font(int(rng.integers(14, 34)))
            text = " ".join(rng.choice(WORDS, int(rng.integers(2, 7))))
            ink = tuple(int(v) for v in rng.integers(0, 90, 3))
            draw.text((int(rng.integers(5, 120)), y), text, fill=ink, font=font)
            y += int(font.size * rng.uniform(1.4, 2.6))
        pixels = np.asarray(img, np.float32) + rng.normal(0, 4, (size[1], size[0], 3))
        path = folder / f"page-{i:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def lines(folder: Path, count: int = 48, size: tuple[int, int] = (192, 48), seed: int = 0) -> list[Path]:
    """Cropped text lines, upright and (every other one) upside down, in 0/ and 180/ sub-folders:
    what a text direction classifier sees."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
        font = _font(int(rng.integers(18, 30)))
        text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
        ImageDraw.Draw(img).text((int(rng.integers(2, 20)), int(rng.integers(0, 12))), text,
                                 fill=tuple(int(v) for v in rng.integers(0, 80, 3)), font=font)
        angle = "180" if i % 2 else "0"
        if angle == "180":
            img = img.rotate(180)
        (folder / angle).mkdir(parents=True, exist_ok=True)
        path = folder / angle / f"line-{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def speech(folder: Path, count: int = 8, seconds: float = 3.0, rate: int = 16000, seed: int = 0) -> list[Path]:
    """Speech-like audio: voiced syllables (a gliding pitch with harmonics shaped by two moving
    formants) at about four per second, separated by pauses, over a little noise; 16-bit WAV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    n = int(seconds * rate)
    t = np.arange(n) / rate
    for i in range(count):
        x = rng.normal(0, 0.003, n)
        start = rng.uniform(0.1, 0.4)
        while start < seconds - 0.3:
            length = rng.uniform(0.12, 0.3)
            m = (t >= start) & (t < start + length)
            local = t[m] - start
            f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * local / length))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
            voiced = sum(np.sin(k * phase) / k * (np.exp(-((k * f0 - f1) / 250) ** 2)
                                                  + 0.5 * np.exp(-((k * f0 - f2) / 400) ** 2) + 0.05)
                         for k in range(1, 30))
            x[m] += 0.3 * np.sin(np.pi * local / length) ** 2 * voiced
            start += length + (rng.uniform(0.4, 0.9) if rng.random() < 0.25 else rng.uniform(0.02, 0.1))
        path = folder / f"speech-{i:02d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((np.clip(x / max(np.abs(x).max(), 1e-6) * 0.8, -1, 1) * 32767).astype("<i2").tobytes())
        paths.append(path)
    return paths


KINDS = {"pages": pages, "lines": lines, "speech": speech}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgekit.zoo.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args(argv)
    paths = KINDS[args.kind](args.folder, args.count)
    print(f"wrote {len(paths)} files to {args.folder}")


if __name__ == "__main__":
    main()
