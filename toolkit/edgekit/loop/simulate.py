"""A simulated fleet for the retraining loop's end-to-end scenario (its test, its benchmark and
the demo): the digits model on real device log stores, shipped by real sync clients to a real
collector. The current model learnt from part of the training digits; the rest is the fleet's
traffic, so every prediction is on a digit it never saw. Half the devices see them drifted
(rotated a quarter turn, with thicker strokes); users correct a fraction of the predictions.
The digits' held-out quarter never reaches the fleet: it measures accuracy before and after, on
clean and on drifted digits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def drift(images: np.ndarray) -> np.ndarray:
    """Rotated a quarter turn and drawn with thicker strokes (a 2x2 maximum filter)."""
    rotated = np.rot90(images, 1, axes=(2, 3))
    padded = np.pad(rotated, ((0, 0), (0, 0), (0, 1), (0, 1)))
    thick = np.maximum.reduce([padded[:, :, :-1, :-1], padded[:, :, 1:, :-1], padded[:, :, :-1, 1:],
                               padded[:, :, 1:, 1:]])
    return np.ascontiguousarray(thick, dtype=np.float32)


@dataclass(frozen=True)
class Fleet:
    folder: Path
    bundle: Path  # the current model, as the fleet runs it
    base_data: Path  # the current model's training data
    clean_eval: Path  # held-out digits
    drifted_eval: Path  # the same, drifted
    truth: Path  # request ids -> true labels, for the simulated labelling team


def current_bundle(x: np.ndarray, y: np.ndarray, out: Path) -> Path:
    """The fleet's current model: the digits CNN trained on ``x`` only (so that the fleet's
    traffic is new to it), optimised for this host (fp32 ONNX) and packaged with its processing."""
    import torch

    from ..bundle import make_bundle
    from ..spec import Model, TensorSpec
    from ..optimizer import optimize
    from ..zoo import digits

    model = Model(name="digits-cnn", format="pytorch", source="simulated fleet",
                  inputs=[TensorSpec("input", ("batch", 1, 8, 8), "float32")],
                  outputs=[TensorSpec("logits", ("batch", 10), "float32")], module=digits.train(x, y),
                  example_inputs=(torch.from_numpy(x[:1]),), task="classification")
    np.savez(out.parent / "calibration.npz", input=x, labels=y)
    optimize(model, target="host", data=str(out.parent / "calibration.npz"), out=out.with_suffix(""),
             formats={"onnx"}, precisions={"fp32"}, processing=digits.PROCESSING)
    make_bundle(out.with_suffix(""), out, version="1")
    return out


def simulate(collector_url: str, db_url: str, folder: str | Path, devices: int = 8, base_rows: int = 700,
             correct_share: float = 0.1, seed: int = 0) -> Fleet:
    """Train the current model on ``base_rows`` training digits; enrol ``devices`` devices (half
    'clean', half 'drifted'); show each remaining training digit once to a clean device and once,
    drifted, to a drifted one; give feedback on ``correct_share`` of the predictions; ship it all."""
    from ..collector.db import Database, add_device
    from ..runtime import load
    from ..sync import SyncClient
    from ..sync.store import LogStore, SamplingPolicy
    from ..zoo import digits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = digits._split()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    base, traffic = order[:base_rows], order[base_rows:]
    np.savez(folder / "base.npz", input=x_train[base], labels=y_train[base])
    np.savez(folder / "clean_eval.npz", input=x_test, labels=y_test)
    np.savez(folder / "drifted_eval.npz", input=drift(x_test), labels=y_test)
    bundle = current_bundle(x_train[base], y_train[base], folder / "current.ekb")
    truth: dict[str, int] = {}
    db = Database(db_url)
    fleet = []
    half = max(1, devices // 2)
    for d in range(devices):
        group = "drifted" if d % 2 else "clean"
        rows = np.array_split(traffic, half)[d // 2]
        name = f"{group}-{d}"
        store = LogStore(folder / f"{name}.db", sampling=SamplingPolicy.parse("all"))
        images = drift(x_train[rows]) if group == "drifted" else x_train[rows]
        fleet.append((name, add_device(db, name, group=group), store, load(bundle, log_store=store), images, rows))
    for i in range(max(len(rows) for *_, rows in fleet)):  # devices take turns: time interleaves them
        for name, _, _, runtime, images, rows in fleet:
            if i < len(rows):
                out = runtime.predict({"input": images[i:i + 1]})
                truth[f"{name}/{out.request_id}"] = int(y_train[rows[i]])
                if rng.random() < correct_share:
                    runtime.feedback(out.request_id, label=int(y_train[rows[i]]))
    for _, token, store, *_ in fleet:
        SyncClient(store, collector_url, token).drain()
        store.close()
    (folder / "truth.json").write_text(json.dumps(truth))
    return Fleet(folder, bundle, folder / "base.npz", folder / "clean_eval.npz", folder / "drifted_eval.npz",
                 folder / "truth.json")


def write_config(path: Path, db_url: str, fleet: Fleet, budget: int = 300,
                 strategies: str = "{ entropy = 1.0, novelty = 1.0 }", diversity: bool = True, seed: int = 0,
                 labeler: bool = True, extra: str = "") -> Path:
    """The scenario's loop.toml: unattended (monitoring's alerts trigger it), labelled by the
    simulated team (``labeler``) or waiting for 'edgekit label import'."""
    path.write_text(f'''
model = "digits-cnn"
db = "{db_url}"
workdir = "{path.parent / 'work'}"
current = "{fleet.bundle}"
train = "edgekit.zoo.digits:fit"
base_data = "{fleet.base_data}"
{'labeler = "edgekit.loop.simulate:oracle"' if labeler else 'label_wait = "30d"'}
[curation]
budget = {budget}
strategies = {strategies}
diversity = {str(diversity).lower()}
seed = {seed}
[trigger]
alerts = ["data drift", "estimated accuracy dropped", "feedback accuracy dropped"]
[gate]
formats = ["onnx"]
factory = "edgekit.zoo.digits:factory"
{extra}
''')
    return path


def oracle(queue: Path) -> list:
    """The simulated labelling team: the true label of each queued example (``labeler`` hook).
    It reads the truth file next to the fleet's folder, named by EDGEKIT_SIM_TRUTH."""
    import csv
    import os

    truth = json.loads(Path(os.environ["EDGEKIT_SIM_TRUTH"]).read_text())
    with open(queue / "queue.csv", newline="") as f:
        return [truth.get(f"{r['device']}/{r['request_id']}") for r in csv.DictReader(f)]


def accuracy(model: str | Path, data: str | Path) -> float:
    from ..tables import load_columns
    from ..testing.models import Predictor

    columns = load_columns(data)
    out = Predictor(str(model)).outputs({"input": columns["input"]})
    return float((out.argmax(1) == columns["labels"]).mean())
