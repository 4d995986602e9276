"""Data expectations on real data (the digits, MiniLM's tokens of the shipped sentences): each
corruption fails the expectation that names it, and nothing else."""

import time

import numpy as np
import pytest

from edgekit.testing import Suite, assert_expectations, run_suite, suggest

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    from edgekit.zoo import digits

    x_train, x_test, y_train, y_test = digits._split()
    d = tmp_path_factory.mktemp("exp")
    now = time.time()

    def save(name, x, y, t0):
        path = d / name
        np.savez(path, input=x, labels=y, key=np.asarray([f"{name[:3]}-{i}" for i in range(len(x))]),
                 time=t0 + np.arange(len(x), dtype=np.float64))
        return path

    ref = save("reference.npz", x_train, y_train, now - 86400)
    new = save("new.npz", x_test, y_test, now - 3600)
    return d, ref, new


@pytest.fixture(scope="module")
def digits_suite(digits_files):
    d, ref, _ = digits_files
    suite = suggest(ref, key="key")
    (d / "suite.toml").write_text(suite.to_toml())
    return Suite.load(d / "suite.toml")  # what a person edits is what runs


def _failed(result):
    return sorted({(o.kind, o.column) for o in result.failed()})


def test_the_suite_holds_on_its_reference_and_on_new_clean_data(digits_files, digits_suite):
    _, ref, new = digits_files
    kinds = {c.kind for c in digits_suite.checks}
    assert {"dtype", "shape", "range", "no_missing", "allowed_values", "label_distribution", "unique",
            "not_in_future", "monotonic", "matches_reference"} <= kinds
    assert run_suite(digits_suite, ref).success
    new_result = run_suite(digits_suite, new)
    # the held-out keys are not in the reference, so matches_reference has nothing to compare
    assert new_result.success, [(o.kind, o.column, o.observed) for o in new_result.failed()]


def _corrupt(src, dst, **changes):
    with np.load(src) as npz:
        data = {k: npz[k].copy() for k in npz.files}
    for name, fn in changes.items():
        data[name] = fn(data[name]) if callable(fn) else fn
    np.savez(dst, **data)
    return dst


@pytest.mark.parametrize("corruption, expected", [
    ({"input": lambda x: np.where(np.arange(len(x))[:, None, None, None] % 50 == 0, np.nan, x)},
     [("no_missing", "input")]),
    ({"input": lambda x: np.where(np.arange(len(x))[:, None, None, None] % 20 == 0, x * 4 + 1, x)},
     [("range", "input")]),
    ({"labels": lambda y: np.random.default_rng(0).permutation(y)}, [("matches_reference", "labels")]),
    ({"time": lambda t: np.where(np.arange(len(t)) == len(t) - 1, time.time() + 86400, t)},
     [("not_in_future", "time")]),
])
def test_each_corruption_fails_its_expectation_and_nothing_else(digits_files, digits_suite, tmp_path, corruption,
                                                                   expected):
    _, ref, _ = digits_files
    bad = _corrupt(ref, tmp_path / "bad.npz", **corruption)
    assert _failed(run_suite(digits_suite, bad)) == expected


def test_duplicated_rows_fail_uniqueness_only(digits_files, digits_suite, tmp_path):
    _, ref, _ = digits_files
    with np.load(ref) as npz:
        data = {k: npz[k] for k in npz.files}
    twice = np.arange(len(data["input"])) % 10 == 0  # one row in ten written twice
    dup = {k: np.concatenate([v, v[twice]]) for k, v in data.items()}
    dup["key"] = np.asarray([f"dup-{i}" for i in range(len(dup["key"]))])  # keys stay unique
    dup["time"] = np.sort(dup["time"])
    np.savez(tmp_path / "dup.npz", **dup)
    assert _failed(run_suite(digits_suite, tmp_path / "dup.npz")) == [("unique", "input")]


def test_recent_fails_the_rows_older_than_its_age_and_only_those(digits_files):
    """The reference's timestamps are a day old, the new file's an hour: a 2 h window passes the
    new file and fails every reference row; 'mostly' tolerates a share of stale rows."""
    _, ref, new = digits_files
    suite = Suite.parse({"name": "fresh", "expect": [{"kind": "recent", "column": "time", "max_age_s": 7200}]})
    assert run_suite(suite, new).success
    stale = run_suite(suite, ref)
    assert [(o.kind, o.failing_rows, o.rows) for o in stale.failed()] == [("recent", stale.rows, stale.rows)]
    with np.load(new) as npz:
        data = {k: npz[k].copy() for k in npz.files}
    data["time"][:10] -= 86400  # ten rows a day late
    np.savez(digits_files[0] / "late.npz", **data)
    late = run_suite(suite, digits_files[0] / "late.npz")
    assert [(o.kind, o.failing_rows) for o in late.failed()] == [("recent", 10)]
    lenient = Suite.parse({"name": "f", "expect": [{"kind": "recent", "column": "time", "max_age_s": 7200,
                                                    "mostly": 0.9}]})
    assert run_suite(lenient, digits_files[0] / "late.npz").success


def test_tokens_out_of_vocabulary_and_bad_masks(tmp_path):
    pytest.importorskip("tokenizers")
    from edgekit.zoo import minilm

    tokens = minilm.tokenize(minilm.sentences())
    np.savez(tmp_path / "ref.npz", **tokens)
    suite = suggest(tmp_path / "ref.npz")
    assert run_suite(suite, tmp_path / "ref.npz").success
    oov = dict(tokens, input_ids=np.where(tokens["input_ids"] == 2023, 40000, tokens["input_ids"]))
    np.savez(tmp_path / "oov.npz", **oov)
    assert _failed(run_suite(suite, tmp_path / "oov.npz")) == [("range", "input_ids")]
    mask = dict(tokens, attention_mask=np.ones_like(tokens["attention_mask"]))
    np.savez(tmp_path / "mask.npz", **mask)
    assert _failed(run_suite(suite, tmp_path / "mask.npz")) == [("mask_matches_padding", "attention_mask")]


def test_assert_helper_for_pytest_and_a_user_rule(digits_files, tmp_path, monkeypatch):
    _, ref, _ = digits_files
    (tmp_path / "rules.py").write_text(
        "import numpy as np\n"
        "def inked(chunk):\n"
        "    return chunk['input'].reshape(len(chunk['input']), -1).max(axis=1) > 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = Suite.parse({"name": "rules", "expect": [{"kind": "rule", "function": "rules:inked", "column": "input"},
                                                     {"kind": "row_count", "min": 5000}]})
    with pytest.raises(AssertionError, match="completeness/row_count on -: expected 5000 to any rows, observed 1347"):
        assert_expectations(suite, ref)


def test_a_rule_that_raises_is_one_line_naming_it(digits_files, tmp_path, monkeypatch):
    from edgekit.errors import EdgekitError

    _, ref, _ = digits_files
    (tmp_path / "broken_rules.py").write_text("def bad(chunk):\n    return chunk['no_such_column'] > 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = Suite.parse({"name": "r", "expect": [{"kind": "rule", "function": "broken_rules:bad", "column": "input"}]})
    with pytest.raises(EdgekitError, match="rule broken_rules:bad raised KeyError: 'no_such_column'"):
        run_suite(suite, ref)


def test_parquet_input_streams_in_chunks(digits_files, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    _, ref, _ = digits_files
    with np.load(ref) as npz:
        x, y = npz["input"], npz["labels"]
    pq.write_table(pa.table({"input": [r.ravel().tolist() for r in x], "labels": y}), tmp_path / "d.parquet",
                   row_group_size=100)
    suite = Suite.parse({"name": "p", "expect": [{"kind": "range", "column": "input", "min": 0, "max": 1},
                                                 {"kind": "row_count", "min": 1347, "max": 1347}]})
    result = run_suite(suite, tmp_path / "d.parquet", chunk=100)
    assert result.success and result.rows == 1347


def test_parquet_null_and_fixed_size_list_rows(tmp_path):
    """A null tensor row is a missing value that no_missing counts, not a crash; fixed-size lists stack."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = pa.array([[[0.0, 1.0], [1.0, 0.0]], None, [[0.5, 0.5], [0.5, 0.5]]])
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 2)
    pq.write_table(pa.table({"input": images, "emb": embeddings}), tmp_path / "n.parquet")
    suite = Suite.parse({"name": "n", "expect": [{"kind": "no_missing", "column": "input"},
                                                 {"kind": "shape", "column": "input", "shape": [2, 2]},
                                                 {"kind": "shape", "column": "emb", "shape": [2]}]})
    result = run_suite(suite, tmp_path / "n.parquet")
    assert [(o.kind, o.failing_rows) for o in result.failed()] == [("no_missing", 1)]


@pytest.mark.parametrize("suite, message", [
    ({"expect": [{"kind": "teleport"}]}, "kind must be one of"),
    ({"expect": [{"kind": "range", "column": "x", "mostly": 2}]}, "mostly must be within"),
    ({"nothing": 1}, "a list 'expect'"),
])
def test_bad_suites_are_clear_errors(suite, message):
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match=message):
        Suite.parse(suite)


def test_an_integer_key_is_an_identity_not_a_range(tmp_path):
    """`suggest --key key` put `range key [0, 599]` in the suite, and the README's suggest -> run
    pair then failed every new row (300 of 300): ids of new data are new."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", x=rng.normal(size=(600, 4)).astype(np.float32), labels=rng.integers(0, 3, 600),
             key=np.arange(600))
    np.savez(tmp_path / "new.npz", x=rng.normal(size=(300, 4)).astype(np.float32), labels=rng.integers(0, 3, 300),
             key=np.arange(600, 900))
    suite = suggest(tmp_path / "ref.npz", key="key")
    assert not [c for c in suite.checks if getattr(c, "column", None) == "key" and c.kind in ("range", "allowed_values")]
    result = run_suite(suite, tmp_path / "new.npz")
    assert result.success, [(o.kind, o.column, o.observed) for o in result.failed()]


def test_a_keyed_suite_judges_a_loop_data_set_on_the_columns_it_carries(digits_files, digits_suite, tmp_path):
    """The README's suite (suggested with --key key) as loop.toml's gate.expect stopped the loop:
    'expectation dtype needs column key', though the loop's data sets carry the model's inputs and
    labels, never a feed's ids. The gate applies the checks on the columns the split has and says
    which it left out; a check on a column the split has still fails on bad values."""
    from edgekit.errors import DataError

    _, _, new = digits_files
    with np.load(new) as npz:
        split = {"input": npz["input"], "labels": npz["labels"], "source": np.full(len(npz["labels"]), "curated"),
                 "group": np.full(len(npz["labels"]), "store-12")}
    np.savez(tmp_path / "test.npz", **split)
    with pytest.raises(DataError, match="needs column '(key|time)'"):
        run_suite(digits_suite, tmp_path / "test.npz")
    applied, left = digits_suite.on_columns(split)
    assert any("key" in why for why in left) and any(why.startswith("matches_reference") for why in left)
    assert {"dtype", "range", "label_distribution"} <= {c.kind for c in applied.checks}
    result = run_suite(applied, tmp_path / "test.npz")
    assert result.success, [(o.kind, o.column, o.observed) for o in result.failed()]
    np.savez(tmp_path / "bad.npz", **{**split, "input": split["input"] * 100})
    assert ("range", "input") in _failed(run_suite(applied, tmp_path / "bad.npz"))
