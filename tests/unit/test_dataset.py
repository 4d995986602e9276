"""Dataset formation on small tables built in code: every row once (keep, then new, then history),
the duplicates counted in the manifest, and a fleet row that repeats earlier data never tested."""

import json

import numpy as np

from edgekit.loop.config import DatasetSpec
from edgekit.loop.dataset import form_dataset


def _rows(*values):
    """One 2x2 picture per value (equal values: equal content)."""
    return np.asarray([np.full((2, 2), v, np.float32) for v in values])


def test_duplicates_are_dropped_counted_and_kept_in_the_right_source(tmp_path):
    np.savez(tmp_path / "keep.npz", input=_rows(1, 2), labels=np.array([1, 2]))
    # new fleet data: 1 repeats the keep set, 10 comes twice, 11 is also in the history
    new_values = [1, 10, 10, 11] + list(range(12, 28))
    np.savez(tmp_path / "new.npz", input=_rows(*new_values), labels=np.array(new_values) % 3,
             time=1000.0 + np.arange(len(new_values)), group=np.array(["a"] * len(new_values)),
             outcome=np.array(["labelled"] * len(new_values)))
    np.savez(tmp_path / "history.npz", input=_rows(11, 99), labels=np.array([2, 0]))
    manifest = form_dataset(tmp_path / "new.npz", tmp_path / "ds", ["input"], DatasetSpec(history=10),
                            keep=[tmp_path / "keep.npz"], history=[tmp_path / "history.npz"])
    assert manifest["duplicates_dropped"] == 3
    rows = {name: np.load(tmp_path / "ds" / f"{name}.npz", allow_pickle=False) for name in ("train", "val", "test")}
    values = np.concatenate([r["input"][:, 0, 0] for r in rows.values()])
    sources = np.concatenate([r["source"] for r in rows.values()])
    assert sorted(values.tolist()) == sorted({1, 2, 99, *new_values})  # each content once
    assert dict(zip(values.tolist(), sources.tolist()))[1] == "keep"  # the keep set's copy wins
    assert dict(zip(values.tolist(), sources.tolist()))[11] == "curated"  # new data before history
    assert 1.0 not in rows["test"]["input"][:, 0, 0]  # known data trains, never tests
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["duplicates_dropped"] == 3
