"""Profile: FLOPs on hand-checked graphs, trace aggregation, compatibility rules, hints, py-spy."""

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.devices import resolve
from edgekit.profile.compat import check
from edgekit.profile.dynamic import aggregate_trace
from edgekit.profile.hints import hints
from edgekit.profile.roofline import bound, estimate, roofline_ms
from edgekit.profile.static import analyse


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _w(name, shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def test_conv_flops_and_bytes():
    m = _model([helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
               [_w("W", (4, 3, 3, 3)), _w("B", (4,))])
    p = analyse(m)
    node = p.nodes[0]
    assert node.macs == 4 * 8 * 8 * 3 * 3 * 3  # each of 256 outputs: 27 multiply-adds
    assert node.flops == 2 * node.macs + 256  # plus the bias
    assert node.params == 4 * 27 + 4 and node.weight_bytes == 4 * node.params
    assert node.bytes_read == (3 * 64 + 112) * 4 and node.bytes_written == 256 * 4
    assert p.size_by_dtype == {"float32": 112 * 4}


def test_matmul_and_attention_flops():
    m = _model([helper.make_node("MatMul", ["a", "W"], ["y"])],
               [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])], [_w("W", (5, 7))])
    assert analyse(m).macs == 2 * 5 * 7
    # attention for one head: scores = Q K^T (s x s x d), probs x V (s x s x d)
    s, d = 16, 8
    att = _model([helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", ["q", "kt"], ["scores"]),
                  helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
                  helper.make_node("MatMul", ["probs", "v"], ["ctx"])],
                 [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, s, d]) for n in "qkv"],
                 [helper.make_tensor_value_info("ctx", TensorProto.FLOAT, [1, s, d])])
    p = analyse(att)
    assert p.macs == 2 * s * s * d
    softmax = next(n for n in p.nodes if n.op_type == "Softmax")
    assert softmax.flops == 5 * s * s and softmax.op_class == "normalisation"


def test_dynamic_dims_take_given_shapes_and_peak_memory(tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    p1, p8 = analyse(proto), analyse(proto, {"x": [8, 4]})
    assert p8.macs == 8 * p1.macs == 8 * 12
    # live tensors: x (8x4) -> h (8x3) -> z -> y; peak holds an input and an output of one node
    assert p8.peak_activation_bytes == max(8 * 4 + 8 * 3, 8 * 3 * 2) * 4


def test_trace_aggregation():
    def node(name, op, dur, ts):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ts": ts, "args": {"op_name": op}}

    events = [node("mm1", "MatMul", 300, 1), node("mm2", "MatMul", 100, 2), node("t", "Transpose", 100, 3),
              node("mm1", "MatMul", 300, 11), node("mm2", "MatMul", 100, 12), node("t", "Transpose", 100, 13),
              {"cat": "Node", "name": "mm1_fence_before", "dur": 5, "ts": 1}]
    agg = aggregate_trace(events, runs=2)
    assert agg["total_us_per_run"] == 500
    assert agg["nodes"]["mm1"]["us_per_run"] == 300 and agg["nodes"]["mm1"]["share"] == pytest.approx(0.6)
    assert agg["by_op_type"]["MatMul"] == {"us_per_run": 400, "share": pytest.approx(0.8), "nodes": 2}
    assert list(agg["by_op_type"]) == ["MatMul", "Transpose"]


def test_roofline_bound_and_precision():
    m = _model([helper.make_node("MatMul", ["a", "W"], ["y"])],
               [helper.make_tensor_value_info("a", TensorProto.FLOAT, [128, 512])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 512])], [_w("W", (512, 512))])
    node = analyse(m).nodes[0]
    pi4 = resolve("raspberrypi4")
    assert bound(node, pi4) == "compute"  # intensity ~ 43 FLOP/byte > ridge 4.5
    assert roofline_ms(node, pi4) == pytest.approx(node.flops / 57.6e9 * 1000)
    est = estimate(analyse(m), resolve("raspberrypi5"), {"matmul/conv": {"efficiency": 0.5}})
    assert est["total_ms"]["int8"] < est["total_ms"]["fp16"] < est["total_ms"]["fp32"]
    assert est["total_ms"]["fp32"] == pytest.approx(2 * roofline_ms(node, resolve("raspberrypi5")))


def test_compatibility_rules_per_profile():
    # Erf has no Edge TPU kernel: it and everything after it would run on the CPU
    m = _model([helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Erf", ["c"], ["e"]),
                helper.make_node("Relu", ["e"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8, 2])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_w("W", (4, 3, 1, 1, 1))])
    p = analyse(m)
    issues = {i["what"]: i for i in check(p, m, resolve("coral-edgetpu"), 10_000_000)}
    assert "node 1" in issues["ops without an Edge TPU kernel"]["detail"]
    assert "and the 1 nodes after it" in issues["ops without an Edge TPU kernel"]["detail"]
    assert "dynamic shapes on a static-shape target" in issues
    assert "tensors with more than 3 dimensions larger than one" in issues
    assert not check(p, m, resolve("x86-avx512-vnni"), 10_000_000)  # fine on a big x86 box
    big = {i["what"] for i in check(p, m, resolve("coral-edgetpu"), 2_000_000_000)}
    assert "model does not fit in memory" in big


def _measured(shares: dict) -> dict:
    return {"by_op_type": {k: {"share": v, "us_per_run": v * 1000, "nodes": 1} for k, v in shares.items()}}


def test_the_memory_bound_share_is_a_share(tiny_onnx):
    """Per-op roofline times over the fitted model's (smaller) total printed '1674% ... memory-bound'."""
    p = analyse(onnx.load(str(tiny_onnx)))
    estimate = {"nodes": [{"op_type": "MatMul", "estimate_ms": 3.0, "bound": "memory"},
                          {"op_type": "Relu", "estimate_ms": 1.0, "bound": "compute"}],
                "total_ms": {"fp32": 0.2}}
    found = [h["finding"] for h in hints(p, None, resolve("raspberrypi5"), estimate) if "memory-bound" in h["finding"]]
    assert found == ["75% of the estimated time on raspberrypi5 is memory-bound"]


def test_hints_follow_the_numbers(tiny_onnx):
    p = analyse(onnx.load(str(tiny_onnx)))
    pi5, pi4 = resolve("raspberrypi5"), resolve("raspberrypi4")
    text = " ".join(h["action"] for h in hints(p, _measured({"MatMul": 0.8, "Add": 0.2}), pi5, None))
    assert "int8 dot product" in text
    text = " ".join(h["action"] for h in hints(p, _measured({"MatMul": 0.8, "Add": 0.2}), pi4, None))
    assert "small int8 gains" in text
    layout = hints(p, _measured({"Transpose": 0.3, "MatMul": 0.4, "Reshape": 0.3}), pi5, None)
    assert any("channels-last" in h["action"] for h in layout)
    emb = _model([helper.make_node("Gather", ["E", "ids"], ["x"]), helper.make_node("Erf", ["x"], ["y"])],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64])], [_w("E", (1000, 64))])
    found = hints(analyse(emb), _measured({"Gather": 0.01, "Erf": 0.99}), pi5, None)
    actions = " ".join(h["action"] for h in found)
    assert "weight-only int8" in actions and "transformer optimiser" in actions


def test_pyspy_records_a_script(tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.profile.pyspy import find_pyspy, record

    try:
        find_pyspy()
    except EdgekitError:
        pytest.skip("py-spy is not installed")
    script = tmp_path / "app.py"
    # Busy for a second of CPU time, not a fixed loop count: a fast CPU finished 3M additions in
    # under 60 ms, leaving py-spy five samples at 100 Hz.
    script.write_text("import time\nimport numpy as np\nimport onnxruntime\n"
                      "def busy():\n    s, end = 0, time.process_time() + 1.0\n"
                      "    while time.process_time() < end:\n        for i in range(10_000):\n            s += i\n"
                      "    return s\n"
                      "busy()\n")
    try:
        result = record([sys.executable, str(script)], tmp_path / "spy", rate=100)
    except EdgekitError as exc:
        if "ptrace" in str(exc):
            pytest.skip("ptrace is not permitted here")
        raise
    assert result["samples"] > 5
    assert any("busy" in row["function"] for row in result["top_own"])
    assert 0 <= result["runtime_share"] <= 1
    svg = (tmp_path / "spy" / "flamegraph.svg").read_text()
    assert svg.startswith("<svg") and "busy" in svg
    import json

    speedscope = json.loads((tmp_path / "spy" / "profile.speedscope.json").read_text())
    assert speedscope["profiles"][0]["type"] == "sampled"
