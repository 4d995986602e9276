"""onnxruntime graph optimisation, with its transformer fusions for BERT-like graphs.

The fused graph uses com.microsoft ops (BiasGelu, SkipLayerNormalization...), so it runs only
on onnxruntime; it is produced for onnxruntime targets and never for other ONNX consumers.
"""

from __future__ import annotations

from pathlib import Path

from .._quiet import quiet


def _attention_shape(proto) -> tuple[int, int]:
    """(num_heads, hidden) from the graph: hidden from the LayerNorm scale, heads from a Reshape
    that splits hidden into (heads, head_dim). 0 lets onnxruntime detect them itself."""
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    hidden = 0
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization" and len(node.input) > 1 and node.input[1] in inits:
            hidden = int(np.prod(inits[node.input[1]].dims))
            break
    made = {o: n for n in proto.graph.node for o in n.output}

    def constant(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name]).reshape(-1).tolist()
        node = made.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t).reshape(-1).tolist()
        return None

    for node in proto.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or not hidden:
            continue
        shape = constant(node.input[1])
        if shape is None and node.input[1] in made and made[node.input[1]].op_type == "Concat":
            # a dynamic sequence: the shape is (batch, sequence, heads, head_dim) concatenated at
            # run time from the input's shape and constants; the heads are a constant there
            parts = [constant(i) for i in made[node.input[1]].input]
            if len(parts) == 4 and parts[2] and len(parts[2]) == 1:
                heads, size = int(parts[2][0]), parts[3]
                if heads > 0 and hidden % heads == 0 and (size is None or heads * int(size[0]) == hidden):
                    return heads, hidden
        if shape is not None and len(shape) == 4 and shape[2] * shape[3] == hidden:
            return int(shape[2]), hidden
    return 0, hidden


def optimize_transformer(src: Path, dst: Path, skip_layer_norm: bool = True) -> dict:
    """Apply onnxruntime's BERT fusions; returns the fused-operator counts. ``skip_layer_norm``
    False leaves residual Adds and LayerNormalization apart (slower fused on some CPUs)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    proto = onnx.load(str(src))
    heads, hidden = _attention_shape(proto)
    if not heads:  # a graph with a dynamic sequence computes its head split at run time
        hidden = 0  # onnxruntime detects both, or neither
    with quiet():
        options = FusionOptions("bert")
        options.enable_skip_layer_norm = skip_layer_norm
        optimized = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
                                   optimization_options=options)
        optimized.save_model_to_file(str(dst))
    stats = optimized.get_fused_operator_statistics()
    return {k: v for k, v in stats.items() if v}
