"""The plan per profile: formats, precisions and settings follow the device data.

The ONNX-side planning runs on graphs built with onnx.helper (no torch); only the TFLite
candidates, which edgekit converts from PyTorch sources, need torch.
"""

import pytest

from edgekit.devices import resolve
from edgekit.errors import EdgekitError
from edgekit.models import load_model
from edgekit.optimizer.plan import architecture, make_plan
from tests.conftest import make_cnn_onnx, make_transformer_onnx

CNN = '''
import torch
def build():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3)).eval(), (torch.randn(1, 1, 8, 8),)
'''
TRANSFORMER = '''
import torch
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 16)
    def forward(self, ids):
        x = self.norm(self.emb(ids))
        return (self.fc(x).softmax(-1) * x).mean(1)
def build():
    return Tiny().eval(), (torch.randint(0, 50, (1, 8)),)
'''


@pytest.fixture
def cnn(tmp_path):
    """A PyTorch CNN (TFLite candidates need a PyTorch source)."""
    pytest.importorskip("torch")
    (tmp_path / "cnn.py").write_text(CNN)
    return load_model(f"{tmp_path / 'cnn.py'}:build")


@pytest.fixture
def transformer(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "tr.py").write_text(TRANSFORMER)
    return load_model(f"{tmp_path / 'tr.py'}:build")


@pytest.fixture
def cnn_onnx(tmp_path):
    return load_model(str(make_cnn_onnx(tmp_path / "cnn.onnx")))


@pytest.fixture
def transformer_onnx(tmp_path):
    return load_model(str(make_transformer_onnx(tmp_path / "tr.onnx")))


def ids(plan):
    return [c.id for c in plan.candidates]


def test_architecture_detection(cnn_onnx, transformer_onnx, tiny_onnx):
    assert architecture(cnn_onnx) == "cnn" and architecture(transformer_onnx) == "transformer"
    assert architecture(load_model(str(tiny_onnx))) == "mlp"


def test_architecture_detection_of_pytorch_modules(cnn, transformer):
    assert architecture(cnn) == "cnn" and architecture(transformer) == "transformer"


def test_coral_gets_only_full_int8_tflite(cnn):
    plan = make_plan(cnn, resolve("coral-edgetpu"))
    assert ids(plan) == ["tflite-int8-static"]
    assert "full-integer" in plan.candidates[0].reason


def test_pi5_tries_int8_and_fp16_with_xnnpack(cnn):
    plan = make_plan(cnn, resolve("raspberrypi"))
    assert {"tflite-int8-static", "tflite-int8-dynamic", "tflite-fp16", "onnx-int8-static"} <= set(ids(plan))
    fp16 = next(c for c in plan.candidates if c.id == "tflite-fp16")
    assert "computes in fp32" in fp16.reason  # no reduced-precision metadata: XNNPACK unpacks fp16 weights
    assert next(c for c in plan.candidates if c.id == "onnx-int8-static").onnx_int8.activation_type == "uint8"


def test_pi4_prefers_fp32_and_says_int8_gains_are_small(transformer):
    plan = make_plan(transformer, resolve("raspberrypi4"))
    assert plan.candidates[0].precision == "fp32"
    dynamic = next(c for c in plan.candidates if c.id == "tflite-int8-dynamic")
    assert "small gain" in dynamic.reason
    assert "halve the file" in next(c for c in plan.candidates if c.id == "tflite-fp16").reason


def test_arm_gets_u8s8_static_int8_for_cnns(cnn_onnx):
    plan = make_plan(cnn_onnx, resolve("raspberrypi"))
    static = next(c for c in plan.candidates if c.id == "onnx-int8-static")
    assert static.onnx_int8.activation_type == "uint8" and static.onnx_int8.weight_type == "int8"


def test_vnni_gets_s8s8_qdq_and_avx2_reduce_range(cnn_onnx):
    cnn = cnn_onnx
    vnni = next(c for c in make_plan(cnn, resolve("x86-avx512-vnni")).candidates if c.id == "onnx-int8-static")
    assert vnni.onnx_int8.activation_type == "int8" and vnni.onnx_int8.weight_type == "int8"
    assert not vnni.onnx_int8.reduce_range and "VNNI" in vnni.reason
    avx2 = next(c for c in make_plan(cnn, resolve("x86-avx2")).candidates if c.id == "onnx-int8-static")
    assert avx2.onnx_int8.reduce_range and "saturate" in avx2.reason


def test_gpu_targets_want_fp16_onnx(cnn_onnx):
    cnn = cnn_onnx
    for target in ("nvidia-gpu", "jetson-orin-nano", "jetson-nano"):
        plan = make_plan(cnn, resolve(target))
        assert plan.candidates[0].id == "onnx-fp16", target
        assert all(c.format == "onnx" for c in plan.candidates)


def test_transformers_get_dynamic_int8_and_fusions(transformer_onnx):
    transformer = transformer_onnx
    plan = make_plan(transformer, resolve("host"))
    onnx_dyn = next(c for c in plan.candidates if c.id == "onnx-int8-dynamic")
    assert onnx_dyn.fused and onnx_dyn.onnx_int8.mode == "dynamic" and onnx_dyn.onnx_int8.per_channel
    assert ("onnx int8-static", "static int8 of attention and LayerNorm loses accuracy; dynamic suits transformers") in plan.skipped
    forced = make_plan(transformer, resolve("host"), precisions={"int8-static"})
    assert "onnx-int8-static" in ids(forced)


def test_narrowing_and_errors(cnn_onnx, tiny_onnx):
    cnn = cnn_onnx
    plan = make_plan(cnn, resolve("raspberrypi"), formats={"onnx"}, precisions={"fp32"})
    assert ids(plan) == ["onnx-fp32"]
    # an ONNX source reaches TFLite targets too (edgekit.convert.onnx_tflite)
    assert ids(make_plan(load_model(str(tiny_onnx)), resolve("coral-edgetpu"))) == ["tflite-int8-static"]
    onnx_plan = make_plan(load_model(str(tiny_onnx)), resolve("raspberrypi"))
    assert {c.format for c in onnx_plan.candidates} == {"onnx", "tflite"}
    with pytest.raises(EdgekitError, match="unknown precision"):
        make_plan(cnn, resolve("host"), precisions={"int3"})


def test_a_tflite_fp16_file_is_estimated_as_fp32_compute_on_an_arm_cpu():
    """XNNPACK computes fp16 only for models with reduced-precision metadata, which the converters
    do not write: estimating fp16 compute on a Pi 5's A76 made a depthwise CNN 3.3x too fast."""
    from edgekit.optimizer.estimate import compute_precision

    pi5 = resolve("raspberrypi")
    assert pi5.cpu.fp16_arithmetic
    assert compute_precision("fp16", "tflite", pi5) == "fp32"
    assert compute_precision("fp16", "onnx", resolve("jetson-nano")) == "fp16"  # a GPU computes in fp16


def test_optimize_options_are_one_validated_value(tiny_onnx, tmp_path):
    """The CLI builds OptimizeOptions from its flags and library callers pass one (or its fields as
    keywords): checked once, before any model is loaded."""
    from edgekit.errors import EdgekitError
    from edgekit.optimizer import OptimizeOptions, Tolerance, optimize

    options = OptimizeOptions(formats={"onnx"}, tolerance="cosine=0.98", plan_only=True)
    assert options.formats == frozenset({"onnx"}) and options.tolerance == Tolerance(min_cosine=0.98)
    for bad, message in [({"eval_samples": 0}, "eval_samples"), ({"time_budget_s": -1}, "time-budget"),
                         ({"task": "nope"}, "nope"), ({"version": "../x"}, "version")]:
        with pytest.raises(EdgekitError, match=message):
            OptimizeOptions(**bad)
    plan = optimize(str(tiny_onnx), target="host", options=options, precisions={"fp32"}).plan
    assert [c["id"] for c in plan["candidates"]] == ["onnx-fp32"]  # the keyword narrows the value
    with pytest.raises(TypeError, match="unknown options formatz"):
        optimize(str(tiny_onnx), target="host", formatz={"onnx"})
