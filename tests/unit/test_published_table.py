"""The published-latency table is complete and its model shapes match the real architectures."""

import pytest

torch = pytest.importorskip("torch")

from tests.published.models import KNOWN_GMACS, PUBLISHED  # noqa: E402


def test_table_has_at_least_five_published_latencies():
    assert len(PUBLISHED) >= 5
    from edgekit.devices import resolve

    for _, target, precision, ms, source in PUBLISHED:
        assert resolve(target) and precision in ("fp32", "fp16", "int8") and ms > 0 and source


@pytest.mark.parametrize("name", sorted(KNOWN_GMACS))
def test_rebuilt_models_have_the_published_size(name, tmp_path):
    from edgekit.convert.onnx_export import export_onnx
    from edgekit.models import load_model
    from edgekit.profile.static import analyse
    import onnx

    model = load_model(f"tests.published.models:{name}")
    path = export_onnx(model, tmp_path / f"{name}.onnx", exporter="torchscript").path
    gmacs = analyse(onnx.load(str(path))).macs / 1e9
    assert gmacs == pytest.approx(KNOWN_GMACS[name], rel=0.05)
