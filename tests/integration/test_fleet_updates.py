"""Fleet updates with real processes: a collector serving the registry and devices (each its own
process with a log store, sync client, updater and hot-swapping app).

A good release goes canary -> promoted; a worse one (labels permuted: users' feedback says so)
is rolled back on its canary devices and never reaches the others; a release signed with the
wrong key, and a tampered file, are refused by every device and rolled back at once; a device
that was offline during a rollout catches up; every device always runs a working version.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _services import Collector
from tests.unit.test_runtime import opt_dir  # noqa: F401  (the tiny bundle fixture)

pytest.importorskip("scipy")
pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).parent


def _names(count_canary: int, count_control: int, share: float = 50.0, model: str = "digits-cnn") -> list[str]:
    """Device names whose stable hash puts the first ones in a ``share`` canary, the rest out."""
    from edgekit.collector.releases import bucket

    canary, control = [], []
    for i in range(1000):
        name = f"dev-{i}"
        (canary if bucket(name, model) < share else control).append(name)
        if len(canary) >= count_canary and len(control) >= count_control:
            break
    return canary[:count_canary] + control[:count_control]


def _worse_bundle(folder: Path, key: Path, version: str) -> Path:
    """The digits CNN with its classes permuted in the last layer: it loads and passes its own
    self-test, and is wrong on nearly every digit."""
    import torch

    from edgekit.bundle import make_bundle
    from edgekit.spec import Model, TensorSpec
    from edgekit.optimizer import optimize
    from edgekit.zoo import digits

    module = digits.trained_module()
    last = module[-1]
    with torch.no_grad():
        order = torch.roll(torch.arange(10), 3)
        last.weight.copy_(last.weight[order])
        last.bias.copy_(last.bias[order])
    x = digits._split()[0]
    model = Model(name="digits-cnn", format="pytorch", source="permuted", inputs=[TensorSpec("input", ("batch", 1, 8, 8),
                  "float32")], outputs=[TensorSpec("logits", ("batch", 10), "float32")], module=module,
                  example_inputs=(torch.from_numpy(x[:1]),), task="classification")
    np.savez(folder / "calib.npz", input=x[:200])
    optimize(model, target="host", data=str(folder / "calib.npz"), out=folder / "worse", formats={"onnx"},
             precisions={"fp32"}, processing=digits.PROCESSING)
    make_bundle(folder / "worse", folder / f"digits-{version}.ekb", sign_key=key, version=version)
    return folder / f"digits-{version}.ekb"


@pytest.fixture(scope="module")
def fleet(bundles, tmp_path_factory):
    from edgekit.bundle import generate_keys, make_bundle
    from edgekit.collector.db import Database, add_device
    from edgekit.zoo import digits

    folder = tmp_path_factory.mktemp("fleet-updates")
    generate_keys(folder / "release.pem", folder / "release.pub")
    generate_keys(folder / "other.pem", folder / "other.pub")
    source = bundles[0].parent / "digits"  # the optimised digits folder the bundles fixture packed
    made = {}
    for version, key in (("1", "release"), ("2", "release"), ("4", "other"), ("8", "other")):
        made[version] = folder / f"digits-{version}.ekb"
        make_bundle(source, made[version], sign_key=folder / f"{key}.pem", version=version)
    made["3"] = _worse_bundle(folder, folder / "release.pem", "3")
    for version in ("5", "6", "7"):
        made[version] = folder / f"digits-{version}.ekb"
        make_bundle(source, made[version], sign_key=folder / "release.pem", version=version)
    _, x, _, y = digits._split()
    np.savez(folder / "digits.npz", input=x, labels=y)
    url = f"sqlite:///{folder / 'collector.db'}"
    db = Database(url)
    names = _names(2, 2)
    tokens = {name: add_device(db, name) for name in names}
    # decisions by command here, so each step can be checked (the automatic one has its own test)
    collector = Collector(url, extra=("--store", str(folder / "store"), "--decide-every", "0")).start()
    try:
        yield {"folder": folder, "url": url, "db": db, "bundles": made, "names": names, "tokens": tokens,
               "collector": collector}
    finally:
        collector.stop()


def _cli(fleet, *args):
    from click.testing import CliRunner

    from edgekit.cli import main

    result = CliRunner().invoke(main, [*map(str, args), "--db", fleet["url"]])
    assert result.exit_code == 0, result.output
    return result.output


def _device(fleet, name, rounds, max_rate="") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "_device.py"), fleet["collector"].url, fleet["tokens"][name],
         str(fleet["folder"] / "devices" / name), str(fleet["bundles"]["1"]), str(fleet["folder"] / "digits.npz"),
         str(rounds), str(fleet["folder"] / "release.pub"), str(max_rate)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _run(fleet, names, rounds=3) -> dict:
    """Run the devices (in parallel processes) for some rounds; their per-round reports."""
    procs = {name: _device(fleet, name, rounds) for name in names}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        out[name] = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return out


def _publish(fleet, version):
    _cli(fleet, "release", "publish", fleet["bundles"][version], "--model", "digits-cnn", "--version", version,
         "--store", fleet["folder"] / "store")


def test_releases_roll_out_and_back_across_a_fleet_of_processes(fleet):
    canary, control = fleet["names"][:2], fleet["names"][2:]
    _publish(fleet, "1")
    _cli(fleet, "release", "rollout", "digits-cnn", "1", "--canary", "100%")
    _cli(fleet, "release", "promote", "digits-cnn")
    first = _run(fleet, fleet["names"][:3], rounds=1)  # the last device is offline for a while
    assert all(r[-1]["running"] == "1" for r in first.values())

    # a good release: canary, judged, promoted, then everywhere
    _publish(fleet, "2")
    _cli(fleet, "release", "rollout", "digits-cnn", "2", "--canary", "50%")
    ran = _run(fleet, fleet["names"][:3])
    assert all(ran[n][-1]["running"] == "2" for n in canary) and ran[control[0]][-1]["running"] == "1"
    status = json.loads(_cli(fleet, "release", "status", "digits-cnn", "--json"))
    assert {d["version"] for d in status["devices"]} == {"1", "2"}
    assert {s["signal"] for s in status["verdict"]["signals"]} >= {"fallback share", "feedback error rate"}
    verdict = json.loads(_cli(fleet, "release", "decide", "digits-cnn", "--min-predictions", "40", "--json"))
    assert verdict["decision"] == "promote", verdict
    ran = _run(fleet, fleet["names"], rounds=1)
    assert all(r[-1]["running"] == "2" for r in ran.values())  # the offline device caught up too

    # a worse release: the canary's users' labels disagree, it rolls back; control never sees it
    _publish(fleet, "3")
    _cli(fleet, "release", "rollout", "digits-cnn", "3", "--canary", "50%")
    ran = _run(fleet, fleet["names"])
    assert all(ran[n][-1]["running"] == "3" for n in canary)
    assert all(round_["running"] == "2" for n in control for round_ in ran[n])
    verdict = json.loads(_cli(fleet, "release", "decide", "digits-cnn", "--min-predictions", "40", "--json"))
    assert verdict["decision"] == "rollback" and "feedback error rate" in verdict["reason"], verdict
    ran = _run(fleet, fleet["names"], rounds=1)  # rolled back within one poll
    assert all(r[0]["running"] == "2" for r in ran.values())
    assert all(ran[n][0]["event"] == "switched" and ran[n][0]["previous"] == "3" for n in canary)

    # signed with another key: every device refuses it, reports it, and the rollout ends at once
    _publish(fleet, "4")
    _cli(fleet, "release", "rollout", "digits-cnn", "4", "--canary", "100%")
    ran = _run(fleet, fleet["names"], rounds=1)
    assert all(r[0]["event"] == "refused" and r[0]["running"] == "2" for r in ran.values())
    verdict = json.loads(_cli(fleet, "release", "decide", "digits-cnn", "--json"))
    assert verdict["decision"] == "rollback" and "failed on" in verdict["reason"]

    # a file tampered with in the store: the hash check refuses it
    _publish(fleet, "5")
    with fleet["db"].read() as tx:
        sha = tx.one("SELECT sha256 FROM releases WHERE version = '5'")[0]
    stored = fleet["folder"] / "store" / f"{sha}.ekb"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    _cli(fleet, "release", "rollout", "digits-cnn", "5", "--canary", "100%")
    ran = _run(fleet, fleet["names"][:1], rounds=1)
    only = ran[fleet["names"][0]][0]
    assert only["event"] == "error" and "refused" in only["reason"] and only["running"] == "2"
    verdict = json.loads(_cli(fleet, "release", "decide", "digits-cnn", "--json"))
    assert verdict["decision"] == "rollback" and "sha256" in verdict["reason"]
    status = json.loads(_cli(fleet, "release", "status", "digits-cnn", "--json"))
    assert {e["event"] for e in status["events"]} >= {"canary", "promoted", "rolled_back", "device failed"}


def test_a_shadow_release_is_judged_on_the_requests_it_did_not_serve(fleet):
    """In shadow the canary devices keep serving the baseline; the new version's answers are
    logged beside each served one, and users' labels on those very requests roll it back."""
    canary, control = fleet["names"][:2], fleet["names"][2:]
    _publish(fleet, "3")
    _cli(fleet, "release", "rollout", "digits-cnn", "3", "--canary", "50%", "--shadow")
    ran = _run(fleet, fleet["names"], rounds=3)
    assert all(r["running"] != "3" for n in fleet["names"] for r in ran[n])  # never served
    assert all(ran[n][-1]["shadow"] == "3" for n in canary) and all(ran[n][-1]["shadow"] is None for n in control)
    with fleet["db"].read() as tx:
        shadows = tx.one("SELECT COUNT(*) FROM records WHERE version = '3' AND variant = 'shadow' "
                         "AND request_id LIKE '%:shadow'")[0]
    assert shadows > 0
    verdict = json.loads(_cli(fleet, "release", "decide", "digits-cnn", "--min-predictions", "40", "--json"))
    assert verdict["decision"] == "rollback" and "in shadow" in verdict["reason"], verdict
    ran = _run(fleet, canary, rounds=1)
    assert all(ran[n][0]["shadow"] is None for n in canary)  # stopped at the next poll


def test_assignment_and_downloads_need_a_device_token_and_resume(fleet):
    import urllib.error
    import urllib.request

    url = fleet["collector"].url
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/v1/assignment?model=digits-cnn", timeout=5)
    assert refused.value.code == 401
    _publish(fleet, "2")
    with fleet["db"].read() as tx:
        sha, size = tx.one("SELECT sha256, size FROM releases WHERE version = '2'")
    token = fleet["tokens"][fleet["names"][0]]
    request = urllib.request.Request(f"{url}/v1/bundles/{sha}", headers={"Authorization": f"Bearer {token}",
                                                                         "Range": f"bytes={size - 100}-"})
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 206 and len(r.read()) == 100


def test_hot_swap_under_load_drops_no_request(fleet):
    """16 threads predicting while the model swaps back and forth: no call fails, each is served
    by a whole model (the old or the new), and a swap to a broken bundle changes nothing."""
    import threading

    from edgekit.errors import EdgekitError
    from edgekit.runtime.hot import HotModel

    app = HotModel(fleet["bundles"]["1"])
    x = np.load(fleet["folder"] / "digits.npz")["input"][:64]
    failures, versions, stop = [], set(), threading.Event()

    def caller(k):
        while not stop.is_set():
            try:
                out = app.predict({"input": x[k:k + 1]})
                assert out["logits"].shape == (1, 10)
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for i in range(10):
        app.swap(fleet["bundles"]["2" if i % 2 == 0 else "1"])
        versions.add(app.version)
    broken = fleet["folder"] / "broken.ekb"
    broken.write_bytes(b"not a bundle")
    with pytest.raises(EdgekitError):
        app.swap(broken)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert versions == {"1", "2"} and app.version == "1" and app.swaps == 10


def test_an_interrupted_download_resumes_and_a_corrupt_part_is_refetched(fleet, tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.sync.updates import Updater

    _publish(fleet, "2")
    with fleet["db"].read() as tx:
        sha, size = tx.one("SELECT sha256, size FROM releases WHERE version = '2'")
    name = fleet["names"][0]
    updater = Updater(fleet["collector"].url, fleet["tokens"][name], "digits-cnn", tmp_path / "u",
                      public_key=str(fleet["folder"] / "release.pub"))
    whole = fleet["bundles"]["2"].read_bytes()
    part = tmp_path / "u" / "bundles" / f"{sha}.part"
    part.write_bytes(whole[: size // 2])  # a power cut half way
    assert updater._download(sha, size).read_bytes() == whole  # the rest came by a range request
    (tmp_path / "u" / "bundles" / f"{sha}.ekb").unlink()
    part.write_bytes(b"\0" * (size // 2))  # a damaged partial file
    with pytest.raises(EdgekitError, match="refused"):
        updater._download(sha, size)
    assert not part.exists()  # thrown away: the next poll starts clean
    assert updater._download(sha, size).read_bytes() == whole
    (tmp_path / "u" / "state.tmp").write_text("{half a state")  # a kill during the switch
    assert updater.current_bundle() is None and updater.state()["current"] is None


def test_kill_9_during_download_and_switch_leaves_a_working_device(fleet):
    """A device killed half way through a download resumes it (fetching only the rest); killed
    at any moment of an update, it restarts on a complete, verified version."""
    import random
    import signal
    import time

    name = fleet["names"][3]
    _run(fleet, [name], rounds=1)  # settled on whatever the fleet runs now
    _publish(fleet, "6")
    _cli(fleet, "release", "rollout", "digits-cnn", "6", "--canary", "100%")
    with fleet["db"].read() as tx:
        sha, size = tx.one("SELECT sha256, size FROM releases WHERE version = '6'")
    part = fleet["folder"] / "devices" / name / "updates" / "bundles" / f"{sha}.part"
    proc = _device(fleet, name, 1, max_rate=size // 4)  # about 4 s for the whole bundle
    deadline = time.time() + 120
    while (not part.exists() or part.stat().st_size < size // 4) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = part.stat().st_size
    assert 0 < partial < size
    ran = _run(fleet, [name], rounds=1)[name][0]
    assert ran["event"] == "switched" and ran["running"] == "6" and ran["fetched"] == size - partial
    _cli(fleet, "release", "promote", "digits-cnn")

    # kills at random moments of further updates (7, then a rollback to 6): never a broken start
    _publish(fleet, "7")
    _cli(fleet, "release", "rollout", "digits-cnn", "7", "--canary", "100%")
    rng = random.Random(0)
    for attempt in range(6):
        if attempt == 3:
            _cli(fleet, "release", "rollback", "digits-cnn")
        proc = _device(fleet, name, 1, max_rate=size // 2)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = _run(fleet, [name], rounds=1)[name][0]  # restarts, and finishes the update
        assert after["running"] == ("7" if attempt < 3 else "6"), after


def test_the_collector_rolls_a_failing_canary_back_by_itself(fleet):
    """With --decide-every, nobody runs a command: a version refused by a device is rolled back
    at the collector's next judgement, and the device is back on its version at the next poll."""
    import time

    second = Collector(fleet["url"], extra=("--store", str(fleet["folder"] / "store"), "--decide-every", "1s")).start()
    try:
        name = fleet["names"][0]
        _publish(fleet, "8")  # signed with the wrong key
        _cli(fleet, "release", "rollout", "digits-cnn", "8", "--canary", "100%")
        refused = _run(fleet, [name], rounds=1)[name][0]
        assert refused["event"] == "refused"
        from edgekit.collector.releases import current_rollout

        deadline = time.time() + 30
        while current_rollout(fleet["db"], "digits-cnn").state == "canary" and time.time() < deadline:
            time.sleep(0.1)
        assert current_rollout(fleet["db"], "digits-cnn").state == "rolled_back"
    finally:
        second.stop()


def test_canary_membership_is_stable_as_it_grows_and_respects_groups(fleet, db_url, tmp_path):
    """On SQLite and PostgreSQL: the devices in a 10% canary stay in at 50%; --groups limits it;
    promote gives it to all, rollback takes it back to the baseline."""
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import assignment, publish, set_state, start_rollout
    from edgekit.errors import EdgekitError

    db = Database(db_url)
    names = [f"d{i}" for i in range(200)]
    for i, name in enumerate(names):
        add_device(db, name, group="north" if i % 2 else "south")
    for version in ("1", "2"):
        publish(db, tmp_path / "store", fleet["bundles"][version], "digits-cnn", version)
    start_rollout(db, "digits-cnn", "1", 100)
    set_state(db, "digits-cnn", "promoted", "test")

    def on(version):
        return {n for n in names if assignment(db, n, "digits-cnn").version == version}

    start_rollout(db, "digits-cnn", "2", 10, groups=("north",))
    small = on("2")
    assert small and all(int(n[1:]) % 2 for n in small) and len(small) < 40
    start_rollout(db, "digits-cnn", "2", 50, groups=("north",))
    assert small < on("2") and all(int(n[1:]) % 2 for n in on("2"))
    with pytest.raises(EdgekitError, match="only grows"):
        start_rollout(db, "digits-cnn", "2", 20, groups=("north",))
    with pytest.raises(EdgekitError, match="other content"):
        publish(db, tmp_path / "store", fleet["bundles"]["5"], "digits-cnn", "2")
    set_state(db, "digits-cnn", "rolled_back", "test")
    assert on("2") == set() and on("1") == set(names)


def test_an_updater_without_an_app_checks_signatures_itself(opt_dir, tmp_path):  # noqa: F811
    """The Updater's own check, with no app swap to catch what it lets through: a release signed
    with another key is refused and reported, and state.json keeps the version that verified."""
    from edgekit.bundle import generate_keys, make_bundle
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import publish, set_state, start_rollout
    from edgekit.sync.updates import Updater

    generate_keys(tmp_path / "release.pem", tmp_path / "release.pub")
    generate_keys(tmp_path / "other.pem", tmp_path / "other.pub")
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    db = Database(url)
    token = add_device(db, "pi-1")
    for version, key in (("1", "release"), ("2", "other")):
        make_bundle(opt_dir, tmp_path / f"tiny-{version}.ekb", sign_key=tmp_path / f"{key}.pem", version=version)
        publish(db, tmp_path / "store", tmp_path / f"tiny-{version}.ekb", "tiny", version)
    start_rollout(db, "tiny", "1", 100)
    collector = Collector(url, extra=("--store", str(tmp_path / "store"), "--decide-every", "0")).start()
    try:
        updater = Updater(collector.url, token, "tiny", tmp_path / "device", public_key=str(tmp_path / "release.pub"))
        assert updater.poll_once()["event"] == "switched"
        set_state(db, "tiny", "promoted", "test")
        start_rollout(db, "tiny", "2", 100)
        refused = updater.poll_once()
        assert refused["event"] == "refused" and "signature" in refused["reason"], refused
        state = updater.state()
        assert state["current"]["version"] == "1" and updater.current_bundle().is_file()
        assert len(state["failed"]) == 1 and not (tmp_path / "device" / "bundles" / f"{state['failed'][0]}.ekb").exists()
        with db.read() as tx:
            assert tx.one("SELECT version, state FROM device_models WHERE device = 'pi-1'") == ("2", "failed")
        assert updater.poll_once()["event"] == "none"  # not fetched again
    finally:
        collector.stop()


def test_only_a_device_given_a_version_may_report_on_it(opt_dir, tmp_path):  # noqa: F811
    """A device outside the canary that posts 'failed' for the canary's version is refused (409)
    and rolls nothing back; the canary device's own report does. Reports are typed and bounded."""
    import urllib.error
    import urllib.request

    from edgekit.bundle import make_bundle
    from edgekit.collector.canary import judge
    from edgekit.collector.db import Database, add_device
    from edgekit.collector.releases import publish, set_state, start_rollout

    url = f"sqlite:///{tmp_path / 'collector.db'}"
    db = Database(url)
    inside, outside = _names(1, 1, share=50.0, model="tiny")
    tokens = {name: add_device(db, name) for name in (inside, outside)}
    for version in ("1", "2"):
        make_bundle(opt_dir, tmp_path / f"tiny-{version}.ekb", version=version)
        publish(db, tmp_path / "store", tmp_path / f"tiny-{version}.ekb", "tiny", version)
    start_rollout(db, "tiny", "1", 100)
    set_state(db, "tiny", "promoted", "test")
    start_rollout(db, "tiny", "2", 50)
    collector = Collector(url, extra=("--store", str(tmp_path / "store"), "--decide-every", "0")).start()

    def post(name, body: bytes):
        request = urllib.request.Request(f"{collector.url}/v1/device-state", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {tokens[name]}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def report(name, version, state="failed"):
        return post(name, json.dumps({"model": "tiny", "version": version, "state": state,
                                      "reason": "self-test failed"}).encode())

    try:
        status, reply = report(outside, "2")
        assert status == 409 and "was not assigned tiny 2" in reply["error"], reply
        assert judge(db, "tiny").decision != "rollback"
        assert report(outside, "9", "running")[0] == 400  # not a published version
        assert post(outside, b'{"model": "tiny", "version": ' + b"[" * 10_000)[0] == 400  # nested deeper than the parser goes
        assert post(outside, b"x" * (300 << 10))[0] == 413
        assert post(outside, json.dumps({"model": "tiny", "version": ["2"], "state": "failed"}).encode())[0] == 400
        assert report(inside, "2") == (200, {"ok": True})
        assert judge(db, "tiny").decision == "rollback"
    finally:
        collector.stop()
