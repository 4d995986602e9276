"""The fitted device model: kernel fusion, kinds, threads, on-chip memory, and a fit that finds
the parameters that made the data."""


import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from edgekit._schema import replace
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
    fit = replace(DeviceFit(), parallel=0.8)
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
        kernels(big), big, coral, replace(fit, onchip_mb=100.0), "int8")
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


def _graph(nodes, inits, x_shape, out):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return analyse(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _conv(c_in, c_out, size, k=3):
    w = numpy_helper.from_array(np.ones((c_out, c_in, k, k), np.float32), "w")
    return _graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)], [w], [1, c_in, size, size], "y")


def _host(flags=("avx512f",)):
    host = resolve("host")
    return replace(host, cpu=replace(host.cpu, isa=tuple(flags), cores=4))


def _compute_ms(static, profile, fit, threads=1):
    """The kernels' time without the fixed costs, memory made free: compute alone."""
    fit = replace(fit, overhead_us=0.0, call_us=0.0, memory=1e9)
    return total_ms(kernels(static), static, profile, fit, "fp32", threads)


def test_reshapes_are_views_and_cost_nothing():
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    static = _graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"]),
                     helper.make_node("Flatten", ["y"], ["z"])], [shape], [1, 8, 4, 4], "z")
    assert [k.op for k in kernels(static)] == ["Relu"]


def test_output_channels_are_padded_to_the_simd_width():
    """8 output channels on AVX-512's 16 lanes cost what 16 do; on NEON's 4 lanes they cost 8."""
    fit = DeviceFit(half_mflops=1e-9)
    avx512, neon = _host(("avx512f",)), _host(("asimd",))
    eight, sixteen = _conv(16, 8, 28), _conv(16, 16, 28)
    assert _compute_ms(eight, avx512, fit) == pytest.approx(_compute_ms(sixteen, avx512, fit), rel=1e-6)
    assert _compute_ms(eight, neon, fit) == pytest.approx(_compute_ms(sixteen, neon, fit) / 2, rel=1e-6)


def test_a_short_reduction_runs_below_the_kinds_efficiency():
    """A stem over 3 channels (27 multiply-adds per output) is slower per FLOP than a 3x3 over 32
    once half_depth is fitted; with it off (published fits) FLOPs alone count."""
    host = _host()
    stem, body = _conv(3, 32, 56), _conv(32, 32, 56)
    per_flop = lambda s, fit: _compute_ms(s, host, fit) / sum(k.flops for k in kernels(s))  # noqa: E731
    off, on = DeviceFit(half_mflops=1e-9), DeviceFit(half_mflops=1e-9, half_depth=27.0)
    assert per_flop(stem, off) == pytest.approx(per_flop(body, off), rel=1e-6)
    assert per_flop(stem, on) == pytest.approx(per_flop(stem, off) * 2, rel=1e-6)  # depth == half_depth
    assert per_flop(body, on) < per_flop(stem, on) / 1.5


def test_a_tiny_kernel_runs_on_one_thread_however_many_there_are():
    host = _host()
    fit = DeviceFit(half_mflops=1e-9, parallel=0.95, thread_mflops=1.0)
    tiny, big = _conv(4, 4, 4), _conv(64, 64, 56)
    assert _compute_ms(tiny, host, fit, 4) == pytest.approx(_compute_ms(tiny, host, fit, 1), rel=1e-6)
    assert _compute_ms(big, host, fit, 4) < _compute_ms(big, host, fit, 1) / 3
    off = replace(fit, thread_mflops=0.0)
    assert _compute_ms(tiny, host, off, 4) < _compute_ms(tiny, host, off, 1) / 3


def test_normalisations_have_their_own_efficiency_where_fitted():
    g, b = (numpy_helper.from_array(np.full(64, v, np.float32), n) for v, n in ((1.0, "g"), (0.0, "b")))
    static = _graph([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
                     helper.make_node("Erf", ["y"], ["z"])], [g, b], [1, 128, 64], "z")
    host = _host()
    same = _compute_ms(static, host, DeviceFit(elementwise=0.5))
    slow_norm = _compute_ms(static, host, DeviceFit(elementwise=0.5, normalization=0.05))
    erf_alone = _compute_ms(_graph([helper.make_node("Erf", ["x"], ["z"])], [], [1, 128, 64], "z"), host,
                            DeviceFit(elementwise=0.5))
    assert slow_norm - erf_alone == pytest.approx((same - erf_alone) * 10, rel=1e-6)
