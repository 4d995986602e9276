"""The embedded runtime on tiny bundles: fallbacks, faults, validation, cache, batching, trust."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest

from edgekit.bundle import BundleError, generate_keys, make_bundle, sha256_file
from edgekit.runtime import InputError, PredictionFailed, load, register_runtime
from tests.conftest import make_tiny_onnx


def _reference(x):
    """What the tiny ONNX model computes, in numpy."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(TINY)).graph.initializer}
    return np.maximum(x @ inits["W"] + inits["b"], 0)


TINY = None


@pytest.fixture
def opt_dir(tmp_path):
    """An optimize-like output directory with two ONNX variants of the tiny model."""
    global TINY
    out = tmp_path / "opt"
    (out / "artifacts").mkdir(parents=True)
    TINY = make_tiny_onnx(out / "artifacts" / "a.onnx")
    shutil.copy(TINY, out / "artifacts" / "b.onnx")
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    np.savez(out / "golden.npz", **{"input:x": x, "output:y": _reference(x)})
    variants = [{"id": n, "file": f"artifacts/{n}.onnx", "format": "onnx", "precision": "fp32",
                 "sha256": sha256_file(out / "artifacts" / f"{n}.onnx"), "runtime": "onnxruntime", "provider": "cpu"}
                for n in ("a", "b")]
    manifest = {"schema_version": 1, "model": {"name": "tiny", "version": "1"}, "target": "host",
                "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": ["batch", 3], "dtype": "float32"}],
                "variants": variants, "golden": {"file": "golden.npz", "min_cosine": 0.99, "samples": 4}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _edit(opt_dir, **changes):
    manifest = json.loads((opt_dir / "manifest.json").read_text())
    for key, value in changes.items():
        manifest[key] = value
    (opt_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


X = np.ones((2, 4), np.float32)


def test_bundle_round_trip_and_predict(opt_dir, tmp_path):
    bundle = tmp_path / "tiny.ekb"
    make_bundle(opt_dir, bundle, version="1.2")
    for source in (bundle, opt_dir):
        model = load(source)
        out = model.predict({"x": X})
        assert np.allclose(out["y"], _reference(X), atol=1e-5)
        stats = model.stats()
        assert stats["active_variant"] == "a" and stats["calls"] == 1 and stats["fallbacks"] == 0
    assert load(bundle).version == "1.2"


def test_tampered_file_is_skipped_with_its_reason(opt_dir):
    with open(opt_dir / "artifacts" / "a.onnx", "ab") as fh:
        fh.write(b"\0")
    model = load(opt_dir)
    variants = {v["id"]: v for v in model.stats()["variants"]}
    assert variants["a"]["skipped"] == "sha256 mismatch: the file was altered"
    assert model.stats()["active_variant"] == "b"
    with pytest.raises(BundleError, match="changed since optimize wrote it"):
        make_bundle(opt_dir, opt_dir.parent / "x.ekb")


def test_missing_runtime_and_corrupt_variant(opt_dir):
    manifest = json.loads((opt_dir / "manifest.json").read_text())
    manifest["variants"][0]["runtime"] = "npu-sdk"
    junk = opt_dir / "artifacts" / "b.onnx"
    junk.write_bytes(b"not onnx at all")
    manifest["variants"][1]["sha256"] = sha256_file(junk)
    _edit(opt_dir, variants=manifest["variants"])
    with pytest.raises(PredictionFailed, match="npu-sdk is not installed.*cannot load"):
        load(opt_dir)
    model = load(opt_dir, fallback=lambda feeds: {"y": np.zeros((len(feeds["x"]), 3), np.float32)})
    assert model.predict({"x": X})["y"].shape == (2, 3)
    assert model.stats()["fallbacks_by_reason"] == {"caller fallback": 1}


class Faulty:
    """A test runtime: raises, returns NaN or hangs, as told."""

    mode = "raise"
    calls = 0

    def __init__(self, path, variant, threads, specs):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path))
        self.active_provider = "cpu"
        self.armed = False

    def run(self, feeds):
        if not self.armed:  # the self-test passes; the faults start in service
            return self.session.run(None, feeds)
        Faulty.calls += 1
        if Faulty.mode == "raise":
            raise RuntimeError("simulated kernel crash")
        if Faulty.mode == "nan":
            return [np.full((len(feeds["x"]), 3), np.nan, np.float32)]
        time.sleep(0.5)
        return self.session.run(None, feeds)


@pytest.fixture
def faulty(opt_dir):
    register_runtime("faulty", Faulty)
    manifest = json.loads((opt_dir / "manifest.json").read_text())
    manifest["variants"][0]["runtime"] = "faulty"
    _edit(opt_dir, variants=manifest["variants"])
    return opt_dir


@pytest.mark.parametrize("mode, reason", [("raise", "RuntimeError"), ("nan", "non-finite output")])
def test_failing_variant_falls_back_then_is_demoted(faulty, mode, reason):
    Faulty.mode = mode
    model = load(faulty, demote_after=3)
    model.variants[0].session.armed = True
    for _ in range(5):
        out = model.predict({"x": X})
        assert np.allclose(out["y"], _reference(X), atol=1e-5)  # answered by variant b
    stats = model.stats()
    assert stats["fallbacks_by_reason"] == {reason: 3}  # counted until demoted, then skipped
    assert stats["active_variant"] == "b"
    assert any(e["event"] == "demoted" and e["variant"] == "a" for e in stats["events"])


def test_all_failing_without_fallback_is_a_clear_error(faulty):
    Faulty.mode = "raise"
    manifest = json.loads((faulty / "manifest.json").read_text())
    _edit(faulty, variants=manifest["variants"][:1])
    model = load(faulty)
    model.variants[0].session.armed = True
    with pytest.raises(PredictionFailed, match="every variant of tiny failed"):
        model.predict({"x": X})
    safe = load(faulty, fallback=lambda feeds: {"y": np.zeros((len(feeds["x"]), 3), np.float32)})
    safe.variants[0].session.armed = True
    assert safe.predict({"x": X})["y"].sum() == 0


@pytest.mark.parametrize("inputs, message", [
    ({"x": np.ones((2, 5), np.float32)}, "input 'x' has shape 2x5, expected batchx4"),
    ({"x": np.ones((2, 4), np.complex64)}, "input 'x' is complex64, expected float32"),
    ({"z": X}, "inputs missing x; unknown z"),
    ({"x": np.ones(4, np.float32)}, "has shape 4, expected batchx4"),
])
def test_inputs_are_validated(opt_dir, inputs, message):
    with pytest.raises(InputError, match=message):
        load(opt_dir).predict(inputs)
    assert load(opt_dir).predict({"x": X.astype(np.float64)})["y"].dtype == np.float32  # safe cast


def test_cache_hits(opt_dir):
    model = load(opt_dir, cache_size=2)
    for _ in range(3):
        model.predict({"x": X})
    model.predict({"x": X + 1})
    cache = model.stats()["cache"]
    assert cache == {"hits": 2, "misses": 2, "size": 2}
    assert load(opt_dir).stats()["cache"] is None  # off unless asked for


def test_micro_batching_returns_each_caller_its_rows(opt_dir):
    """Requests that queue while a batch runs go out together in the next one: with the first
    forward pass held, 16 concurrent callers take exactly 2 passes, whatever the machine's speed."""
    model = load(opt_dir)
    batched = model.batched(max_batch_size=16, max_delay_ms=0)
    gate, entered = threading.Event(), threading.Event()
    real = model.predict

    def held(inputs, _validated=False):
        entered.set()
        gate.wait(60)
        return real(inputs, _validated)

    model.predict = held
    rng = np.random.default_rng(1)
    requests = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(16)]
    results = [None] * 16

    def call(i):
        results[i] = batched({"x": requests[i]})["y"]

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    assert entered.wait(60)  # the first request is in its own forward pass, held there
    threads += [threading.Thread(target=call, args=(i,)) for i in range(1, 16)]
    for t in threads[1:]:
        t.start()
    for _ in range(6000):  # the other 15 queue up behind it
        if len(batched._pending) == 15:
            break
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join()
    for req, res in zip(requests, results):
        assert np.allclose(res, _reference(req), atol=1e-5)
    assert batched.batches == 2 and batched.requests == 16
    batched.close()


def test_static_batch_is_refused(opt_dir):
    _edit(opt_dir, inputs=[{"name": "x", "shape": [1, 4], "dtype": "float32"}])
    with pytest.raises(InputError, match="fixed batch dimension"):
        load(opt_dir).batched()


def _tar_with(path, name, kind="file"):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            data = b"{}"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("name, kind, message", [("../evil.json", "file", "points outside the bundle"),
                                                 ("/abs.json", "file", "points outside the bundle"),
                                                 ("manifest.json", "symlink", "is a link or special file")])
def test_hostile_tars_are_rejected(tmp_path, name, kind, message, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"  # where extraction would write: watched, must stay empty
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bundle = tmp_path / "bundles" / "bad.ekb"
    bundle.parent.mkdir()
    _tar_with(bundle, name, kind)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(BundleError, match=message):
        load(bundle)
    assert list(scratch.iterdir()) == []  # no unpack directory, no file, nothing left behind
    assert sorted(p for p in tmp_path.rglob("*")) == before  # and nothing written beside the bundle
    assert not (tmp_path / "evil.json").exists() and not (tmp_path / "bundles" / "evil.json").exists()


def test_newer_schema_and_garbage(opt_dir, tmp_path):
    _edit(opt_dir, schema_version=99)
    with pytest.raises(BundleError, match="schema 99, newer than this runtime reads"):
        load(opt_dir)
    junk = tmp_path / "junk.ekb"
    junk.write_bytes(b"nope")
    with pytest.raises(BundleError, match="not a readable bundle"):
        load(junk)


def test_signatures(opt_dir, tmp_path):
    pytest.importorskip("cryptography")
    key, pub = tmp_path / "k", tmp_path / "k.pub"
    generate_keys(key, pub)
    signed, unsigned = tmp_path / "s.ekb", tmp_path / "u.ekb"
    make_bundle(opt_dir, signed, sign_key=key)
    make_bundle(opt_dir, unsigned)
    assert load(signed, public_key=pub).predict({"x": X})["y"].shape == (2, 3)
    with pytest.raises(BundleError, match="is not signed"):
        load(unsigned, public_key=pub)
    other, other_pub = tmp_path / "o", tmp_path / "o.pub"
    generate_keys(other, other_pub)
    with pytest.raises(BundleError, match="does not verify"):
        load(signed, public_key=other_pub)


def test_runtime_import_path_stays_light(opt_dir, python):
    """The device side never loads torch, the model loader, the device registry, or the onnx
    package (whose checker would parse every model a second time at each load)."""
    code = ("import sys\nfrom edgekit.runtime import load\n"
            f"m = load({str(opt_dir)!r})\nimport numpy as np\nm.predict({{'x': np.ones((1, 4), np.float32)}})\n"
            "heavy = [k for k in ('torch', 'onnx', 'edgekit.models.loader', 'edgekit.devices', 'click', 'rich')"
            " if k in sys.modules]\nassert not heavy, heavy\nprint('ok')")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- defects from the outside probe (issue 10) -----------------------------------------------

def test_cache_hit_is_a_private_copy(opt_dir):
    model = load(opt_dir, cache_size=16)
    first = model.predict({"x": X})
    first["y"][:] = 0  # the caller edits its own result...
    again = model.predict({"x": X})
    assert np.allclose(again["y"], _reference(X), atol=1e-5)  # ...and later answers do not change
    again["y"][:] = -1
    assert np.allclose(model.predict({"x": X})["y"], _reference(X), atol=1e-5)
    assert model.stats()["cache"]["hits"] == 2


def test_nan_inputs_are_refused_without_demoting_anything(opt_dir):
    model = load(opt_dir, demote_after=3)
    bad = np.full((1, 4), np.nan, np.float32)
    for _ in range(5):
        with pytest.raises(InputError, match="holds NaN or infinite values"):
            model.predict({"x": bad})
    assert not any(v["demoted"] for v in model.stats()["variants"])
    assert np.allclose(model.predict({"x": X})["y"], _reference(X), atol=1e-5)


def test_inputs_every_variant_fails_on_demote_nothing(faulty):
    """An input that breaks every variant is the input's fault: no variant pays for it."""
    manifest = json.loads((faulty / "manifest.json").read_text())
    manifest["inputs"][0]["finite"] = False  # this model accepts NaN at the door
    manifest["variants"][1]["runtime"] = "faulty"
    _edit(faulty, inputs=manifest["inputs"], variants=manifest["variants"])
    Faulty.mode = "nan"
    model = load(faulty, demote_after=2, fallback=lambda feeds: {"y": np.zeros((len(feeds["x"]), 3), np.float32)})
    for variant in model.variants:
        assert model._bring_up(variant)  # b would otherwise load lazily, after a's first failure
        variant.session.armed = True
    for _ in range(4):
        assert model.predict({"x": X})["y"].sum() == 0  # the caller's fallback answers
    stats = model.stats()
    assert not any(v["demoted"] for v in stats["variants"])
    assert any(e["event"] == "input failed on every variant" for e in stats["events"])


def test_demoted_variant_is_retried_after_its_back_off(faulty):
    Faulty.mode = "raise"
    model = load(faulty, demote_after=2, retry_demoted_s=0.2)
    model.variants[0].session.armed = True
    for _ in range(3):
        model.predict({"x": X})
    assert model.stats()["active_variant"] == "b"
    model.variants[0].session.armed = False  # the fault clears
    time.sleep(0.25)
    model.predict({"x": X})
    stats = model.stats()
    assert stats["active_variant"] == "a"
    assert [e["event"] for e in stats["events"] if e["variant"] == "a"][-2:] == ["demoted", "restored"]


def test_timeout_fires_and_is_recorded(faulty):
    Faulty.mode = "hang"
    model = load(faulty, timeout_ms=50)
    model.variants[0].session.armed = True
    out = model.predict({"x": X})
    assert np.allclose(out["y"], _reference(X), atol=1e-5)  # answered by b
    events = model.stats()["events"]
    assert any(e["variant"] == "a" and e["reason"].startswith("TimeoutError: no answer within 50") for e in events)


def test_cache_hits_are_logged_with_a_request_id(opt_dir, tmp_path):
    from edgekit.sync.store import LogStore

    store = LogStore(tmp_path / "log.db")
    model = load(opt_dir, cache_size=4, log_store=store)
    first, hit = model.predict({"x": X}), model.predict({"x": X})
    assert first.request_id and hit.request_id and hit.request_id != first.request_id
    model.feedback(hit.request_id, label=[1, 2])
    records, feedback = store.next_batch(10)
    assert [r["cached"] for r in records] == [False, True]
    assert [r["variant"] for r in records] == ["a", "a"]
    assert feedback[0]["request_id"] == hit.request_id


def _packed(opt_dir, tmp_path, name="b.ekb", key=None):
    bundle = tmp_path / name
    make_bundle(opt_dir, bundle, sign_key=key)
    return bundle


def _retar(src, dst, change):
    """Copy a bundle, letting ``change(name, data)`` return new bytes (or None to drop it)."""
    with tarfile.open(src, "r:gz") as tar, tarfile.open(dst, "w:gz") as out:
        for m in tar.getmembers():
            data = change(m.name, tar.extractfile(m).read())
            if data is None:
                continue
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dst


@pytest.fixture
def keys(tmp_path):
    pytest.importorskip("cryptography")
    key, pub = tmp_path / "k", tmp_path / "k.pub"
    generate_keys(key, pub)
    return key, pub


def test_golden_data_is_pinned_by_the_signature(opt_dir, tmp_path, keys):
    signed = _packed(opt_dir, tmp_path, key=keys[0])
    manifest = json.loads(tarfile.open(signed).extractfile("manifest.json").read())
    assert manifest["golden"]["sha256"] == sha256_file(opt_dir / "golden.npz")
    other = io.BytesIO()
    np.savez(other, **{"input:x": np.zeros((4, 4), np.float32), "output:y": np.ones((4, 3), np.float32)})
    swapped = _retar(signed, tmp_path / "swapped.ekb",
                     lambda n, d: other.getvalue() if n == "golden.npz" else d)
    with pytest.raises(BundleError, match="golden.npz does not match its sha256"):
        load(swapped, public_key=keys[1])
    with pytest.raises(BundleError, match="golden.npz does not match its sha256"):
        load(swapped)  # unsigned readers check the pinned hash too


def test_signed_bundle_refuses_extra_files_and_tampered_variants(opt_dir, tmp_path, keys):
    signed = _packed(opt_dir, tmp_path, key=keys[0])
    assert load(signed, public_key=keys[1]).predict({"x": X})["y"].shape == (2, 3)

    extra = tmp_path / "extra.ekb"
    with tarfile.open(signed, "r:gz") as tar, tarfile.open(extra, "w:gz") as out:
        for m in tar.getmembers():
            out.addfile(m, tar.extractfile(m))
        info = tarfile.TarInfo("artifacts/payload.sh")
        info.size = 3
        out.addfile(info, io.BytesIO(b"rm\n"))
    with pytest.raises(BundleError, match="holds files its signed manifest does not list: artifacts/payload.sh"):
        load(extra, public_key=keys[1])
    assert load(extra).predict({"x": X})["y"].shape == (2, 3)  # unsigned readers skip what is not listed
    tampered = _retar(signed, tmp_path / "t.ekb", lambda n, d: d + b"\0" if n == "artifacts/b.onnx" else d)
    with pytest.raises(BundleError, match="artifacts/b.onnx does not match its sha256"):
        load(tampered, public_key=keys[1])  # refused whole, not skipped


def test_run_exits_nonzero_on_a_tampered_signed_bundle(opt_dir, tmp_path, keys, cli):
    signed = _packed(opt_dir, tmp_path, key=keys[0])
    tampered = _retar(signed, tmp_path / "t.ekb", lambda n, d: d + b"\0" if n == "artifacts/a.onnx" else d)
    result = cli("run", tampered, "--public-key", keys[1])
    assert result.exit_code == 1 and "does not match its sha256" in result.output


@pytest.mark.parametrize("field, value", [("file", "/tmp/outside.onnx"), ("file", "../outside.onnx"),
                                          ("golden", "/etc/passwd")])
def test_manifest_paths_stay_inside_the_bundle(opt_dir, field, value):
    manifest = json.loads((opt_dir / "manifest.json").read_text())
    if field == "golden":
        manifest["golden"]["file"] = value
    else:
        manifest["variants"][0]["file"] = value
    (opt_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="must be a relative path inside the bundle"):
        load(opt_dir)


def test_symlinked_variant_in_a_directory_is_refused(opt_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(opt_dir / "artifacts" / "a.onnx", outside)
    (opt_dir / "artifacts" / "a.onnx").unlink()
    (opt_dir / "artifacts" / "a.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="points outside the bundle"):
        load(opt_dir)


def test_extraction_is_capped_before_writing(opt_dir, tmp_path, monkeypatch):
    from edgekit.bundle import Limits

    bundle = _packed(opt_dir, tmp_path)
    big = _retar(bundle, tmp_path / "big.ekb", lambda n, d: d + bytes(3 << 20) if n == "artifacts/b.onnx" else d)
    assert big.stat().st_size < 1 << 20  # zeros compress: a small download, a large unpack
    written = []
    monkeypatch.setattr(shutil, "copyfileobj", lambda src, dst, *a: written.append(dst.name))
    with pytest.raises(BundleError, match="would unpack to more than the limit of 2 MiB \\(at artifacts/b.onnx"):
        load(big, limits=Limits(max_bytes=2 << 20))
    assert not any(name.endswith("b.onnx") for name in written)  # refused from its declared size, before writing
    assert not any(os.path.exists(name) for name in written)  # and what came before it is gone
    many = _retar(bundle, tmp_path / "many.ekb", lambda n, d: d)
    with pytest.raises(BundleError, match="more than 3 entries, the limit"):
        load(many, limits=Limits(max_files=3))


def test_an_unlisted_payload_is_never_inflated(opt_dir, tmp_path):
    """A 2 MB unsigned bundle with an unlisted 1 GiB member took 45 s of CPU to open: the files
    the manifest lists are read, then the stream is left; one unlisted in between is refused from
    its declared size."""
    bundle = _packed(opt_dir, tmp_path)
    zeros = io.BytesIO(bytes(64 << 20))

    def append_payload(dst):
        with tarfile.open(bundle, "r:gz") as tar, tarfile.open(dst, "w:gz", compresslevel=1) as out:
            members = tar.getmembers()
            for m in members[:1]:
                out.addfile(m, tar.extractfile(m))
            info = tarfile.TarInfo("payload.bin")
            info.size = 64 << 20
            zeros.seek(0)
            out.addfile(info, zeros)
            for m in members[1:]:
                out.addfile(m, tar.extractfile(m))
        return dst

    early = append_payload(tmp_path / "early.ekb")
    with pytest.raises(BundleError, match="holds payload.bin, 64 MiB that its manifest does not list"):
        load(early)  # from its header: the payload behind it is never inflated


@pytest.mark.parametrize("damage", ["truncated", "manifest-list", "manifest-dir", "schema-zero", "shape-text",
                                    "cosine-high", "no-variants"])
def test_malformed_bundles_raise_bundle_errors_only(opt_dir, tmp_path, damage):
    bundle = _packed(opt_dir, tmp_path)
    if damage == "truncated":
        data = bundle.read_bytes()
        bundle.write_bytes(data[: len(data) // 2])
        match = "not a readable bundle"
    elif damage == "manifest-dir":
        with tarfile.open(bundle, "w:gz") as tar:
            info = tarfile.TarInfo("manifest.json")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        match = "has no manifest.json"
    else:
        manifest = json.loads((opt_dir / "manifest.json").read_text())
        manifest["golden"].pop("sha256", None)
        changes = {"manifest-list": [manifest], "schema-zero": dict(manifest, schema_version=0),
                   "shape-text": dict(manifest, inputs=[{"name": "x", "shape": "batchx4", "dtype": "float32"}]),
                   "cosine-high": dict(manifest, golden=dict(manifest["golden"], min_cosine=3.0)),
                   "no-variants": dict(manifest, variants=[])}
        _retar(_packed(opt_dir, tmp_path, "ok.ekb"), bundle,
               lambda n, d: json.dumps(changes[damage]).encode() if n == "manifest.json" else d)
        match = {"manifest-list": "must hold a JSON object", "schema-zero": "schema_version must be a positive",
                 "shape-text": "inputs\\[0\\].shape: expected a list", "cosine-high": "min_cosine 3.0 must be within",
                 "no-variants": "lists no variants"}[damage]
    with pytest.raises(BundleError, match=match):
        load(bundle)


def test_new_key_never_overwrites(tmp_path, cli):
    pytest.importorskip("cryptography")
    key = tmp_path / "release.key"
    assert cli("package", "--new-key", key).exit_code == 0
    before = key.read_bytes()
    result = cli("package", "--new-key", key)
    assert result.exit_code == 1 and "will not overwrite a key" in result.output
    assert key.read_bytes() == before


def test_a_key_made_with_a_bundle_signs_it(opt_dir, tmp_path, cli):
    """package DIR --new-key wrote the keys and an unsigned bundle beside them, without a word."""
    pytest.importorskip("cryptography")
    key = tmp_path / "release.key"
    result = cli("package", opt_dir, "--new-key", key, "--out", tmp_path / "b.ekb", "--json")
    assert result.exit_code == 0 and json.loads(result.output[result.output.index("{"):])["signed"] is True
    assert load(tmp_path / "b.ekb", public_key=f"{key}.pub").predict({"x": X})["y"].shape == (2, 3)
    both = cli("package", opt_dir, "--new-key", tmp_path / "other.key", "--sign-key", key)
    assert both.exit_code == 2 and "not both" in both.output and not (tmp_path / "other.key").exists()


def test_garbage_public_key_is_one_clear_error(opt_dir, tmp_path, keys, cli):
    signed = _packed(opt_dir, tmp_path, key=keys[0])
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key at all")
    result = cli("run", signed, "--public-key", junk)
    assert result.exit_code == 1 and "is not a PEM public key" in result.output and "unexpected" not in result.output


def test_run_refuses_nan_input_files(opt_dir, tmp_path, cli):
    np.save(tmp_path / "nan.npy", np.full((1, 4), np.nan, np.float32))
    result = cli("run", opt_dir, "--input", tmp_path / "nan.npy")
    assert result.exit_code == 1 and "holds NaN or infinite values" in result.output
