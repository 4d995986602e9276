"""edgekit profile on the real models."""

import json

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def test_minilm_flops_match_the_known_figure():
    from edgekit.profile import run_profile

    report = run_profile("edgekit:minilm", target="raspberrypi", runs=3).to_dict()
    static = report["static"]
    # all-MiniLM-L6-v2 at the profiled sentence's own length: 1.43 GMACs at 128, 0.15 at 14
    length = int(report["inputs"]["source"].rsplit(", ", 1)[1].split()[0])
    assert 8 < length < 30
    assert static["macs"] == pytest.approx(6 * (length * (4 * 384 * 384 + 2 * 384 * 1536) + 2 * length * length * 384),
                                           rel=0.05)
    assert 22e6 < static["params"] < 23e6
    # the matrix products are the largest share of the time (half of it at ~14 tokens, more at 128)
    shares = {op: row["share"] for op, row in report["measured"]["by_op_type"].items()}
    assert max(shares, key=shares.get) == "MatMul" and shares["MatMul"] > 0.3, shares
    assert report["inputs"]["source"].startswith("202 English sentences")  # real text, not random ids
    est = report["estimate"]["total_ms"]
    assert est["int8"] < est["fp32"]
    # the Pi's fitted device model: one thread and all four cores, and where the numbers come from
    by_threads = report["estimate"]["by_threads"]
    assert set(by_threads) == {"1", "4"} and by_threads["1"]["fp32"] > by_threads["4"]["fp32"]
    assert report["estimate"]["basis"]["basis"] == "published" and "held-out" in report["estimate"]["basis"]["validated_on"]
    actions = " ".join(h["action"] for h in report["hints"])
    assert "int8" in actions and "transformer optimiser" in actions
    assert report["torch_profile"]["by_op_type"]


def test_profile_cli_on_digits_writes_the_report(cli, tmp_path):
    out = tmp_path / "prof"
    result = cli("profile", "--target", "coral-edgetpu", "--runs", "5", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {"static", "measured", "estimate", "compatibility", "hints", "host_efficiency"} <= set(report)
    what = {c["what"] for c in report["compatibility"]}
    assert "dynamic shapes on a static-shape target" in what  # the digits model has a dynamic batch
    assert (out / "time_by_op_type.png").exists() and (out / "roofline.png").exists()
    assert "## Bottlenecks and actions" in (out / "report.md").read_text()
    assert "validated on" in (out / "report.md").read_text()  # the estimate's basis is in the report
    json_out = cli("profile", "--runs", "3", "--json")
    assert json.loads(json_out.stdout)["target"]["id"] == "host"  # steps go to stderr


def test_profile_tflite_says_what_it_cannot_do(cli, tiny_tflite):
    result = cli("profile", tiny_tflite, "--runs", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["measured"]["total_us_per_run"] > 0 and "no per-op profiler" in report["limitations"][0]


def test_pyspy_cli_errors_clearly(cli):
    result = cli("profile", "--pyspy")
    assert result.exit_code == 1 and "no command to profile" in result.output
