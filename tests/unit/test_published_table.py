"""The published-latency table is well formed, its model rebuilds match the real architectures,
and every device with rows ships a fitted model that says where it came from."""

import pytest

torch = pytest.importorskip("torch")

from tests.published.latencies import FIT_MODELS, ROWS  # noqa: E402
from tests.published.models import KNOWN_GMACS  # noqa: E402


def test_rows_are_well_formed_and_split_into_fit_and_held_out():
    from edgekit.devices import resolve
    from tests.published import models

    assert len(ROWS) >= 60
    for row in ROWS:
        assert resolve(row.target) and row.precision in ("fp32", "fp16", "int8") and row.ms > 0 and row.source
        assert callable(getattr(models, row.model)) and row.threads >= 1
    for target in {r.target for r in ROWS}:
        roles = {r.role for r in ROWS if r.target == target}
        assert roles == {"fit", "validate"}, f"{target} needs rows to fit and rows to validate"
    assert FIT_MODELS < {r.model for r in ROWS}


def test_every_device_with_rows_ships_a_fitted_model_with_its_provenance():
    from edgekit.devices import resolve

    for target in {r.target for r in ROWS}:
        fit = resolve(target).estimator.fit
        assert fit is not None and fit.basis == "published", target
        assert "held-out" in fit.validated_on and fit.fitted_at and fit.expected_error >= 1.0


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
