"""Every command prints, without --json, what its --json holds: a table that was built and never
printed (`loop history`, `release status`) left users with one line or nothing. Each command runs
twice on one real collector database and bundle; the names, versions and counts in its JSON must
appear in its plain output."""

import json
import re

import pytest

from tests.conftest import ingest_predictions
from tests.unit.test_runtime import opt_dir  # noqa: F401  (the tiny bundle fixture)

NAME = re.compile(r"^[A-Za-z][\w.+-]{2,40}$")  # a device, a model, a version, a variant, a state


def _leaves(value, key=""):
    """(key, value) of every scalar in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


def _shown(document, plain: str) -> tuple[list, list]:
    """(the names and counts of ``document`` that ``plain`` shows, those it does not)."""
    wanted = {str(v) for k, v in _leaves(document) if isinstance(v, str) and NAME.match(v) and "/" not in v
              and k not in ("sha256", "file", "created", "token_hash")}
    # counts: not times (epoch seconds), sizes, or histogram bins keyed by their index
    counts = {v for k, v in _leaves(document) if isinstance(v, int) and not isinstance(v, bool) and 1 < v < 1e9
              and not k.endswith(("time", "_s", "size")) and not k.isdigit()}
    found = [w for w in wanted if w in plain] + [str(v) for v in counts if str(v) in plain or f"{v:,}" in plain]
    missing = [w for w in wanted if w not in plain] + [str(v) for v in counts
                                                        if str(v) not in plain and f"{v:,}" not in plain]
    return found, sorted(missing)


@pytest.fixture
def world(opt_dir, tmp_path):  # noqa: F811
    from edgekit.bundle import make_bundle
    from edgekit.collector.db import Database
    from edgekit.collector.releases import adopt, publish, start_rollout

    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = Database(url)
    for version in ("1", "2"):
        make_bundle(opt_dir, tmp_path / f"tiny-{version}.ekb", version=version)
    for i in range(4):
        ingest_predictions(db, f"pi-{i}", "tiny", "1", 60, group="store-12" if i % 2 else "store-14")
    adopt(db, tmp_path / "store", tmp_path / "tiny-1.ekb", "tiny")
    publish(db, tmp_path / "store", tmp_path / "tiny-2.ekb", "tiny", "2")
    start_rollout(db, "tiny", "2", 50, min_devices=2)
    from edgekit.sync import LogStore

    store = LogStore(tmp_path / "log.db")
    store.close()
    (tmp_path / "sync.toml").write_text(f'db = "{tmp_path / "log.db"}"\nurl = "http://127.0.0.1:9"\n'
                                        f'token_file = "{tmp_path / "t.token"}"\n')
    (tmp_path / "t.token").write_text("x" * 32)
    return {"url": url, "sync": tmp_path / "sync.toml", "bundle": tmp_path / "tiny-2.ekb", "onnx": opt_dir / "artifacts" / "a.onnx"}


COMMANDS = [
    ("release status", lambda w: ["release", "status", "tiny", "--db", w["url"]]),
    ("release decide", lambda w: ["release", "decide", "tiny", "--db", w["url"], "--dry-run"]),
    ("collector stats", lambda w: ["collector", "stats", "--db", w["url"]]),
    ("monitor show", lambda w: ["monitor", "show", "--model", "tiny", "--db", w["url"], "--window", "1d", "--by", "device"]),
    ("sync status", lambda w: ["sync", "status", "--config", w["sync"]]),
    ("targets show", lambda w: ["targets", "show", "raspberrypi"]),  # (list is a summary; show has it all)
    ("inspect", lambda w: ["inspect", w["onnx"]]),
    ("run", lambda w: ["run", w["bundle"]]),
]


@pytest.mark.parametrize("name, args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_command_prints_what_its_json_holds(world, cli, name, args):
    argv = args(world)
    as_json = cli(*argv, "--json")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    plain = cli(*argv)
    assert plain.exit_code == 0, plain.output
    found, missing = _shown(document, plain.stdout)
    assert found and len(missing) <= len(found) / 4, f"{name} does not show {missing[:12]} ({len(found)} shown)"
