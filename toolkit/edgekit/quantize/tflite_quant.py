"""TFLite quantisation with ai-edge-quantizer: fp16, dynamic int8, weight-only int8, full int8."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from .._quiet import quiet
from ..data import Dataset
from ..errors import EdgekitError, require

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


def signature_inputs(path: Path) -> tuple[str, list[str]]:
    from ..models.tflite_model import open_interpreter

    signatures = open_interpreter(path, delegates=False).get_signature_list()
    key = next(iter(signatures))
    names = signatures[key]["inputs"]
    if all(re.fullmatch(r"args_\d+", n) for n in names):
        names = sorted(names, key=lambda n: int(n.split("_")[1]))
    return key, names


def _calibration_set(path: Path, data: Dataset, limit: int) -> dict:
    key, names = signature_inputs(path)
    from ..models.tflite_model import open_interpreter

    dtypes = {d["name"]: d["dtype"] for d in open_interpreter(path, delegates=False).get_input_details()}
    rows = []
    columns = list(data.arrays)
    for i in range(min(limit, len(data))):
        row = {}
        for sig_name, column in zip(names, columns):
            dtype = next((dt for n, dt in dtypes.items() if n.endswith(sig_name)), np.float32)
            row[sig_name] = data.arrays[column][i:i + 1].astype(dtype)
        rows.append(row)
    return {key: rows}


def quantize_tflite(src: Path, dst: Path, precision: str, calibration: Optional[Dataset] = None,
                    exclude: tuple[str, ...] = (), calibration_samples: int = 64) -> dict:
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
            result = q.quantize(q.calibrate(_calibration_set(src, calibration, calibration_samples)))
        else:
            result = q.quantize()
        result.export_model(str(dst), overwrite=True)
    return {"recipe": RECIPES[precision][0], "why": RECIPES[precision][1], "excluded": list(exclude)}
