"""Run inside the onnx2tf tool environment (TensorFlow, never edgekit's own): ONNX -> fp32 TFLite.

A script, not a module of the package: the tool environment has its own pinned numpy, onnx and
TensorFlow, so nothing here imports edgekit. edgekit.convert.onnx_tflite runs it as
``TOOL_PYTHON _onnx2tf_driver.py SRC.onnx WORKDIR OUT.tflite [CALIB.npz INT8.tflite]`` and reads
one JSON line back. SRC may be ``len64=a.onnx,len128=b.onnx``: one source fixed at each length of a
dynamic axis (onnx2tf bakes the sizes it traced into its reshapes, so a resizable input does not
survive it); each is converted and the SavedModels are saved as one with a signature per length,
so the TFLite holds one graph per length and the runtime picks the smallest that fits. With calibration samples (one row per call, in the ONNX layout), it also
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


def _int8(saved: str, calib: str, dst: str, tf, np, keys=None) -> float:
    """Full-integer TFLite from the SavedModel, calibrated on the given samples (NCHW samples are
    laid out as the SavedModel takes them). With signature ``keys`` (one graph per length), the
    samples of each are stored as ``KEY/INPUT`` and each signature is calibrated on its own."""
    start = time.perf_counter()
    data = dict(np.load(calib))
    loaded = tf.saved_model.load(saved)

    def rows(key):
        specs = loaded.signatures[key or "serving_default"].structured_input_signature[1]
        prefix = f"{key}/" if key else ""
        for i in range(len(data[prefix + next(iter(specs))])):
            feed = {}
            for name, spec in specs.items():
                row = data[prefix + name][i]
                want = tuple(spec.shape)
                last = (0,) + tuple(range(2, row.ndim)) + (1,)
                if row.shape != want and row.ndim >= 3 and tuple(np.transpose(row, last).shape) == want:
                    row = np.transpose(row, last)
                feed[name] = row.astype(spec.dtype.as_numpy_dtype)
            yield feed

    def samples():
        for key in keys or [None]:
            for feed in rows(key):
                yield (key, feed) if key else feed  # TensorFlow's form for several signatures

    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=keys)
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
    sources = dict(part.split("=", 1) for part in src.split(",")) if "=" in src else {"": src}
    for key, path in sources.items():
        onnx2tf.convert(input_onnx_file_path=path, output_folder_path=saved + key, output_signaturedefs=True,
                        copy_onnx_input_output_names_to_tflite=True, non_verbose=True, verbosity="error")
    converted = time.perf_counter() - start
    keys = None
    if len(sources) > 1:  # one SavedModel with each length's graph as a signature
        parts = {key: tf.saved_model.load(saved + key) for key in sources}
        root = tf.Module()
        root.parts = list(parts.values())  # tracked, so their weights are saved with the signatures
        tf.saved_model.save(root, saved, signatures={k: p.signatures["serving_default"] for k, p in parts.items()})
        keys = list(sources)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=keys)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(dst, "wb") as f:
        f.write(converter.convert())
    result = {"onnx2tf": onnx2tf.__version__, "tensorflow": tf.__version__, "onnx2tf_seconds": round(converted, 2)}
    if calib:
        try:
            result["int8_seconds"] = round(_int8(saved, calib, int8_dst, tf, np, keys), 2)
        except Exception as exc:  # the fp32 conversion stands; the fallback is only missing
            result["int8_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:6])
