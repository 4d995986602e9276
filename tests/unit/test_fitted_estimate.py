"""The fitted device model: kernel fusion, kinds, threads, on-chip memory, and a fit that finds
the parameters that made the data."""

import dataclasses

import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from edgekit.devices import resolve
from edgekit.devices.profile import DeviceFit
from edgekit.profile.fitted import Observation, estimate, fit_device, kernels, score, total_ms
from edgekit.profile.static import analyse


def _convnet(channels=32, size=28, depthwise=False, blocks=3):
    """conv (+ relu) blocks: dense 3x3, or depthwise 3x3 followed by a pointwise 1x1."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(blocks):
        if depthwise:
            w = numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), f"dw{i}")
            nodes.append(helper.make_node("Conv", [x, w.name], [f"d{i}"], pads=[1, 1, 1, 1], group=channels,
                                          name=f"dwconv{i}"))
            inits.append(w)
            x = f"d{i}"
            k = 1
        else:
            k = 3
        w = numpy_helper.from_array(rng.standard_normal((channels, channels, k, k)).astype(np.float32), f"w{i}")
        inits.append(w)
        pad = [k // 2] * 4
        nodes += [helper.make_node("Conv", [x, w.name], [f"c{i}"], pads=pad, name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return analyse(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_activations_fuse_into_their_convolution_and_depthwise_is_its_own_kind():
    ks = kernels(_convnet(depthwise=True))
    assert [k.kind for k in ks] == ["depthwise", "conv"] * 3
    assert all(k.members[1:] == (f"relu{i // 2}",) for i, k in enumerate(ks) if k.kind == "conv")


def test_threads_help_less_than_linearly_and_the_json_has_both():
    pi4 = resolve("raspberrypi4")
    fit = dataclasses.replace(DeviceFit(), parallel=0.8)
    static = _convnet(channels=64, size=56)
    one = total_ms(kernels(static), static, pi4, fit, "fp32", 1)
    four = total_ms(kernels(static), static, pi4, fit, "fp32", 4)
    assert one / 4 < four < one
    est = estimate(static, pi4, fit)
    assert set(est["by_threads"]) == {"1", "4"} and est["total_ms"] == est["by_threads"]["4"]


def test_parameters_beyond_on_chip_memory_are_streamed_per_inference():
    coral = resolve("coral-edgetpu")
    fit = DeviceFit(threads_apply=False, onchip_mb=8.0, offchip_gbs=0.5)
    small, big = _convnet(channels=32), _convnet(channels=512, size=7, blocks=6)  # 0.04 MB vs 14 MB int8
    assert total_ms(kernels(small), small, coral, fit, "int8") < 1.0
    streamed = total_ms(kernels(big), big, coral, fit, "int8") - total_ms(
        kernels(big), big, coral, dataclasses.replace(fit, onchip_mb=100.0), "int8")
    weights_int8 = sum(n.weight_bytes for n in big.nodes) / 4
    assert streamed == pytest.approx((weights_int8 - 8e6) / 0.5e9 * 1000, rel=1e-6)


def test_the_fit_recovers_the_parameters_that_made_the_measurements():
    pi4 = resolve("raspberrypi4")
    truth = DeviceFit(conv=0.6, depthwise=0.08, overhead_us=25.0, parallel=0.7)
    graphs = [_convnet(channels=c, size=s, depthwise=d) for c in (16, 64) for s in (14, 56) for d in (False, True)]
    observations = [Observation(f"g{i} {n}T", g, "fp32", n, total_ms(kernels(g), g, pi4, truth, "fp32", n))
                    for i, g in enumerate(graphs) for n in (1, 4)]
    fitted = fit_device(observations, pi4, DeviceFit(), ("conv", "depthwise", "overhead_us", "parallel"))
    assert fitted.conv == pytest.approx(0.6, rel=0.05) and fitted.depthwise == pytest.approx(0.08, rel=0.05)
    assert fitted.overhead_us == pytest.approx(25.0, rel=0.1) and fitted.parallel == pytest.approx(0.7, rel=0.05)
    assert score(observations, pi4, fitted)["worst"] < 1.01
    assert score(observations, pi4, DeviceFit())["worst"] > 1.5  # the defaults were far off: the fit moved


def test_a_fit_written_as_toml_loads_back_as_the_same_profile_model(tmp_path):
    text = (resolve("raspberrypi4").path and open(resolve("raspberrypi4").path).read())
    fit = DeviceFit(conv=0.7, basis="calibrated", fitted_on="12 microbenchmarks", fitted_at="2026-11-29")
    head = text.split("# ---- fitted by")[0].replace('id = "raspberrypi4"', 'id = "myboard"')
    head = head.replace('aliases = ["rpi4", "pi4"]', "aliases = []")
    path = tmp_path / "myboard.toml"
    path.write_text(head + "\n[estimator.fit]\n" + fit.to_toml() + "\n")
    assert resolve(str(path)).estimator.fit == fit
