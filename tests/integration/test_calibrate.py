"""edgekit calibrate against a real agent on loopback: a profile that the other commands take."""

import json
import threading

import pytest

from edgekit.agent.server import AgentConfig, make_server, new_token, read_token

pytestmark = pytest.mark.integration


@pytest.fixture
def agent(tmp_path):
    token_file = tmp_path / "agent.token"
    new_token(token_file)
    server = make_server("127.0.0.1", 0, AgentConfig(tmp_path / "store", read_token(token_file)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", token_file
    server.shutdown()
    server.server_close()


def test_calibrate_writes_a_profile_that_profile_and_optimize_take(cli, agent, tmp_path):
    url, token = agent
    out = tmp_path / "myboard.toml"
    result = cli("calibrate", "--device", url, "--token-file", token, "--out", out, "--quick", "--seconds", "0.1",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    labels = {m["label"] for m in summary["microbenchmarks"]}
    assert any(label.startswith("conv3x3") and " int8 " in label for label in labels)  # int8 kernels measured too
    assert summary["threads"][0] == 1 and summary["fit"]["basis"] == "calibrated"

    from edgekit.devices import resolve

    profile = resolve(str(out))
    assert profile.id == "myboard" and profile.estimator.fit.basis == "calibrated"
    assert url in profile.estimator.fit.fitted_on
    # every command takes it as --target; the estimate says it is calibrated
    prof = cli("profile", "--target", str(out), "--runs", "3", "--json")
    assert prof.exit_code == 0, prof.output
    report = json.loads(prof.output[prof.output.index("{"):])
    assert report["estimate"]["basis"]["basis"] == "calibrated"
    assert set(report["estimate"]["by_threads"]) == {str(n) for n in summary["threads"]}

    again = cli("calibrate", "--device", url, "--token-file", token, "--out", out, "--quick")
    assert again.exit_code == 1 and "exists" in again.output  # never overwritten without --force
    assert resolve(str(out)).estimator.fit == profile.estimator.fit


def test_calibrate_refuses_what_it_must_not_write(cli, agent, tmp_path):
    url, token = agent
    mine = tmp_path / "notes.toml"
    mine.write_text("# my own file\n")
    result = cli("calibrate", "--device", url, "--token-file", token, "--out", mine, "--force")
    assert result.exit_code == 1 and "exists" in result.output
    assert mine.read_text() == "# my own file\n"  # --force replaces only a profile calibrate wrote
    bad = cli("calibrate", "--device", url, "--token-file", token, "--out", tmp_path / "x.json")
    assert bad.exit_code == 1 and ".toml" in bad.output
    down = cli("calibrate", "--device", "http://127.0.0.1:9", "--token-file", token, "--out", tmp_path / "y.toml")
    assert down.exit_code == 1 and "cannot reach the agent" in down.output
    assert not (tmp_path / "y.toml").exists()
