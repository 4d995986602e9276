"""Model-in-DB: edgekit predict scores a data set into SQLite or PostgreSQL, resumes after a kill
without duplicates, and edgekit serve --lookup-db answers known keys from the table."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.integration.conftest import Server

pytest.importorskip("torch")
pytest.importorskip("pyarrow")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    keys = np.asarray([f"img-{i:04d}" for i in range(len(x_test))])
    np.savez(path, input=x_test, key=keys)
    return path, x_test, y_test, keys


def _rows(db_url, table="predictions"):
    from edgekit._sql import SqlDatabase

    with SqlDatabase(db_url).connect() as tx:
        return tx.all(f"SELECT key, model, version, label, score FROM {table} ORDER BY key")


def test_scores_a_dataset_into_the_database(bundles, digits_data, db_url, cli):
    path, x_test, y_test, keys = digits_data
    result = cli("predict", bundles[0], "--input", path, "--db", db_url, "--chunk", "100", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["written"] == len(x_test) == info["rows"] and info["skipped_existing"] == 0
    rows = _rows(db_url)
    assert [r[0] for r in rows] == sorted(keys.tolist()) and {r[1:3] for r in rows} == {("digits-cnn", "1")}
    labels = {r[0]: r[3] for r in rows}
    accuracy = np.mean([labels[k] == str(y) for k, y in zip(keys, y_test)])
    assert accuracy > 0.95  # the real model's answers, not placeholders
    again = json.loads(cli("predict", bundles[0], "--input", path, "--db", db_url, "--json").output)
    assert again["written"] == 0 and again["skipped_existing"] == len(x_test)  # nothing twice


def test_a_killed_run_resumes_without_duplicates(bundles, digits_data, tmp_path):
    path, x_test, _, _ = digits_data
    db_url = f"sqlite:///{tmp_path / 'preds.db'}"
    cmd = [sys.executable, "-m", "edgekit", "predict", str(bundles[0]), "--input", str(path), "--db", db_url,
           "--chunk", "10", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):  # until a few chunks are committed
        time.sleep(0.05)
        try:
            if len(_rows(db_url)) >= 30:
                break
        except Exception:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(_rows(db_url))
    assert 0 < partial < len(x_test)
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
    rows = _rows(db_url)
    assert len(rows) == len({r[0] for r in rows}) == len(x_test)


def test_parquet_and_csv_inputs(bundles, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    x = x_test[:50]
    table = pa.table({"key": [f"p{i}" for i in range(50)], "input": [row.ravel().tolist() for row in x]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=16)
    db_url = f"sqlite:///{tmp_path / 'p.db'}"
    from edgekit.serve.predictions import predict_to_db

    info = predict_to_db(bundles[0], tmp_path / "d.parquet", db_url, chunk=16)
    assert info["written"] == 50
    labels = {r[0]: r[3] for r in _rows(db_url)}
    assert np.mean([labels[f"p{i}"] == str(y) for i, y in enumerate(y_test[:50])]) > 0.9
    header = "key," + ",".join(f"px{i}" for i in range(64))
    lines = [header] + [f"c{i}," + ",".join(f"{v:.6f}" for v in row.ravel()) for i, row in enumerate(x)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    info = predict_to_db(bundles[0], tmp_path / "d.csv", db_url, table="from_csv", chunk=16)
    csv_labels = {r[0]: r[3] for r in _rows(db_url, "from_csv")}
    assert info["written"] == 50 and all(csv_labels[f"c{i}"] == labels[f"p{i}"] for i in range(50))
    sentences = pa.table({"key": ["s1", "s2"], "text": ["A cat sits on the mat.", "Stocks fell sharply."]})
    pq.write_table(sentences, tmp_path / "s.parquet")
    info = predict_to_db(bundles[1], tmp_path / "s.parquet", db_url, table="embeddings")
    assert info["written"] == 2


def test_a_folder_of_pictures_and_a_text_of_sentences_score_through_the_bundles_processing(bundles, tmp_path, cli):
    """`predict --input pics/` said "does not exist or is not a file": folders of pictures and
    .txt files are tables too (tables.open_table), scored through the bundle's own processing."""
    from PIL import Image

    from edgekit.serve.predictions import predict_to_db
    from edgekit.zoo import digits

    _, x_test, _, y_test = digits._split()
    for i in range(40):  # photographed digits: dark ink on light paper, larger than 8x8
        folder = tmp_path / "pics" / str(y_test[i])
        folder.mkdir(parents=True, exist_ok=True)
        ink = Image.fromarray((x_test[i][0] * 255).astype(np.uint8)).resize((32, 32), Image.NEAREST)
        Image.fromarray(255 - np.asarray(ink)).save(folder / f"{i:03d}.png")
    db_url = f"sqlite:///{tmp_path / 'f.db'}"
    info = predict_to_db(bundles[0], tmp_path / "pics", db_url, chunk=16)
    labels = {r[0]: r[3] for r in _rows(db_url)}
    assert info["written"] == 40 and f"{y_test[0]}/000.png" in labels
    assert np.mean([labels[f"{y}/{i:03d}.png"] == str(y) for i, y in enumerate(y_test[:40])]) > 0.9
    (tmp_path / "s.txt").write_text("A cat sits on the mat.\n\nStocks fell sharply.\n")
    info = predict_to_db(bundles[1], tmp_path / "s.txt", db_url, table="sentences")
    assert info["written"] == 2 and [r[0] for r in _rows(db_url, "sentences")] == ["row-0", "row-1"]
    result = cli("predict", bundles[0], "--input", tmp_path / "s.txt", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 1 and "holds sentences, but the bundle's processing takes image input" in result.output


@pytest.mark.parametrize("content, message", [
    ("key,a,b\nx,1,2\n", "do not fill input input"),
    ("garbage\x00\x01", "is not a readable CSV file"),
    ("key,name\nx,cat\n", "do not match the model's inputs"),
])
def test_unusable_inputs_are_one_clear_error(bundles, tmp_path, cli, content, message):
    (tmp_path / "bad.csv").write_text(content)
    result = cli("predict", bundles[0], "--input", tmp_path / "bad.csv", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 1 and message in result.output and "unexpected" not in result.output


def test_serve_answers_known_keys_from_the_table(bundles, digits_data, tmp_path, cli):
    path, x_test, _, keys = digits_data
    db_url = f"sqlite:///{tmp_path / 'lookup.db'}"
    assert cli("predict", bundles[0], "--input", path, "--db", db_url).exit_code == 0
    s = Server([bundles[0], "--lookup-db", db_url])
    try:
        stored = dict((r[0], r[3]) for r in _rows(db_url))
        status, body, headers = s.request("POST", f"/v1/models/digits-cnn/predict?key={keys[3]}", b"",
                                          {"Content-Type": "image/png"})
        assert status == 200 and headers.get("X-Edgekit-Source") == "lookup"
        assert json.loads(body)["predictions"][0]["label"] == stored[keys[3]]
        request = {"parameters": {"key": str(keys[5])},
                   "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
        status, body, headers = s.request("POST", "/v2/models/digits-cnn/infer", json.dumps(request).encode())
        logits = np.asarray(json.loads(body)["outputs"][0]["data"]).reshape(1, 10)
        assert status == 200 and headers.get("X-Edgekit-Source") == "lookup"
        assert str(int(logits.argmax())) == stored[keys[5]]  # the stored answer, not the zeros sent
        request["parameters"]["key"] = "never-scored"
        status, _, headers = s.request("POST", "/v2/models/digits-cnn/infer", json.dumps(request).encode())
        assert status == 200 and headers.get("X-Edgekit-Source") == "model"  # unknown key: live inference
        # a key names one stored row: four rows with one key are refused, not answered with one row
        four = {"parameters": {"key": str(keys[5])},
                "inputs": [{"name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 256}]}
        status, body, _ = s.request("POST", "/v2/models/digits-cnn/infer", json.dumps(four).encode())
        assert status == 400 and "this request has 4 rows" in json.loads(body)["error"]
        for key in (["a"], {"k": 1}, 7):  # not strings: a 400, never a database error
            request["parameters"]["key"] = key
            status, body, _ = s.request("POST", "/v2/models/digits-cnn/infer", json.dumps(request).encode())
            assert status == 400 and "parameters.key must be a string" in json.loads(body)["error"]
    finally:
        s.stop()


@pytest.mark.parametrize("name, write, message", [
    ("few-keys.npz", lambda p, x: np.savez(p, input=x[:10], key=np.asarray(["a", "b", "c"])), "holds 3 keys for 10 rows"),
    ("same-key.npz", lambda p, x: np.savez(p, input=x[:10], key=np.asarray(["same"] * 10)), "9 rows repeat a 'key'"),
    ("keys.csv", lambda p, x: p.write_text("key," + ",".join(f"px{i}" for i in range(64)) + "\n" + "".join(
        f"{k}," + ",".join(["0.5"] * 64) + "\n" for k in ["a", "", "", "", "a"])), "3 rows have no 'key'"),
])
def test_keys_are_one_per_row_and_unique_or_nothing_is_written(bundles, tmp_path, cli, name, write, message):
    """10 rows and 3 keys wrote 3 rows; 10 rows keyed 'same' wrote 1; blank keys merged: each
    now refuses before scoring anything, saying which rows."""
    from edgekit.zoo import digits

    write(tmp_path / name, digits._split()[1])
    db = f"sqlite:///{tmp_path / 'p.db'}"
    result = cli("predict", bundles[0], "--input", tmp_path / name, "--db", db)
    assert result.exit_code == 1 and message in result.output and "unexpected" not in result.output, result.output
    from edgekit._sql import SqlDatabase

    with SqlDatabase(db).connect() as tx:
        assert not tx.table_exists("predictions") or tx.one("SELECT COUNT(*) FROM predictions")[0] == 0


def test_a_bad_row_mid_run_says_where_and_what_was_kept(bundles, tmp_path, cli):
    from edgekit.zoo import digits

    x = digits._split()[1][:100].copy()
    x[57] = np.nan
    np.savez(tmp_path / "nan.npz", input=x, key=np.asarray([f"k{i:03d}" for i in range(100)]))
    db = f"sqlite:///{tmp_path / 'p.db'}"
    result = cli("predict", bundles[0], "--input", tmp_path / "nan.npz", "--db", db, "--chunk", "10",
                 "--batch-size", "1")
    assert result.exit_code == 1 and "'k057'" in result.output and "50 rows were written" in result.output, \
        result.output
    assert "run the same command again" in result.output
    x[57] = 0.0
    np.savez(tmp_path / "nan.npz", input=x, key=np.asarray([f"k{i:03d}" for i in range(100)]))
    done = json.loads(cli("predict", bundles[0], "--input", tmp_path / "nan.npz", "--db", db, "--json").output)
    assert done["written"] == 50 and done["skipped_existing"] == 50


def test_a_numeric_key_column_is_not_a_feature(bundles, tmp_path, cli):
    from edgekit.zoo import digits

    x = digits._split()[1][:5]
    lines = ["id," + ",".join(f"px{i}" for i in range(64))] + [
        f"{100 + i}," + ",".join(f"{v:.5f}" for v in row.ravel()) for i, row in enumerate(x)]
    (tmp_path / "ids.csv").write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    result = cli("predict", bundles[0], "--input", tmp_path / "ids.csv", "--db", db, "--key-column", "id", "--json")
    assert result.exit_code == 0, result.output
    assert [r[0] for r in _rows(db)] == ["100", "101", "102", "103", "104"]


@pytest.mark.parametrize("table", ["select", "order", "user", "sqlite_master", "pg_class"])
def test_a_reserved_table_name_is_refused(bundles, digits_data, tmp_path, cli, table):
    result = cli("predict", bundles[0], "--input", digits_data[0], "--db", f"sqlite:///{tmp_path / 'p.db'}",
                 "--table", table)
    assert result.exit_code == 1 and "is reserved by SQL or the database" in result.output, result.output


def test_inputs_and_databases_that_are_not_what_they_should_be(bundles, tmp_path, cli):
    np.savez(tmp_path / "scalar.npz", input=np.float32(1.0))
    np.savez(tmp_path / "objects.npz", input=np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for name, message in (("scalar.npz", "is a single value"), ("objects.npz", "holds Python objects, not numbers")):
        result = cli("predict", bundles[0], "--input", tmp_path / name, "--db", f"sqlite:///{tmp_path / 'p.db'}")
        assert result.exit_code == 1 and message in result.output and "unexpected" not in result.output, result.output
    (tmp_path / "notes.txt").write_text("not a database, a text file that is long enough to have a header\n" * 20)
    np.savez(tmp_path / "ok.npz", input=np.zeros((2, 1, 8, 8), np.float32))
    result = cli("predict", bundles[0], "--input", tmp_path / "ok.npz", "--db", f"sqlite:///{tmp_path / 'notes.txt'}")
    assert result.exit_code == 1 and "is not a SQLite database" in result.output, result.output


def test_spark_scores_a_parquet_table_as_the_single_machine_path_does(bundles, digits_data, tmp_path, cli):
    """`edgekit predict --engine spark` (local mode, Debian's JRE): executors score the Parquet table
    through mapInPandas with the bundle's runtime, once loaded per worker; the table it writes
    holds the same keys and labels as the single-machine path's, scores and outputs within 1e-6."""
    pytest.importorskip("pyspark", reason="--engine spark needs pyspark (the spark extra; make install has it)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, x_test, _, keys = digits_data
    table = tmp_path / "digits.parquet"
    pq.write_table(pa.table({"key": keys.tolist(), "input": [row.ravel().tolist() for row in x_test]}), table,
                   row_group_size=100)
    answers = {}
    for engine in ("local", "spark"):
        db = f"sqlite:///{tmp_path / engine}.db"
        result = cli("predict", bundles[0], "--input", table, "--db", db, "--engine", engine, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["written"] == len(keys)
        from edgekit._sql import SqlDatabase

        with SqlDatabase(db).connect() as tx:
            answers[engine] = tx.all("SELECT key, model, version, label, score, outputs FROM predictions ORDER BY key")
    local, spark = answers["local"], answers["spark"]
    assert [r[:4] for r in spark] == [r[:4] for r in local]  # keys, model, version, labels: exact
    assert np.allclose([r[4] for r in spark], [r[4] for r in local], rtol=0, atol=1e-6)
    got = np.array([v["data"] for r in spark for v in json.loads(r[5]).values()])
    want = np.array([v["data"] for r in local for v in json.loads(r[5]).values()])
    assert got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-6)
