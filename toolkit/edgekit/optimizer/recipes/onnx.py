"""ONNX: exported with torch.onnx (or taken as given and cleaned), fused for transformers,
quantised with onnxruntime.quantization (int8) or onnxconverter-common (fp16)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from . import Recipe, exclusion_steps, guard
from ...backends import SessionOptions
from ...data import run_dataset
from ...errors import first_line
from ...formats import open_session
from ...metrics import max_relative_error


def int8_preset(profile, mode: str):
    """onnxruntime int8 settings for the target CPU or GPU, and why (Optimum's presets)."""
    from ...quantize.onnx_int8 import OnnxInt8Settings

    if profile.gpu_onnx:
        return (OnnxInt8Settings(mode=mode, activation_type="int8" if mode == "static" else "uint8"),
                "TensorRT takes symmetric S8S8 QDQ; per-channel weights")
    if profile.arch == "x86_64":
        if profile.cpu.vnni:
            return (OnnxInt8Settings(mode=mode, activation_type="int8" if mode == "static" else "uint8"),
                    "VNNI: S8S8 QDQ is onnxruntime's first recommendation; per-channel weights")
        return (OnnxInt8Settings(mode=mode, reduce_range=True),
                "AVX2 without VNNI: VPMADDUBSW can saturate, so U8S8 with reduce_range (onnxruntime docs)")
    return (OnnxInt8Settings(mode=mode),
            "ARM64: U8S8 is faster on lower-end ARM64 (Optimum's arm64 preset); per-channel weights")


class OnnxRecipe(Recipe):
    format = "onnx"

    # -- planning ---------------------------------------------------------------------------------
    def reason(self, precision, arch, profile, explicit):
        if precision == "fp16":
            if profile.gpu_onnx:
                return True, "fp16 ONNX for the CUDA/TensorRT providers (tensor cores)"
            return False, "onnxruntime's CPU provider lacks fp16 kernels for most ops"
        if precision == "int8-dynamic":
            if "onnxruntime-tensorrt" in profile.runtimes and profile.runtimes[0] != "onnxruntime-cpu":
                return False, "TensorRT has no dynamic quantisation; static QDQ instead"
            if arch == "cnn" and "int8-dynamic" not in explicit:
                return False, "static int8 suits CNNs (onnxruntime docs); dynamic ConvInteger is slow"
        return super().reason(precision, arch, profile, explicit)

    def settings(self, precision, arch, profile, runtime):
        fields, why = {}, ""
        if precision in ("int8-dynamic", "int8-static"):
            fields["onnx_int8"], why = int8_preset(profile, precision.split("-")[1])
        # The fused graph uses com.microsoft ops: onnxruntime CPU/CUDA only, not TensorRT.
        if arch == "transformer" and runtime in ("onnxruntime-cpu", "onnxruntime-cuda"):
            fields["fused"] = True
        return fields, why

    def settings_label(self, candidate) -> str:
        if candidate.onnx_int8:
            return candidate.onnx_int8.label()
        return "transformer fusions" if candidate.fused else ""

    # -- building ---------------------------------------------------------------------------------
    def convert(self, model, dst: Path) -> dict:
        from ...convert.onnx_export import export_onnx

        return export_onnx(model, dst).to_dict()

    def from_source(self, builder, dst: Path) -> dict:
        """The ONNX source cleaned (edgekit.convert.onnx_clean), kept only where it computes what
        the source does on the evaluation samples; else the source as it is, and why."""
        if builder.probe is None:
            return super().from_source(builder, dst)
        from ...convert.onnx_clean import clean

        model = builder.model
        try:
            info = clean(model, dst)
            diff = max_relative_error(run_dataset(open_session(model.path, SessionOptions(), model), builder.probe, model),
                                      run_dataset(open_session(dst, SessionOptions(), model), builder.probe, model))
        except Exception as exc:  # a graph the cleaner breaks is used as it is
            info, diff = {"cleaner": f"failed: {type(exc).__name__}: {str(exc)[:160]}"}, float("inf")
        if not diff <= 1e-4:
            super().from_source(builder, dst)
            return {"exporter": "source file", "cleaned": info | {"kept": False, "max_rel_diff": diff}}
        return {"exporter": "source file, cleaned", "cleaned": info | {"kept": True, "max_rel_diff": diff}}

    def base(self, builder, fused: bool = False) -> Path:
        exported = self._converted(builder)
        if not fused:
            return exported

        def fuse():
            from ...convert.onnx_optimize import optimize_transformer

            dst = builder.workdir / "base-fp32-fused.onnx"
            try:
                fusions = optimize_transformer(exported, dst)
                if not fusions.get("SkipLayerNormalization"):
                    return dst, {"fusions": fusions}
                return self._skip_layer_norm_measured(builder, exported, dst, fusions)
            except Exception as exc:  # fusions are a speed-up: without them the graph still runs
                return exported, {"error": f"onnxruntime transformer optimiser failed: {type(exc).__name__}: "
                                           f"{first_line(exc, 200)}", "used": "the unfused graph"}

        return builder.cached("onnx-fused", fuse)

    def _skip_layer_norm_measured(self, builder, exported: Path, fused: Path, fusions: dict) -> tuple[Path, dict]:
        """SkipLayerNormalization (a residual Add and the LayerNormalization after it, fused) is
        faster on some CPUs and slower on others: on a 2-core AMD EPYC (Zen 3) MiniLM at 128 tokens
        ran 5% slower with it. Where the target is this host, both graphs are timed side by side
        on the evaluation samples and the faster one is kept; elsewhere onnxruntime's default (fused)
        stands, and the report says it was not measured there."""
        if not builder.measure_here or builder.probe is None:
            return fused, {"fusions": fusions, "skip_layer_norm": "fused (onnxruntime's default): the target is "
                                                                 "not this host, so it was not measured"}
        from ...convert.onnx_optimize import optimize_transformer
        from ...devices.host import available_cores
        from ..timing import interleaved, timed_samples

        apart = fused.with_name("base-fp32-fused-apart.onnx")
        fusions_apart = optimize_transformer(exported, apart, skip_layer_norm=False)
        samples = timed_samples(builder.probe, count=8)
        # as the runtime runs them (threads spinning); each turn runs every sample, a block of ~20 ms
        options = SessionOptions(threads=available_cores(), allow_spinning=True)
        runs = {}
        for name, path in (("fused", fused), ("apart", apart)):
            session = open_session(path, options, builder.model)
            calls = [session.bind(f) for f in samples]
            runs[name] = lambda calls=calls: [c() for c in calls]
        took = interleaved(runs, warmup=2, min_rounds=10, max_rounds=60, budget_s=2.0)
        fused_ms, apart_ms = (float(np.median(took[k])) / len(samples) for k in ("fused", "apart"))
        measured = f"{fused_ms:.2f} ms fused against {apart_ms:.2f} ms apart per sample, side by side on this host"
        if apart_ms < fused_ms * 0.98:
            return apart, {"fusions": fusions_apart, "skip_layer_norm": f"left apart, {fused_ms / apart_ms:.2f}x "
                                                                        f"faster: {measured}"}
        return fused, {"fusions": fusions, "skip_layer_norm": f"fused: {measured}"}

    def build(self, builder, candidate, dst: Path) -> dict:
        if candidate.precision == "fp32":
            shutil.copyfile(self.base(builder, candidate.fused), dst)
            return {"base": "fused" if candidate.fused else "exported"}
        if candidate.precision == "fp16":
            from ...quantize.onnx_fp16 import quantize_onnx_fp16

            base = self.base(builder)  # the export is cached in this process, so made here
            return guard("onnxconverter-common", lambda: quantize_onnx_fp16(base, dst), builder)
        from ...quantize.onnx_int8 import quantize_onnx_int8

        settings = candidate.onnx_int8
        if candidate.fused and not settings.fused_graph:
            settings = replace(settings, fused_graph=True)
        source = self.base(builder, candidate.fused)
        return guard("onnxruntime.quantization", lambda: quantize_onnx_int8(source, dst, settings, builder.calibration),
                     builder)

    def repairs(self, candidate, opt) -> Iterator:
        """Per-channel weights, another calibration method, the output head in float (static), then
        the most sensitive nodes in float."""
        if candidate.onnx_int8 is None:
            return
        from ...optimizer.sensitivity import node_sensitivity

        settings = candidate.onnx_int8
        if not settings.per_channel:
            settings = replace(settings, per_channel=True)
            yield "per-channel weights", replace(candidate, onnx_int8=settings)
        if settings.mode == "static":
            for method in ("entropy", "percentile"):
                if method != settings.calibration:
                    yield f"{method} calibration", replace(candidate, onnx_int8=replace(settings, calibration=method))
            from ...optimizer.sensitivity import output_head

            head = tuple(output_head(self.base(opt.builder, candidate.fused)))
            if head:
                settings = replace(settings, exclude=head)
                yield (f"kept the output head in float ({', '.join(head[:4])}{'...' if len(head) > 4 else ''})",
                       replace(candidate, onnx_int8=settings))
        # Sensitivity: measured once on the current settings, then the worst nodes stay in float.
        probe = replace(candidate, id=candidate.id + "-probe", onnx_int8=settings)
        path, _ = opt.builder.build(probe)
        ranked = [name for name, _ in node_sensitivity(self.base(opt.builder, candidate.fused), path, opt.eval)]
        for k in exclusion_steps(ranked):
            kept = tuple(dict.fromkeys(settings.exclude + tuple(ranked[:k])))  # the head stays in float too
            yield (f"kept the {k} most sensitive node{'s' if k > 1 else ''} in float ({', '.join(ranked[:min(k, 4)])}"
                   f"{'...' if k > 4 else ''})"), replace(candidate, onnx_int8=replace(settings, exclude=kept))
