"""edgekit label import checks every label against the model before anything is written: a label
that is not one of the classifier's classes would stop dataset formation later, for good."""

import json

import pytest

from edgekit.collector.db import Database
from tests.conftest import ingest_predictions


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_predictions(database, "pi-1", "tiny", "1", 4)  # a 3-class classifier's predictions pi-1-1..4
    return database


def _csv(path, labels, encoding="utf-8"):
    lines = ["device,request_id,row,label"] + [f"pi-1,pi-1-{i + 1},0,{label}" for i, label in enumerate(labels)]
    path.write_bytes("\n".join(lines).encode(encoding))  # Python's utf-16 writes the BOM, as spreadsheets do
    return path


@pytest.mark.parametrize("label, message", [
    ("seven", "'seven' is not a class number"), ("99", "class 99 is out of range (the model has 3 classes: 0-2)"),
    ("nan", "'nan' is not a class number"), ("3.0", "'3.0' is not a class number"), ("-1", "'-1' is not a class"),
    ("x" * 5000, "a label of 5000 characters"),
])
def test_a_label_that_is_not_a_class_is_refused_and_nothing_is_written(db, tmp_path, cli, label, message):
    result = cli("label", "import", _csv(tmp_path / "labels.csv", ["1", label]), "--db", db.url)
    assert result.exit_code == 1 and message in result.output and "nothing was imported" in result.output
    with db.read() as tx:
        assert tx.one("SELECT COUNT(*) FROM feedback")[0] == 0


def test_utf16_from_a_spreadsheet_imports_and_parquet_is_a_clear_error(db, tmp_path, cli):
    done = cli("label", "import", _csv(tmp_path / "labels.csv", ["0", "2", "1"], "utf-16"), "--db", db.url, "--json")
    assert done.exit_code == 0 and json.loads(done.output)["imported"] == 3, done.output
    (tmp_path / "queue.parquet").write_bytes(b"PAR1\x00\x15\x04\xff\xfe\x00" * 20 + b"PAR1")
    refused = cli("label", "import", tmp_path / "queue.parquet", "--db", db.url)
    assert refused.exit_code == 1 and "is not a text CSV" in refused.output and "unexpected" not in refused.output


def test_one_label_that_is_no_class_does_not_turn_the_export_into_text(tmp_path):
    """A device's 'seven' among class numbers made every label of collector export text."""
    import numpy as np

    from edgekit.collector.export import export

    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_predictions(database, "pi-1", "tiny", "1", 5, labels=[0, "seven", 2, None, 1])
    info = export(database, tmp_path / "out.npz", since="0", model="tiny")
    with np.load(tmp_path / "out.npz") as data:
        assert data["labels"].dtype == np.int64 and data["labels"].tolist() == [0, -1, 2, -1, 1]
        assert data["labelled"].tolist() == [True, False, True, False, True]
    assert info["labelled"] == 3 and info["labels_not_classes"] == 1
