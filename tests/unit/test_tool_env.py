"""A converter's own environment is installed the first time a run needs it, with a line that
says so; where it cannot be, the converter is skipped with the reason."""

from edgekit.convert import tool_env


def test_a_missing_tool_is_installed_on_first_need_and_said(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEKIT_NO_TOOL_INSTALL", raising=False)
    monkeypatch.setattr(tool_env, "python_for", lambda tool: None)
    monkeypatch.setattr(tool_env, "install", lambda tool: tmp_path / "bin" / "python")
    said = []
    assert tool_env.ensure("onnx2tf", said.append) == tmp_path / "bin" / "python"
    assert said[0].startswith("installing onnx2tf's own environment") and said[1].startswith("onnx2tf installed in")


def test_a_tool_that_cannot_be_installed_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.delenv("EDGEKIT_NO_TOOL_INSTALL", raising=False)
    monkeypatch.setattr(tool_env, "python_for", lambda tool: None)

    def offline(tool):
        raise tool_env.ToolInstallError("installing the onnx2tf environment failed: no route to PyPI")

    monkeypatch.setattr(tool_env, "install", offline)
    monkeypatch.setattr(tool_env, "_failures", {})
    said = []
    assert tool_env.ensure("onnx2tf", said.append) is None
    assert "no route to PyPI" in said[-1] and "no route to PyPI" in tool_env.missing_reason("onnx2tf")
    monkeypatch.setenv("EDGEKIT_NO_TOOL_INSTALL", "1")
    monkeypatch.setattr(tool_env, "install", lambda tool: (_ for _ in ()).throw(AssertionError("must not install")))
    assert tool_env.ensure("onnx2tf", said.append) is None
