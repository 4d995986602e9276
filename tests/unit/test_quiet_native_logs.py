"""onnxruntime's native log stays off unless EDGEKIT_DEBUG: a bad input is one Python exception,
not a screen of C++ log lines on stderr."""

import subprocess
import sys

SCRIPT = """
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from edgekit._quiet import load_onnxruntime
ort = load_onnxruntime()
shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
try:
    session.run(None, {"x": np.ones(3, np.float32)})  # 3 values cannot become 2x2: fails inside the node
except Exception as exc:
    print("raised", type(exc).__name__)
"""


def _run(tmp_path, debug: str):
    env = {"EDGEKIT_DEBUG": debug, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", "import sys\n" + SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=str(__import__("pathlib").Path(__file__).parents[2]), timeout=120)


def test_native_log_is_quiet_and_the_error_is_raised(tmp_path):
    done = _run(tmp_path, "0")
    assert "raised" in done.stdout
    assert "onnxruntime" not in done.stderr and "[E:" not in done.stderr, done.stderr


def test_debug_lets_the_native_log_through(tmp_path):
    done = _run(tmp_path, "1")
    assert "raised" in done.stdout and "[E:onnxruntime" in done.stderr
