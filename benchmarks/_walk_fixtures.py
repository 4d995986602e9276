"""What a README reader brings along, made for readme_walk.py in the walk's clone (the working
directory): ``python _walk_fixtures.py NAME``. Each fixture stands for something of the reader's
own (their model, their data, their device's traffic) and is made from the demo model's data or
with edgekit itself, never downloaded."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path.cwd()

FACTORY = '''import torch


def build():
    """A small CNN at 224x224 (strided: quick on any CPU), with its example input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 16, 3, stride=4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    return model, (torch.randn(1, 3, 224, 224),)
'''

DIGITS_NET = '''import torch


def build():
    """A digits classifier (8x8 grey pictures, ten classes), untrained, with its example input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 8 * 8, 10))
    return model, (torch.zeros(1, 1, 8, 8),)
'''


def edgekit(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "edgekit"), *args], check=True)


def digits(split: str):
    from edgekit.zoo import digits as zoo

    data = zoo.dataset(split)
    return data.arrays["input"], data.labels


def myboard() -> None:
    """A board of the reader's own: a shipped profile under another name."""
    text = Path("profiles/raspberrypi4.toml").read_text()
    text = re.sub(r'(?m)^id = .*$', 'id = "myboard"', text)
    text = re.sub(r'(?m)^name = .*$', 'name = "My board (a Pi 4 in a case)"', text)
    text = re.sub(r'(?m)^aliases = .*$', 'aliases = []', text)
    Path("myboard.toml").write_text(text)
    boards = Path.home() / "boards"
    boards.mkdir(exist_ok=True)
    (boards / "myboard.toml").write_text(text)


def factories() -> None:
    Path("net.py").write_text(FACTORY)
    Path("path/to").mkdir(parents=True, exist_ok=True)
    Path("path/to/net.py").write_text(FACTORY)
    Path("mypkg").mkdir(exist_ok=True)
    Path("mypkg/__init__.py").write_text("")
    Path("mypkg/models.py").write_text(FACTORY)


def pt2() -> None:
    import torch

    sys.path.insert(0, str(HERE))
    factories()
    from net import build

    model, example = build()
    torch.export.save(torch.export.export(model, example), "exported.pt2")


def calib() -> None:
    factories()
    np.savez("calib.npz", input=np.random.default_rng(0).random((16, 3, 224, 224), dtype=np.float32))


def my_app() -> None:
    """The reader's app: the digits model through the embedded runtime, N predictions (argv)."""
    Path("my_app.py").write_text(
        "import sys\nimport numpy as np\nimport onnxruntime as ort\n\n"
        "session = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])\n"
        "x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)\n"
        "for _ in range(int(sys.argv[1])):\n    session.run(None, {'input': x})\n")


def _wheel(package: str, rel: str) -> Path:
    import importlib.util

    return Path(importlib.util.find_spec(package).origin).parent / rel


def det() -> None:
    from edgekit.zoo import synthetic

    shutil.copy(_wheel("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"), "det.onnx")
    synthetic.pages(Path("pages"), 24)
    Path("det.toml").write_text('[image]\ninput = "x"\nheight = 320\nwidth = 320\nscale = 0.00392156862745098\n'
                                'mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n')


def silero() -> None:
    from edgekit.zoo import synthetic

    shutil.copy(_wheel("silero_vad", "data/silero_vad.onnx"), "silero_vad.onnx")
    synthetic.speech(Path("speech"), 8)
    Path("vad.toml").write_text('[audio]\ninput = "input"\nrate = 16000\nhop = 512\n')


def samples() -> None:
    x, _ = digits("eval")
    np.savez("samples.npz", input=x[:64])


def digit() -> None:
    from PIL import Image

    x, _ = digits("eval")
    np.save("digit.npy", x[:1])
    # a photo of a digit as a camera would give it: 32x32, ink dark on a light page
    picture = (255 - np.kron(x[0, 0], np.ones((4, 4))) * 255).clip(0, 255).astype(np.uint8)
    Image.fromarray(picture, "L").save("digit.png")


def traffic() -> None:
    """A day of users' requests to the served digits model (logged by the server into log.db),
    half of them with the user's feedback, and the truth people would give for the rest."""
    from edgekit.sync import LogStore

    x, labels = digits("eval")
    truth, ids = {}, []
    for row, label in zip(x, labels):
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                       "data": row.ravel().tolist()}]}).encode()
        request = urllib.request.Request("http://127.0.0.1:8000/v2/models/digits-cnn/infer", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            rid = answer.headers["X-Request-Id"]
        truth[rid] = int(label)
        ids.append(rid)
    store = LogStore("log.db")
    for rid in ids[::2]:
        store.feedback(rid, label=truth[rid], outcome="accepted")
    store.close()
    Path("truth.json").write_text(json.dumps(truth))


def digits_table() -> None:
    x, _ = digits("eval")
    np.savez("digits.npz", input=x, key=np.array([f"digit-{i}" for i in range(len(x))]))


def sentences() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from edgekit.zoo import minilm

    pq.write_table(pa.table({"text": minilm.sentences()[:50]}), "sentences.parquet")


def model_tests() -> None:
    x_train, y_train = digits("calibration")
    x_eval, y_eval = digits("eval")
    half = len(x_eval) // 2
    np.savez("reference.npz", key=np.arange(len(x_train)), input=x_train, labels=y_train)
    np.savez("new.npz", key=np.arange(len(x_train), len(x_train) + len(x_eval)), input=x_eval, labels=y_eval)
    Path("mynet.py").write_text(DIGITS_NET)
    np.savez("train.npz", input=x_train, labels=y_train)
    np.savez("val.npz", input=x_eval[:half], labels=y_eval[:half])
    np.savez("eval.npz", key=np.arange(len(x_train), len(x_train) + len(x_eval)), input=x_eval, labels=y_eval,
             device=np.array([f"pi-{i % 3}" for i in range(len(x_eval))]))
    np.savez("logged.npz", input=x_eval[half:], labels=y_eval[half:])
    shutil.copy("model.onnx", "current.onnx")
    if not Path("int8.onnx").exists():
        edgekit("quantize", "model.onnx", "--precision", "int8-static", "--out", "int8.onnx")
    shutil.copy("int8.onnx", "new.onnx")
    shutil.copy("digits.ekb", "current.ekb")
    edgekit("package", "edgekit-out/model-host", "--out", "new.ekb", "--name", "digits-cnn", "--version", "4")


def heldout() -> None:
    x, labels = digits("eval")
    np.savez("heldout.npz", input=x, labels=labels)


def rules() -> None:
    Path("rules.toml").write_text('[[rule]]\nname = "fallbacks"\nsignal = "proxy.fallback_share"\nabove = 0.2\n'
                                  'min_samples = 50\nby = "group"\nwindow = "1d"\nseverity = "page"\n')


def label_queue() -> None:
    """People fill in the label column of the loop's queue."""
    truth = json.loads(Path("truth.json").read_text())
    queue = sorted(Path("loop/runs").glob("*/queue/queue.csv"))[-1]
    with open(queue, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = truth.get(row["request_id"], row.get("label") or row["predicted"])
    with open(queue, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def loop_hooks() -> None:
    """The team's labelling hook (the walk's truth stands for people, who agree with the model on the
    one picture the walk's truth lacks: the README's curl of digit.png) and curation rule."""
    Path("mypkg").mkdir(exist_ok=True)
    Path("mypkg/__init__.py").touch()
    Path("mypkg/labels.py").write_text(
        "import csv, json\nfrom pathlib import Path\n\n\ndef ask(queue):\n"
        "    truth = json.loads(Path('truth.json').read_text())\n"
        "    with open(Path(queue) / 'queue.csv', newline='') as f:\n"
        "        return [truth.get(r['request_id'], int(r['predicted'])) for r in csv.DictReader(f)]\n")
    Path("mypkg/rules.py").write_text(
        "import numpy as np\n\n\ndef corrected(columns):\n"
        "    outcome = columns.get('outcome')\n"
        "    n = len(next(iter(columns.values())))\n"
        "    return np.zeros(n, bool) if outcome is None else np.asarray(outcome) == 'corrected'\n")
    x, labels = digits("eval")
    np.savez("rare-cases.npz", input=x[:5], labels=labels[:5])


def toml_sync() -> None:
    """sync.toml as the README shows it, on this machine: the store the server logs to, the
    collector started on port 8080, the token add-device printed."""
    text = Path("sync.toml").read_text()
    text = re.sub(r'(?m)^db = .*$', f'db = "{HERE / "log.db"}"', text)
    text = re.sub(r'(?m)^url = .*$', 'url = "http://127.0.0.1:8080"', text)
    text = re.sub(r'(?m)^token_file = .*$', f'token_file = "{HERE / "pi-kitchen.token"}"', text)
    Path("sync.toml").write_text(text)


def toml_loop() -> None:
    """loop.toml as the README shows it: its paths exist here."""


if __name__ == "__main__":
    name = sys.argv[1].replace("-", "_").removesuffix(".toml").replace(".", "_")
    sys.path.insert(0, str(HERE))
    globals()[name]()
