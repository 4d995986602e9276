"""TFLite quantisation with ai-edge-quantizer: fp16, dynamic int8, weight-only int8, full int8."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


from .._quiet import quiet
from ..data import Dataset
from ..errors import EdgekitError, require
from .. import formats
from ..spec import TensorSpec

# precision -> (ai-edge-quantizer recipe, why). Channel-wise weights throughout: per-tensor int8
# loses accuracy on transformers and costs nothing at run time on XNNPACK.
RECIPES = {
    "int8-dynamic": ("dynamic_wi8_afp32", "int8 weights, activations quantised on the fly: int8 compute"),
    "int8-weight-only": ("weight_only_wi8_afp32", "int8 weights dequantised at load: 4x smaller, float compute"),
    "int8-static": ("static_wi8_ai8", "int8 weights and activations (calibrated): full-integer"),
    "fp16": ("float_casting_fp16", "fp16 weights: half the size; fp16 compute where XNNPACK has it"),
}


def _recipe(precision: str):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager

    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_quantization_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True,
            ),
            algorithm_key="float_casting",
        )
        return manager.get_quantization_recipe()
    return getattr(recipe, RECIPES[precision][0])()


def _calibration_set(path: Path, data: Dataset, limit: int, model=None) -> dict:
    """{signature: [{input name: array}]}: each sample as the interpreter takes it (its layout,
    dtype and names), through the same session code the guard runs it with."""
    from ..backends.base import SessionOptions

    session = formats.get("tflite").open_session(path, SessionOptions(threads=1),
                                                 model if model is not None else _plain(data))
    signatures = session.interpreter._get_full_signature_list()
    if session.buckets:  # one signature per sequence length: each sample calibrates its own bucket
        from ..convert.tflite_export import SIGNATURE

        sets: dict = {}
        for i in range(min(limit, len(data))):
            bucket, args = session.bucketed(data.feeds(i, i + 1))
            sets.setdefault(SIGNATURE.format(bucket), []).append(args)
        return sets
    key = next(iter(signatures))
    by_index = {index: name for name, index in signatures[key]["inputs"].items()}
    rows = []
    for i in range(min(limit, len(data))):
        rows.append({by_index[detail["index"]]: value for detail, value in session.prepared(data.feeds(i, i + 1))})
    return {key: rows}


def _plain(data: Dataset):
    """A stand-in model for data without one: its arrays, in order, are the inputs."""
    from types import SimpleNamespace

    specs = [TensorSpec(k, tuple(v.shape), v.dtype.name) for k, v in data.arrays.items()]
    return SimpleNamespace(inputs=specs, outputs=[], format="tflite", meta={})


def quantize_tflite(src: Path, dst: Path, precision: str, calibration: Optional[Dataset] = None,
                    exclude: tuple[str, ...] = (), calibration_samples: int = 64, model=None) -> dict:
    """Quantise ``src``; ``exclude`` holds regexes of op output names kept in float."""
    if precision not in RECIPES:
        raise EdgekitError(f"no TFLite recipe for precision {precision!r}", f"use one of {', '.join(RECIPES)}")
    require("ai_edge_quantizer", "ai-edge-quantizer", "tflite", "TFLite quantisation")
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(str(src))
    q.load_quantization_recipe(_recipe(precision))
    for pattern in exclude:
        q.update_quantization_recipe(regex=pattern, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key="no_quantize")
    with quiet():
        if q.need_calibration:
            if calibration is None or len(calibration) == 0:
                raise EdgekitError("full-integer TFLite needs calibration data", "pass --data")
            result = q.quantize(q.calibrate(_calibration_set(src, calibration, calibration_samples, model)))
        else:
            result = q.quantize()
        result.export_model(str(dst), overwrite=True)
    return {"recipe": RECIPES[precision][0], "why": RECIPES[precision][1], "excluded": list(exclude)}
