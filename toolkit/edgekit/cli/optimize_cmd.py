"""``edgekit optimize``, ``edgekit convert`` and ``edgekit quantize``."""

from __future__ import annotations

from pathlib import Path

import click

from . import specs
from .common import (ReportedError, console, force_option, input_option, interface_options, json_option, output_file,
                     print_json, steps, table)
from ..models import load_model


def _split(value: str | None) -> set[str] | None:
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def _summary(report) -> None:
    out = console()
    rows = []
    for c in report.candidates:
        m = c.metrics
        task = (f"{m['accuracy']:.3f}" if "accuracy" in m else f"{m['top1_agreement']:.3f}" if "top1_agreement" in m
                else f"{m['cer']:.4f}" if "cer" in m else f"{m['map50']:.3f}" if "map50" in m else "-")
        mark = "★ " if c.id == report.winner else ""
        rows.append([mark + c.id, c.settings or "-", c.status,
                     f"{c.size_bytes / 1e6:.2f}" if c.size_bytes else "-",
                     f"{c.latency_host['p50_ms']:.2f}" if c.latency_host else "-",
                     f"{c.latency_target_ms:.2f}" if c.latency_target_ms is not None else "-",
                     f"{m['cosine_mean']:.4f} / {m['cosine_min']:.4f}" if "cosine_mean" in m else "-", task,
                     (c.reason or "")[:70]])
    task = report.model.task
    target_col = "target ms" + ("" if report.target.is_host else " (est.)")
    headers = ["candidate", "settings", "status", "MB", "host p50 ms", target_col, "cosine mean / min",
               "acc" if report.data.eval.endswith("labelled") else
               "CER" if task.startswith("ctc") else "mAP@0.5" if task == "detection" else "top-1", "reason"]
    if not any(r[-1] for r in rows):  # no reasons to show: keep the table narrow
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    out.print(table(f"{report.model.name} -> {report.target.id}", headers, rows))
    for note in report.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


@click.command("optimize")
@click.argument("model", required=False)
@click.option("--target", "-t", default="host", show_default=True, help="Target profile id, alias or .toml path.")
@click.option("--data", help="Evaluation/calibration data: .npz, .parquet, a collector export, a folder of images or "
                             "WAV files, a text file of sentences, or module:function (built-ins carry their own).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Output directory [edgekit-out/MODEL-TARGET].")
@click.option("--formats", help="Comma list to narrow the plan: onnx,tflite.")
@click.option("--precisions", help="Comma list: fp32,fp16,int8-dynamic,int8-static,int8-weight-only.")
@click.option("--tolerance", type=specs.TOLERANCE, help="Mean cosine (0.99) or cosine=0.99,min_cosine=0.98,top1=0.99,accuracy_drop=1.")
@click.option("--task", help="How outputs are judged: classification, embedding, ctc[:BLANK] (greedy-decoded "
                              "text, character error rate vs fp32), detection (decoded boxes after NMS, mAP@0.5 "
                              "vs fp32's), generic [the model's own].")
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and its reasons; build nothing.")
@click.option("--allow-synthetic-calibration", is_flag=True, help="Calibrate on random inputs when no data is given.")
@click.option("--eval-samples", default=512, show_default=True, help="Evaluation samples used at most.")
@click.option("--time-budget", type=float, help="Seconds for the whole run, repairs included; what it leaves out "
                                                 "is listed in the report [no limit].")
@click.option("--timing-seconds", default=20.0, show_default=True, help="Seconds for the interleaved timing.")
@click.option("--package", "package", is_flag=True, help="Also write the deployable bundle OUT.ekb.")
@click.option("--name", "model_name", help="The model's name in the manifest and the fleet's logs [the model's own; "
                                           "a factory's function name].")
@click.option("--version", "model_version", help="The model's version in the manifest [the run's UTC time].")
@click.option("--verify-arm64", "verify_arm64", is_flag=True,
              help="Re-run the passing candidates on ARM64 kernels under QEMU (root, x86_64 Debian) and reject "
                   "those whose numerics fail there.")
@click.option("--arm64-samples", default=32, show_default=True, help="Evaluation samples run under emulation.")
@click.option("--sign-key", type=click.Path(path_type=Path), help="With --package: sign the bundle (ed25519 PEM).")
@click.option("--processing", "processing_file", type=click.Path(path_type=Path),
              help="TOML with the bundle's [image] or [text] input processing and [[outputs]] (see README).")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path),
              help="Class names, one per line, for the first output (softmax and top 5 added).")
@input_option
@interface_options
@json_option
def optimize_cmd(model, target, data, out, formats, precisions, tolerance, task, plan_only,
                 allow_synthetic_calibration, eval_samples, time_budget, timing_seconds, package, model_name,
                 model_version, verify_arm64,
                 arm64_samples, sign_key, processing_file, labels_file, inputs, batch_axes, states, as_json):
    """Convert and quantise MODEL for a target device, guard accuracy, and pick the best variant.

    MODEL defaults to the demo model edgekit:digits-cnn. The result directory holds every
    artifact, best.onnx or best.tflite, report.json, report.md, tradeoff.png and manifest.json.

    \b
    Example:
      edgekit optimize --target raspberrypi
      edgekit optimize edgekit:minilm --target host --json
      edgekit optimize net.py:build --data calib.npz --target coral-edgetpu --plan
      edgekit optimize --target raspberrypi --package
      edgekit optimize --target raspberrypi4 --verify-arm64      # int8 numerics on ARM kernels, no device
      edgekit optimize net.py:build --data val.npz --labels classes.txt --processing pictures.toml --package
      edgekit optimize mlp.py:build --data val.npz --name mlp-digits --version 1 --package
      edgekit optimize det.onnx --input x:1x3x320x320 --data pages/ --processing det.toml --target coral-edgetpu
      edgekit optimize crnn.onnx --input x:1x1x32xwidth --data lines.npz --task ctc --tolerance cer=0.02
      edgekit optimize yolo.onnx --data street.npz --task detection --tolerance map=0.9
      edgekit optimize silero_vad.onnx --input input:1x512 --input sr:int64:=16000 --data speech/ --time-budget 300
    """
    from ..optimizer import NoCandidatePassed, OptimizeOptions, optimize
    from ..processing import declaration

    options = OptimizeOptions(formats=_split(formats), precisions=_split(precisions), tolerance=tolerance,
                              plan_only=plan_only, allow_synthetic_calibration=allow_synthetic_calibration,
                              eval_samples=eval_samples, time_budget_s=time_budget, timing_s=timing_seconds,
                              inputs=inputs, processing=declaration(processing_file, labels_file),
                              verify_arm64=arm64_samples if verify_arm64 else 0, batch_axes=batch_axes,
                              states=states, task=task, name=model_name, version=model_version)
    say, stop = (lambda msg: None), (lambda: None)
    if not plan_only:
        say, stop = steps()
    try:
        result = optimize(model, target=target, data=data, out=out, options=options, progress=say)
    except NoCandidatePassed as exc:
        stop()
        if as_json:
            print_json(exc.result.report.to_dict())
        else:
            _summary(exc.result.report)
        raise
    finally:
        stop()
    if plan_only:
        if as_json:
            print_json(result.plan)
        else:
            _print_plan(result.plan)
        return
    bundle = result.package(sign_key=sign_key) if package else None
    if as_json:
        print_json(result.report.to_dict())
        return
    _summary(result.report)
    console().print(f"best: [bold]{result.best_path}[/bold]   report: {result.out_dir / 'report.md'}"
                    + (f"   bundle: {bundle}" if bundle else ""))


def _print_plan(plan: dict) -> None:
    out = console()
    out.print(table(f"Plan for {plan['target']} ({plan['architecture']})", ["candidate", "runtime", "settings", "why"],
                    [[c["id"], c["runtime"], c["settings"] or "-", c["reason"]] for c in plan["candidates"]]))
    if plan["skipped"]:
        out.print(table("Skipped", ["what", "why"], [[s["what"], s["why"]] for s in plan["skipped"]]))
    for note in plan["notes"]:
        out.print(f"note: {note}")


@click.command("convert")
@click.argument("model", required=False)
@click.option("--to", "to", type=click.Choice(["onnx", "tflite"]), required=True)
@click.option("--out", "out", type=click.Path(path_type=Path), help="Output file [MODEL.onnx|.tflite].")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="ONNX exporter; auto tries dynamo, then TorchScript.")
@click.option("--data", help="ONNX -> TFLite: samples to size the inputs and check the result on [synthetic].")
@force_option
@input_option
@interface_options
@json_option
def convert_cmd(model, to, out, exporter, data, force, inputs, batch_axes, states, as_json):
    """Convert a PyTorch model to ONNX or TFLite, or an ONNX model to TFLite (onnx2tf), checked
    against the source.

    \b
    Example:
      edgekit convert edgekit:minilm --to onnx --out minilm.onnx
      edgekit convert net.py:build --to tflite
      edgekit convert cls.onnx --to tflite --input x:1x3x48x192 --data lines/
    """

    loaded = load_model(model, inputs, batch_axes, states)
    out = out or Path(f"{loaded.name}.{to}")
    with output_file(out, force) as tmp:
        if to == "onnx":
            from ..convert.onnx_export import export_onnx

            info = export_onnx(loaded, tmp, exporter=exporter).to_dict()
        elif loaded.format == "onnx":
            from ..convert.onnx_tflite import export_tflite_from_onnx
            from ..data import load_data, synthesize

            probe = (load_data(data, loaded, limit=8) if data else synthesize(loaded, n=8)).head(8)
            info = export_tflite_from_onnx(loaded, tmp, probe)
            info["max_abs_diff"] = info["max_rel_diff"]
        else:
            from ..convert.tflite_export import export_tflite

            info = export_tflite(loaded, tmp).to_dict()
    info |= {"file": str(out), "size_bytes": out.stat().st_size}
    if as_json:
        print_json(info)
    else:
        source = "onnxruntime (relative)" if "max_rel_diff" in info else "torch"
        console().print(f"wrote {out} ({info['size_bytes'] / 1e6:.2f} MB) with {info['exporter']}; "
                        f"max |diff| vs {source} {info['max_abs_diff']:.2e}"
                        + (f"; fell back because {info['fallback_reason']}" if info.get("fallback_reason") else ""))
        for name, perm in (info.get("layout") or {}).get("inputs", {}).items():
            console().print(f"note: input {name} is laid out differently: tflite = numpy.transpose(onnx, {perm})")


@click.command("quantize")
@click.argument("model", required=False)
@click.option("--precision", type=click.Choice(["fp16", "int8-dynamic", "int8-static", "int8-weight-only"]), required=True)
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]),
              help="Output format (default: the input file's, or onnx for PyTorch sources).")
@click.option("--target", default="host", show_default=True, help="Target whose int8 preset to use.")
@click.option("--data", help="Calibration data (.npz or module:function) for int8-static.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Output file.")
@force_option
@input_option
@json_option
def quantize_cmd(model, precision, fmt, target, data, out, force, inputs, as_json):
    """Quantise one model with the target's preset, and report its accuracy against fp32.

    \b
    Example:
      edgekit quantize model.onnx --precision int8-dynamic
      edgekit quantize edgekit:digits-cnn --precision int8-static --format tflite --out d.tflite
    """
    from ..optimizer import optimize

    loaded = load_model(model, inputs)
    fmt = fmt or (loaded.format if loaded.format in ("onnx", "tflite") else "onnx")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        from ..optimizer import NoCandidatePassed

        try:
            result = optimize(loaded, target=target, data=data, out=Path(tmp) / "out", formats={fmt},
                              precisions={precision}, tolerance="0", timing_s=1.0)
        except NoCandidatePassed as exc:
            raise ReportedError(f"quantisation failed: {exc}") from None
        row = next(c for c in result.report.candidates if c.status == "passed")
        out = out or Path(f"{loaded.name}-{precision}.{fmt}")
        import shutil

        with output_file(out, force) as staged:
            shutil.copyfile(Path(tmp) / "out" / row.file, staged)
    info = {"file": str(out), "size_bytes": out.stat().st_size, "precision": precision, "format": fmt,
            "settings": row.settings, "metrics": row.metrics}
    if as_json:
        print_json(info)
    else:
        m = row.metrics
        console().print(f"wrote {out} ({info['size_bytes'] / 1e6:.2f} MB, {row.settings or precision}); "
                        f"vs fp32: mean cosine {m['cosine_mean']:.4f}, min {m['cosine_min']:.4f}")
