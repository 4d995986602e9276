"""Exports kept across runs by content hash: reused only when nothing they depend on changed."""

import textwrap

import pytest

torch = pytest.importorskip("torch")

NET = textwrap.dedent('''
    import torch


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))


    def build():
        return Net(), (torch.zeros(1, 8),)
''')


@pytest.fixture
def cache_on(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_EXPORT_CACHE", "on")
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))


def _model(path, text):
    from edgekit import load_model

    path.write_text(text)
    return load_model(f"{path}:build")


def _export(model, dst, made):
    from edgekit.convert.export_cache import reuse_or_make
    from edgekit.convert.onnx_export import export_onnx

    def make():
        made.append(dst)
        return export_onnx(model, dst).to_dict()

    return reuse_or_make(model, "onnx", dst, make)


def test_an_export_is_reused_only_while_weights_code_and_inputs_are_the_same(cache_on, tmp_path):
    made = []
    model = _model(tmp_path / "net.py", NET)
    first = _export(model, tmp_path / "a.onnx", made)
    again = _export(model, tmp_path / "b.onnx", made)
    assert len(made) == 1 and "cached" not in first and again["cached"]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert again["exporter"] == first["exporter"]

    with torch.no_grad():
        model.module.fc.weight[0, 0] += 1.0  # retrained
    _export(model, tmp_path / "c.onnx", made)
    assert len(made) == 2

    edited = _model(tmp_path / "net2.py", NET.replace("torch.relu(self.fc(x))", "torch.sigmoid(self.fc(x))"))
    _export(edited, tmp_path / "d.onnx", made)
    assert len(made) == 3  # same weights, other forward: exported anew

    from edgekit.convert.export_cache import key

    assert key(model, "onnx") != key(model, "tflite")


def test_a_model_whose_code_cannot_be_read_is_never_cached(cache_on, tmp_path):
    from edgekit.convert.export_cache import key

    model = _model(tmp_path / "net.py", NET)
    namespace = {}
    exec(NET, namespace)  # a class defined in a notebook cell: no source file
    model.module = namespace["Net"]()
    assert key(model, "onnx") is None


def test_the_cache_is_off_when_asked(monkeypatch, tmp_path):
    from edgekit.convert.export_cache import key

    monkeypatch.setenv("EDGEKIT_EXPORT_CACHE", "off")
    assert key(_model(tmp_path / "net.py", NET), "onnx") is None


def test_a_cache_that_cannot_be_written_is_no_cache(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("EDGEKIT_EXPORT_CACHE", "on")
    monkeypatch.setenv("EDGEKIT_CACHE", str(blocked / "cache"))  # under a file: cannot be made
    made = []
    info = _export(_model(tmp_path / "net.py", NET), tmp_path / "a.onnx", made)
    assert made and "cached" not in info and (tmp_path / "a.onnx").exists()
