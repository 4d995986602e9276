"""edgekit bench end to end on the digits model: local, through a loopback agent, and across two
network namespaces (where the test may create them)."""

import json
import os
import subprocess
import sys

import pytest


pytestmark = pytest.mark.integration
pytest.importorskip("torch")
FAST = ["--min-runs", "30", "--min-seconds", "0.5", "--warmup-runs", "3"]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from edgekit import optimize

    out = tmp_path_factory.mktemp("bench") / "digits"
    optimize("edgekit:digits-cnn", target="host", out=out, formats={"onnx"}, timing_s=0.5)
    return out


def test_local_bench_of_an_optimize_directory(cli, digits_dir, tmp_path):
    out = tmp_path / "results"
    result = cli("bench", digits_dir, *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    manifest = json.loads((digits_dir / "manifest.json").read_text())
    assert [r["label"] for r in data["results"]] == [v["id"] for v in manifest["variants"]]
    assert data["interleaved"] and not data["spinning"]
    assert (out / "latency_distribution.png").exists() and (out / "latency_p50_p90.png").exists()
    assert "| artifact |" in (out / "results.md").read_text()


def _serve(cmd_prefix, host, port, token, storage):
    proc = subprocess.Popen(cmd_prefix + [sys.executable, "-m", "edgekit", "agent", "serve", "--host", host,
                                          "--port", str(port), "--token-file", str(token), "--storage", str(storage)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(100):
        line = proc.stdout.readline()
        if "listening" in line or proc.poll() is not None:
            break
    return proc


def test_loopback_agent_on_digits(digits_dir, tmp_path, python):
    token = tmp_path / "agent.token"
    subprocess.run([python, "-m", "edgekit", "agent", "token", str(token)], check=True)
    port = 18765 + os.getpid() % 1000
    proc = _serve([], "127.0.0.1", port, token, tmp_path / "store")
    try:
        out = subprocess.run([python, "-m", "edgekit", "bench", str(digits_dir / "best.onnx"), *FAST, "--json",
                              "--device", f"http://127.0.0.1:{port}", "--token-file", str(token)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["device"] == f"http://127.0.0.1:{port}" and result["results"][0]["steady"]["n"] >= 30
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def test_agent_across_two_network_namespaces(digits_dir, tmp_path, python):
    tag = f"ek{os.getpid() % 100000}"
    device, host = f"{tag}d", f"{tag}h"
    if _ip("netns", "add", device).returncode != 0:
        pytest.skip("creating network namespaces is not permitted here")
    try:
        assert _ip("netns", "add", host).returncode == 0
        steps = [("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b"),
                 ("link", "set", f"{tag}a", "netns", device), ("link", "set", f"{tag}b", "netns", host),
                 ("-n", device, "addr", "add", "10.231.7.1/24", "dev", f"{tag}a"),
                 ("-n", host, "addr", "add", "10.231.7.2/24", "dev", f"{tag}b"),
                 ("-n", device, "link", "set", f"{tag}a", "up"), ("-n", host, "link", "set", f"{tag}b", "up"),
                 ("-n", device, "link", "set", "lo", "up"), ("-n", host, "link", "set", "lo", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"network namespace set-up not permitted: {done.stderr.strip()}")
        token = tmp_path / "agent.token"
        subprocess.run([python, "-m", "edgekit", "agent", "token", str(token)], check=True)
        proc = _serve(["ip", "netns", "exec", device], "10.231.7.1", 8765, token, tmp_path / "store")
        try:
            out = subprocess.run(["ip", "netns", "exec", host, python, "-m", "edgekit", "bench",
                                  str(digits_dir / "best.onnx"), *FAST, "--json", "--device", "http://10.231.7.1:8765",
                                  "--token-file", str(token)], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["results"][0]["steady"]["n"] >= 30
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        _ip("netns", "del", device)
        _ip("netns", "del", host)
