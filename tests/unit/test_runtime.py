"""The embedded runtime on tiny bundles: fallbacks, faults, validation, cache, batching, trust."""

import io
import json
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


def test_timeout_moves_on(faulty):
    Faulty.mode = "hang"
    model = load(faulty, timeout_ms=50)
    model.variants[0].session.armed = True
    start = time.perf_counter()
    out = model.predict({"x": X})
    assert time.perf_counter() - start < 0.4 and np.allclose(out["y"], _reference(X), atol=1e-5)
    assert "TimeoutError" in model.stats()["fallbacks_by_reason"]


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
    model = load(opt_dir)
    batched = model.batched(max_batch_size=8, max_delay_ms=20)
    rng = np.random.default_rng(1)
    requests = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(16)]
    results = [None] * 16

    def call(i):
        results[i] = batched({"x": requests[i]})["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for req, res in zip(requests, results):
        assert np.allclose(res, _reference(req), atol=1e-5)
    assert batched.batches < 16  # requests really were grouped
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
def test_hostile_tars_are_rejected(tmp_path, name, kind, message):
    bundle = tmp_path / "bad.ekb"
    _tar_with(bundle, name, kind)
    with pytest.raises(BundleError, match=message):
        load(bundle)
    assert not (tmp_path.parent / "evil.json").exists()


def test_newer_schema_and_garbage(opt_dir, tmp_path):
    _edit(opt_dir, schema_version=99)
    with pytest.raises(BundleError, match="schema 99, newer than this runtime reads"):
        load(opt_dir)
    junk = tmp_path / "junk.ekb"
    junk.write_bytes(b"nope")
    with pytest.raises(BundleError, match="not a tar.gz"):
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


def test_runtime_never_imports_torch(opt_dir, python):
    code = ("import sys\nfrom edgekit.runtime import load\n"
            f"m = load({str(opt_dir)!r})\nimport numpy as np\nm.predict({{'x': np.ones((1, 4), np.float32)}})\n"
            "assert 'torch' not in sys.modules\nprint('ok')")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
