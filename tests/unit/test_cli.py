import json
import subprocess

import click
import pytest

from edgekit.cli import main


def _walk(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _walk(command, prefix + (name,))


def test_every_command_has_help_with_an_example(cli):
    commands = list(_walk(main))
    assert len(commands) >= 3
    for path, _ in commands:
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Example:" in result.output and "edgekit " in result.output, f"{' '.join(path)} lacks an example"


def test_version_and_top_help(cli):
    assert "edgekit, version" in cli("--version").output
    assert "targets" in cli("--help").output


def test_targets_list_and_show(cli):
    result = cli("targets", "list")
    assert result.exit_code == 0 and "raspberrypi5" in result.output and "host" in result.output
    data = json.loads(cli("targets", "list", "--json").output)
    assert {p["id"] for p in data} >= {"raspberrypi4", "coral-edgetpu", "host"}
    shown = json.loads(cli("targets", "show", "raspberrypi", "--json").output)
    assert shown["id"] == "raspberrypi5" and shown["cpu"]["cores"] == 4
    assert "Cortex-A76" in cli("targets", "show", "pi5").output
    assert "validated on" in cli("targets", "show", "pi4").output  # the latency model's basis


def test_unknown_target_is_one_line_exit_1(cli):
    result = cli("targets", "show", "raspbery")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown target 'raspbery'")
    assert "raspberrypi" in lines[0] and "Traceback" not in result.output


def test_usage_error_exit_2(cli):
    assert cli("targets", "show").exit_code == 2
    assert cli("inspect", "--no-such-flag").exit_code == 2


def test_inspect_onnx_table_and_json(cli, tiny_onnx):
    result = cli("inspect", tiny_onnx)
    assert result.exit_code == 0 and "MatMul" in result.output and "batchx4" in result.output
    data = json.loads(cli("inspect", tiny_onnx, "--json").output)
    assert data["format"] == "onnx" and data["parameters"] == 15
    assert data["inputs"][0]["dynamic"] == ["batch"]


def test_inspect_tflite(cli, tiny_tflite):
    data = json.loads(cli("inspect", tiny_tflite, "--json").output)
    assert data["format"] == "tflite" and data["outputs"][0]["shape"] == [1, 10]


def test_bad_model_errors_are_one_line(cli, tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    for target in (junk, tmp_path / "missing.onnx"):
        result = cli("inspect", target)
        assert result.exit_code == 1
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_debug_shows_traceback(python, tmp_path):
    missing = str(tmp_path / "missing.onnx")
    quiet = subprocess.run([python, "-m", "edgekit", "inspect", missing], capture_output=True, text=True)
    loud = subprocess.run([python, "-m", "edgekit", "--debug", "inspect", missing], capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr


def test_unexpected_errors_stay_one_line(cli, monkeypatch):
    import edgekit.cli.targets_cmd as targets_cmd

    def boom():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(targets_cmd, "all_profiles", boom)
    result = cli("targets", "list")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: unexpected ZeroDivisionError: division by zero (run with --debug for the traceback)"
    )


@pytest.mark.parametrize("argv", [["--help"], ["targets", "list"], ["inspect", "--help"]])
def test_cli_never_imports_torch(python, argv):
    code = (
        "import sys\n"
        "from edgekit.cli import main\n"
        f"try:\n    main({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_import_edgekit_is_light(python):
    code = "import sys, edgekit; assert 'torch' not in sys.modules; print(edgekit.__version__)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("option", [("--port", "99999"), ("--port", "0"), ("--max-body-mb", "-1"),
                                    ("--max-inflight", "0"), ("--workers", "0"), ("--timeout-ms", "0"),
                                    ("--max-queue", "0"), ("--timeout-ms", "nan")])
def test_serve_refuses_options_that_would_serve_nothing(tiny_onnx, option):
    """--port 99999 printed 'serving' and listened on nothing; --max-inflight 0 refused everything."""
    from click.testing import CliRunner

    from edgekit.cli import main

    result = CliRunner().invoke(main, ["serve", str(tiny_onnx), *option])
    assert result.exit_code == 2 and option[0] in result.output and "serving" not in result.output


@pytest.mark.parametrize("args, option", [
    (("test", "expect", "run", "suite.toml", "--data", "d.npz", "--chunk", "0"), "--chunk"),
    (("test", "memorize", "f.py:build", "--data", "d.npz", "--steps", "0"), "--steps"),
    (("test", "memorize", "f.py:build", "--data", "d.npz", "--lr", "nan"), "--lr"),
    (("test", "hardcases", "m.onnx", "--data", "d.npz", "--top", "0"), "--top"),
])
def test_test_commands_refuse_options_that_cannot_work(args, option):
    from click.testing import CliRunner

    from edgekit.cli import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2 and option in result.output and "unexpected" not in result.output, result.output


def test_a_wide_table_keeps_every_word_of_its_last_column():
    """rich shrank the name column below its min_width, the table came out wider than the console,
    and the reason column lost words ('--time-budget of 40' cut to '--time-budget')."""
    from rich.console import Console

    from edgekit.cli.common import table

    reason = "skipped: the --time-budget of 40 s ran out"
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(table("x", ["candidate", "settings", "status", "MB", "host p50 ms", "target ms", "cosine mean / min",
                              "top-1", "reason"],
                        [["tflite-int8-weight-only", "U8S8, per-channel, reduce_range, QDQ, minmax", "skipped", "-", "-",
                          "-", "1.0000 / 1.0000", "-", reason]]))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    assert all(word in text.split() for word in reason.split()), text


def test_long_commands_print_one_line_per_step_when_not_on_a_terminal():
    """`edgekit optimize ... > o.txt 2>&1` printed nothing for 300 s: a pipe gets a line per step
    with the time since the start, each step once."""
    import io
    import re

    from edgekit.cli.common import steps

    stream = io.StringIO()
    say, stop = steps(stream)
    for msg in ("building onnx-fp32", "writing out", "writing out"):
        say(msg)
    stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"\[ *\d+\.\d s\] .+", line) for line in lines)
    assert lines[0].endswith("building onnx-fp32")


@pytest.mark.parametrize("args, option", [
    (["--input", "x:1xbad!"], "--input"),
    (["--batch-axis", "state"], "--batch-axis"),
    (["--state", "state"], "--state"),
    (["--tolerance", "cosine=lots"], "--tolerance"),
])
def test_a_bad_spec_is_a_usage_error_before_anything_loads(cli, args, option):
    """--input, --batch-axis, --state and --tolerance are parsed as click reads them: a bad one
    names its option and exits 2 before any model loads (the loader said it later, exit 1)."""
    result = cli("optimize", "edgekit:digits-cnn", *args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
