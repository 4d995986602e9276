"""`edgekit calibrate`: fit a device model to microbenchmarks run on the device through its agent.

The suite is small ONNX graphs built here with onnx.helper (no torch): chains of one kernel kind
at several sizes (dense 3x3 and 1x1 convolutions, depthwise convolutions, matmuls, element-wise
and normalisation ops, a chain of tiny ops for the per-kernel cost), in fp32 and, for the
convolutions and matmuls, int8 (onnxruntime's static QDQ quantisation). They are benchmarked on
the device with 1 thread and all its cores, each alone in a continuous loop, by the agent
`edgekit bench --device` uses; edgekit.profile.fitted fits the device model to the medians, and the result is written as a
profile (the base profile's facts, the device's own fitted model) that `--target ./board.toml`
uses. Chains, not single ops: a runtime's per-session cost would otherwise dominate small kernels.
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._schema import replace, to_dict
from ..devices.profile import DeviceFit, Profile
from ..errors import EdgekitError
from ..names import BadName, check_name
from ..devices.host import profile_from_environment
from ..data import Dataset
from ..devices import resolve
from .fitted import Observation, fit_device, score
from .static import analyse

CHAIN = 4  # identical kernels per graph
FREE = ("conv", "depthwise", "gemm", "memory", "elementwise", "normalization", "half_mflops", "half_depth",
        "overhead_us", "call_us", "parallel", "thread_mflops")


@dataclass(frozen=True)
class Micro:
    label: str
    proto: object  # onnx.ModelProto
    int8: bool = False  # also benchmarked as a QDQ int8 graph


def _graph(label, nodes, inits, x_shape, out_name):
    """Every chain keeps its input's shape (same padding, square matmuls), so the output has it too."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, label, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, x_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _conv(rng, x: str, i: int, c_in: int, c_out: int, k: int, stride: int = 1, depthwise: bool = False):
    """(nodes, initializers) of convolution ``i`` (same padding) with its ReLU, output ``r{i}``."""
    from onnx import helper, numpy_helper

    shape = (c_out, 1, k, k) if depthwise else (c_out, c_in, k, k)
    scale = 1.0 / np.sqrt(np.prod(shape[1:]))
    w = numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), f"w{i}")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}")
    nodes = [helper.make_node("Conv", [x, w.name, b.name], [f"c{i}"], pads=[k // 2] * 4, strides=[stride] * 2,
                              group=c_in if depthwise else 1),
             helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    return nodes, [w, b]


def _conv_chain(c: int, hw: int, k: int, depthwise: bool = False):
    from onnx import helper

    rng = np.random.default_rng(c * 1000 + hw)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        conv_nodes, conv_inits = _conv(rng, x, i, c, c, k, depthwise=depthwise)
        nodes += conv_nodes
        inits += conv_inits
        if i % 2:  # a residual add every second kernel, as in ResNets and MobileNets: runtimes
            nodes.append(helper.make_node("Add", [f"r{i}", x], [f"s{i}"]))  # change layout around it
            x = f"s{i}"
        else:
            x = f"r{i}"
    kind = "depthwise" if depthwise else "conv"
    return _graph(f"{kind}{k}x{k}_c{c}_hw{hw}", nodes, inits, [1, c, hw, hw], x)


def _branches(c_in: int, c_out: int, hw: int, k: int, stride: int, depthwise: bool = False):
    """Shapes a chain cannot hold (a stem over 3 channels, a strided or a widening convolution):
    CHAIN such convolutions side by side on the same input, each its own output."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(c_in * 1000 + c_out + hw)
    out_hw = (hw + 2 * (k // 2) - k) // stride + 1
    nodes, inits, outputs = [], [], []
    for i in range(CHAIN):
        conv_nodes, conv_inits = _conv(rng, "x", i, c_in, c_out, k, stride, depthwise)
        nodes += conv_nodes
        inits += conv_inits
        outputs.append(helper.make_tensor_value_info(f"r{i}", TensorProto.FLOAT, [1, c_out, out_hw, out_hw]))
    kind = "depthwise" if depthwise else "conv"
    graph = helper.make_graph(nodes, f"{kind}{k}x{k}s{stride}_c{c_in}to{c_out}_hw{hw}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, hw, hw])], outputs,
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _matmul_chain(m: int, k: int):
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(m * 7 + k)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        w = numpy_helper.from_array((rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [x, w.name], [f"m{i}"]))
        x = f"m{i}"
    return _graph(f"matmul_m{m}_k{k}", nodes, inits, [1, m, k], x)  # batch 1 first, as benchmarks expect


def _elementwise_chain(n: int, op: str = "Add", length: int = CHAIN):
    from onnx import helper, numpy_helper

    nodes, inits, x = [], [], "x"
    if op == "LayerNormalization":
        # after a residual Add, as in every transformer layer: runtimes fuse the pair (onnxruntime's
        # SkipLayerNormalization), and the fused kernel is what a transformer's time holds
        rows, cols = n // 384, 384
        inits += [numpy_helper.from_array(np.ones(cols, np.float32), "g"),
                  numpy_helper.from_array(np.zeros(cols, np.float32), "beta"),
                  numpy_helper.from_array(np.full((1, rows, cols), 0.1, np.float32), "residual")]
        for i in range(length):
            nodes += [helper.make_node("Add", [x, "residual"], [f"a{i}"]),
                      helper.make_node("LayerNormalization", [f"a{i}", "g", "beta"], [f"e{i}"], axis=-1)]
            x = f"e{i}"
        return _graph(f"add_layernorm_{rows}x{cols}", nodes, inits, [1, rows, cols], x)
    inits.append(numpy_helper.from_array(np.full(n, 1e-3, np.float32), "k"))
    for i in range(length):
        nodes.append(helper.make_node(op, [x, "k"], [f"e{i}"]))
        x = f"e{i}"
    return _graph(f"{op.lower()}_{n}x{length}", nodes, inits, [1, n], x)


def _unary_chain(op: str, shape: list[int], **attrs):
    """Softmax, Erf...: shape-preserving unary ops."""
    from onnx import helper

    nodes, x = [], "x"
    for i in range(CHAIN):
        nodes.append(helper.make_node(op, [x], [f"u{i}"], **attrs))
        x = f"u{i}"
    return _graph(f"{op.lower()}_{'x'.join(map(str, shape))}", nodes, [], shape, x)


def _batched_matmul_chain(heads: int, m: int, k: int):
    """Attention-shaped products: [1, heads, m, k] x [1, heads, k, k] (a per-head weight)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(heads * 31 + m)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        w = numpy_helper.from_array((rng.standard_normal((1, heads, k, k)) / np.sqrt(k)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [x, w.name], [f"m{i}"]))
        x = f"m{i}"
    return _graph(f"bmm_h{heads}_m{m}_k{k}", nodes, inits, [1, heads, m, k], x)


def suite(quick: bool = False) -> list[Micro]:
    """Sizes from the tiny kernels of a digits CNN to a ResNet stage's; ``quick``: a few of each."""
    convs = [(4, 8), (8, 14), (16, 8), (32, 8), (16, 56), (32, 28), (64, 28), (128, 14), (256, 7)]
    points = [(32, 56), (128, 28), (512, 7)]
    depthwise = [(32, 56), (144, 28), (384, 14), (960, 7)]
    matmuls = [(1, 64), (1, 256), (16, 384), (128, 384), (1, 1024), (64, 768)]
    if quick:
        convs, points, depthwise, matmuls = [(8, 14), (32, 28)], points[:1], depthwise[:2], matmuls[2:4]
    micros = [Micro(f"conv3x3 c{c} {hw}x{hw}", _conv_chain(c, hw, 3), int8=(c, hw) in ((32, 28), (128, 14)))
              for c, hw in convs]
    micros += [Micro(f"conv1x1 c{c} {hw}x{hw}", _conv_chain(c, hw, 1), int8=(c, hw) == (128, 28))
               for c, hw in points]
    micros += [Micro(f"depthwise3x3 c{c} {hw}x{hw}", _conv_chain(c, hw, 3, depthwise=True))
               for c, hw in depthwise]
    micros += [Micro(f"matmul {m}x{k}x{k}", _matmul_chain(m, k), int8=(m, k) == (128, 384))
               for m, k in matmuls]
    # the shapes real networks have and chains cannot: stems over 1 or 3 channels (a short
    # reduction), strided depthwise layers, 1x1 convolutions that widen 6x (inverted bottlenecks)
    branches = [(3, 32, 112, 3, 2, False), (1, 16, 28, 3, 1, False), (96, 96, 56, 3, 2, True),
                (24, 144, 56, 1, 1, False)]
    if quick:
        branches = branches[:1]
    micros += [Micro(f"{'depthwise' if dw else 'conv'}{k}x{k} stride {st} c{ci}->{co} {hw}x{hw} (x{CHAIN} side by side)",
                     _branches(ci, co, hw, k, st, dw)) for ci, co, hw, k, st, dw in branches]
    sizes = [4096, 1 << 20] if quick else [4096, 65536, 1 << 20]
    micros += [Micro(f"add {n}", _elementwise_chain(n)) for n in sizes]
    micros += [Micro("residual add + layernorm 128x384", _elementwise_chain(128 * 384, "LayerNormalization"))]
    micros += [Micro("batched matmul 12x128x32", _batched_matmul_chain(12, 128, 32))]
    if not quick:
        micros += [Micro("softmax 12x128x128", _unary_chain("Softmax", [1, 12, 128, 128], axis=-1)),
                   Micro("erf 128x1536", _unary_chain("Erf", [1, 128, 1536]))]
    # (no Transpose chain: onnxruntime cancels or merges consecutive transposes)
    micros.append(Micro("32 tiny adds", _elementwise_chain(16, length=32)))
    return micros


def _quantize(src: Path, dst: Path, proto) -> None:
    """Static QDQ int8 (per-channel S8 weights, U8 activations) with edgekit's own quantiser, on
    one random sample: the scales do not change the time."""
    from ..quantize.onnx_int8 import OnnxInt8Settings, quantize_onnx_int8

    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    quantize_onnx_int8(src, dst, OnnxInt8Settings(mode="static"), Dataset({"x": sample}, source="random"))


def build(micros: list[Micro], folder: Path, start: int = 0) -> list[tuple[Micro, str, Path]]:
    """(micro, precision, file) for every graph to benchmark."""
    import onnx

    files = []
    for i, micro in enumerate(micros, start):
        path = folder / f"{i:02d}.onnx"
        onnx.save(micro.proto, str(path))
        files.append((micro, "fp32", path))
        if micro.int8:
            qpath = folder / f"{i:02d}-int8.onnx"
            _quantize(path, qpath, micro.proto)
            files.append((micro, "int8", qpath))
    return files


def base_profile(base: Optional[str], environment: dict) -> Profile:
    """The profile whose facts (peaks, cores, memory) the fit starts from: ``base`` when given,
    else one derived from what the agent reported about its CPU."""

    if base:
        return resolve(base)
    return profile_from_environment(environment)


def observations(files, results: dict[str, dict]):
    statics = {}
    obs = []
    for micro, precision, path in files:
        static = statics.setdefault(micro.label, analyse(micro.proto))
        for threads, ms in results[str(path)].items():
            obs.append(Observation(f"{micro.label} {precision} {threads}T", static, precision, threads, ms))
    return obs


def measure(url: str, token_file: Path, paths: list[Path], threads: list[int], seconds: float,
            progress: Callable[[str], None], rounds: int = 2) -> tuple[dict, dict]:
    """{file: {threads: median ms}} through the agent, and the agent's environment.

    Each (graph, threads) runs alone in one continuous loop, as an app runs its model: absolute
    times are what is fitted, and interleaving several multi-threaded sessions (which edgekit
    bench does to compare them fairly) changes them, with the thread pools' spinning off. Every
    pair is measured in ``rounds`` passes over the whole list and keeps its lowest median: a
    shared machine's neighbours slow some passes, never speed one up."""
    from ..agent.client import remote_bench
    from ..bench import BenchOptions

    results: dict[str, dict] = {}
    environment: dict = {}
    total = len(paths) * len(threads) * rounds
    done = 0
    for _ in range(rounds):
        for path in paths:
            for n in threads:
                done += 1
                progress(f"measuring {done} of {total} on {url}")
                options = BenchOptions(threads=[n], warmup_runs=5, warmup_s=0.1, min_runs=20, min_seconds=seconds,
                                       max_seconds=max(seconds * 4, 10.0))
                answer = remote_bench(url, token_file, [str(path)], options)
                environment = answer.environment
                ms = answer.results[0].steady["p50_ms"]
                row = results.setdefault(str(path), {})
                row[n] = min(ms, row.get(n, ms))
    return results, environment


@dataclass
class Plan:
    """What one calibration measures: the graphs, the device's facts and the thread counts."""

    files: list  # (micro, precision, path)
    environment: dict
    profile: Profile
    threads: list[int]
    cache_mb: float


def plan(url: str, token_file: Path, folder: Path, base: Optional[str] = None, quick: bool = False,
         seconds: float = 0.5, progress: Callable[[str], None] = lambda m: None) -> Plan:
    """Build the suite in ``folder``, after one request that tells the device's cores and cache."""
    micros = suite(quick)
    progress(f"building {len(micros)} microbenchmark graphs (fp32, and int8 for some)")
    files = build(micros, folder)
    _, environment = measure(url, token_file, [files[0][2]], [1], seconds, progress, rounds=1)
    cache_mb = float(environment.get("cache_mb") or 0.0)
    if cache_mb:
        # weights twice the last-level cache: what a model beyond the cache streams per inference
        k = int(np.ceil(np.sqrt(2 * cache_mb * 1e6 / (CHAIN * 4)) / 64) * 64)
        dram = Micro(f"matmul 16x{k}x{k} (weights beyond the {cache_mb:g} MB cache)", _matmul_chain(16, k))
        files += build([dram], folder, start=len(micros))
    profile = base_profile(base, environment)
    cores = min(int(environment.get("cores") or profile.cpu.cores), profile.cpu.cores)
    return Plan(files, environment, profile, sorted({1, cores}), cache_mb)


def fit(p: Plan, results: dict, url: str, profile_id: Optional[str] = None,
        progress: Callable[[str], None] = lambda m: None) -> tuple[Profile, dict]:
    """The calibrated profile and a summary, from the plan's measurements."""

    obs = observations(p.files, results)
    free = FREE + (("int8_speedup",) if any(o.precision == "int8" for o in obs) else ()) \
        + (("dram",) if p.cache_mb else ())
    progress(f"fitting {len(free)} parameters to {len(obs)} measurements")
    start = DeviceFit(cache_mb=p.cache_mb, half_depth=16.0, normalization=0.3, thread_mflops=0.1)
    fitted = fit_device(obs, p.profile, start, free)
    scored = score(obs, p.profile, fitted)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    graphs = len({m.label for m, _, _ in p.files})
    fitted = replace(
        fitted, basis="calibrated",
        fitted_on=f"{len(obs)} microbenchmarks ({graphs} graphs, threads {p.threads}) through the agent at {url} "
                  f"on {p.environment.get('cpu_model', 'the device')}",
        validated_on="the microbenchmarks themselves (validate on your own models with edgekit bench --device)",
        fitted_at=now, expected_error=round(scored["geomean_error"], 3),
        within_1_5x=f"{scored['within_1_5x']} of {scored['rows']} microbenchmarks")
    estimator = replace(p.profile.estimator, fit=fitted)
    calibrated = replace(p.profile, id=profile_id or f"{p.profile.id}-calibrated",
                                     name=f"{p.profile.name}, calibrated {now[:10]}", aliases=(), estimator=estimator,
                                     path="")
    summary = {"device": url, "environment": p.environment, "threads": p.threads, "fit": to_dict(fitted),
               "microbenchmarks": [{"label": o.label, "measured_ms": o.ms, "estimate_ms": o.ms * r}
                                   for o, r in zip(obs, scored["ratios"])]}
    return calibrated, summary


def calibrate(url: str, token_file: Path, base: Optional[str] = None, profile_id: Optional[str] = None,
              quick: bool = False, seconds: float = 0.5,
              progress: Callable[[str], None] = lambda m: None) -> tuple[Profile, dict]:
    """(the calibrated profile, a summary with the microbenchmark fit) for the agent at ``url``."""
    if profile_id is not None:
        try:
            check_name(profile_id, "--id", "pi5-lab")  # checked before minutes of measuring, not after
        except BadName as exc:
            raise EdgekitError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="edgekit-calibrate-") as tmp:
        p = plan(url, token_file, Path(tmp), base, quick, seconds, progress)
        results, _ = measure(url, token_file, [path for _, _, path in p.files], p.threads, seconds, progress)
    return fit(p, results, url, profile_id, progress)
