"""optimize --verify-arm64: the passing candidates re-run on ARM64 kernels under QEMU user mode."""

import os
import platform

import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def _require_emulation():
    """Root on x86_64 Linux (debootstrap, chroot, binfmt); else a skip with the reason (a failure
    in CI, where .ci/run runs as root)."""
    if platform.machine() != "x86_64":
        pytest.skip(f"ARM64 emulation runs on x86_64 hosts, this is {platform.machine()}")
    if os.geteuid() != 0:
        pytest.skip("ARM64 emulation needs root (debootstrap, chroot, binfmt_misc)")


def test_verify_arm64_reruns_every_passing_variant_on_the_a72(tmp_path):
    _require_emulation()
    from edgekit import optimize

    result = optimize("edgekit:digits-cnn", target="raspberrypi4", out=tmp_path / "o", timing_s=0.5,
                      verify_arm64=16)
    arm = result.report.to_dict()["arm64"]
    assert arm["cpu"] == "cortex-a72" and arm["samples"] == 16  # the Pi 4's core: no sdot, no fp16
    passed = [c["id"] for c in result.report.to_dict()["candidates"] if c["status"] == "passed"]
    assert passed and set(passed) <= set(arm["variants"])
    int8 = [v for k, v in arm["variants"].items() if "int8-static" in k]
    assert int8 and all(v["passed"] and v["top1_agreement_vs_x86"] >= 0.9 for v in int8)
    assert all("error" not in v and v["max_abs_diff_vs_x86"] >= 0 for v in arm["variants"].values())
    assert any("ARM64 check" in note for note in result.report.to_dict()["notes"])


def test_a_variant_whose_arm_numerics_fail_is_rejected_with_the_numbers(monkeypatch, tmp_path):
    """verify() judges what the ARM side returned: outputs that break the tolerance, or an error,
    reject that variant and keep the others (the ARM run itself is the test above)."""
    from edgekit.devices import resolve
    from edgekit.emulation import verify as emulation
    from edgekit.optimizer.arm64 import verify
    from edgekit.optimizer.accuracy import Tolerance
    from edgekit.optimizer.pipeline import Outcome
    from edgekit.optimizer.plan import Candidate
    from tests.conftest import make_tiny_onnx

    from edgekit.backends import SessionOptions
    from edgekit.formats import open_session
    from edgekit.data import Dataset
    from edgekit.models import load_model

    class Opt:
        target = resolve("raspberrypi5")
        tolerance = Tolerance.parse("0.99")

    path = make_tiny_onnx(tmp_path / "tiny.onnx")
    opt = Opt()
    opt.model = load_model(str(path))
    opt.options = SessionOptions(threads=1)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    opt.eval = Dataset({"x": x}, source="test")
    opt.reference = open_session(path, opt.options, opt.model).run_batched({"x": x})
    outcomes = [Outcome(Candidate(id=name, format="onnx", precision="fp32", runtime="onnxruntime-cpu", reason=""),
                        status="passed", path=path) for name in ("good", "noisy", "broken")]

    def fake_arm(variants, arrays, names, cpu, progress):
        good = open_session(path, opt.options, opt.model).run_batched(arrays)
        return {"good": good, "noisy": [g + np.random.default_rng(1).standard_normal(g.shape) for g in good],
                "broken": "RuntimeError: illegal instruction"}

    monkeypatch.setattr(emulation, "run_on_arm", fake_arm)
    summary = verify(opt, outcomes, 8, lambda m: None)
    status = {o.candidate.id: (o.status, o.reason) for o in outcomes}
    assert summary["cpu"] == "cortex-a76" and status["good"] == ("passed", "")
    assert status["noisy"][0] == "rejected" and "ARM64 numerics (cortex-a76, 8 samples)" in status["noisy"][1]
    assert status["broken"][0] == "rejected" and "illegal instruction" in status["broken"][1]
    assert summary["variants"]["noisy"]["max_abs_diff_vs_x86"] > 0.1


def test_verify_arm64_refuses_a_target_that_is_not_arm(cli, tmp_path):
    result = cli("optimize", "--target", "x86-avx2", "--verify-arm64", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "--verify-arm64 runs ARM64 kernels" in result.output
    assert not (tmp_path / "o").exists()
