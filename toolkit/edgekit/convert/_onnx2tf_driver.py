"""Run inside the onnx2tf tool environment (TensorFlow, never edgekit's own): ONNX -> fp32 TFLite.

A script, not a module of the package: the tool environment has its own pinned numpy, onnx and
TensorFlow, so nothing here imports edgekit. edgekit.convert.onnx_tflite runs it as
``TOOL_PYTHON _onnx2tf_driver.py SRC.onnx WORKDIR OUT.tflite [CALIB.npz INT8.tflite]`` and reads
one JSON line back. With calibration samples (one row per call, in the ONNX layout), it also
writes a full-integer TFLite with TensorFlow's own converter: the fallback for graphs
ai-edge-quantizer cannot quantise (a TRANSPOSE_CONV bias, in PaddleOCR's detector).

onnx2tf writes a SavedModel with signatures; the TFLite is converted from it with TensorFlow's
converter so that it carries a ``serving_default`` signature (ai-edge-quantizer calibrates
through signatures). onnx2tf downloads sample images for its own output check unless a file of
that name is in the working directory: one made here from zeros keeps it offline.
"""

import json
import os
import sys
import time


def _int8(saved: str, calib: str, dst: str, tf, np) -> float:
    """Full-integer TFLite from the SavedModel, calibrated on the given samples (NCHW samples are
    laid out as the SavedModel takes them)."""
    start = time.perf_counter()
    data = dict(np.load(calib))
    specs = tf.saved_model.load(saved).signatures["serving_default"].structured_input_signature[1]

    def samples():
        for i in range(len(next(iter(data.values())))):
            feed = {}
            for name, spec in specs.items():
                row = data[name][i]
                want = tuple(spec.shape)
                last = (0,) + tuple(range(2, row.ndim)) + (1,)
                if row.shape != want and row.ndim >= 3 and tuple(np.transpose(row, last).shape) == want:
                    row = np.transpose(row, last)
                feed[name] = row.astype(spec.dtype.as_numpy_dtype)
            yield feed

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with open(dst, "wb") as f:
        f.write(converter.convert())
    return time.perf_counter() - start


def main(src: str, workdir: str, dst: str, calib: str = "", int8_dst: str = "") -> None:
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)  # onnx2tf looks for its sample file in the working directory
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import numpy as np

    np.save("calibration_image_sample_data_20x128x128x3_float32.npy", np.zeros((20, 128, 128, 3), np.float32))
    import onnx2tf
    import tensorflow as tf

    start = time.perf_counter()
    saved = os.path.join(workdir, "saved_model")
    onnx2tf.convert(input_onnx_file_path=src, output_folder_path=saved, output_signaturedefs=True,
                    copy_onnx_input_output_names_to_tflite=True, non_verbose=True, verbosity="error")
    converted = time.perf_counter() - start
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(dst, "wb") as f:
        f.write(converter.convert())
    result = {"onnx2tf": onnx2tf.__version__, "tensorflow": tf.__version__, "onnx2tf_seconds": round(converted, 2)}
    if calib:
        try:
            result["int8_seconds"] = round(_int8(saved, calib, int8_dst, tf, np), 2)
        except Exception as exc:  # the fp32 conversion stands; the fallback is only missing
            result["int8_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:6])
