"""``edgekit serve --ui``: a browser prototype generated from each bundle's manifest.

A picture upload for image models (labels and top-k shown), a text box for text models, a JSON
box of tensors otherwise; one tab per model and version. Predictions go through the same data
plane as the API (batching, cache, logging). Gradio is the ``ui`` extra, never on devices.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from ..errors import EdgekitError, require


def gradio_app(repository):
    gr = require("gradio", "gradio", "ui", "the browser UI of edgekit serve")
    from fastapi import FastAPI

    with gr.Blocks(title="edgekit serve", analytics_enabled=False) as demo:
        gr.Markdown("# edgekit serve\nTry the served models. The API is the Open Inference Protocol at `/v2`.")
        for model in repository.all():
            with gr.Tab(f"{model.name} ({model.version})"):
                _model_tab(gr, repository, model)
    app = gr.mount_gradio_app(FastAPI(), demo, path="/", footer_links=[])
    # Gradio checks that a file a request names ({"path": ...}) was uploaded to its own cache only
    # once the Blocks "has launched", which mount_gradio_app never marks: without this, the API
    # reads any file on the server's disk for a client.
    demo.has_launched = True
    return app


def _run(repository, coroutine):
    """Gradio calls from a worker thread; the model's batcher lives on the server's loop."""
    loop = repository.loop
    if loop is None:
        raise EdgekitError("the server loop is not running yet")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)


def _model_tab(gr, repository, model) -> None:
    kind = model.runtime.preprocess.kind if model.runtime.preprocess else "tensor"
    slug = model.name.replace(".", "-")
    if kind == "image":
        source = gr.Image(type="numpy", image_mode="RGB", label="picture", elem_id=f"input-{slug}")
        shown = gr.Label(num_top_classes=5, label="prediction", elem_id=f"output-{slug}")

        def predict(picture):
            if picture is None:
                raise gr.Error("upload a picture first")
            results, _ = _run(repository, model.predict_raw([np.asarray(picture, dtype=np.uint8)]))
            result = results[0]
            if "top_k" in result:
                return {item["label"]: item["score"] for item in result["top_k"]}
            return {result.get("label", "?"): result.get("score", 1.0)}
    elif kind == "text":
        source = gr.Textbox(label="text", lines=3, elem_id=f"input-{slug}")
        shown = gr.JSON(label="result", elem_id=f"output-{slug}")

        def predict(text):
            if not text or not text.strip():
                raise gr.Error("type some text first")
            results, _ = _run(repository, model.predict_raw([text]))
            return _summary(results[0])
    else:
        names = ", ".join(s["name"] for s in model.runtime.inputs)
        source = gr.Textbox(label=f"inputs as JSON ({names})", lines=4, elem_id=f"input-{slug}",
                            placeholder='{"' + model.runtime.inputs[0]["name"] + '": [[...]]}')
        shown = gr.JSON(label="outputs", elem_id=f"output-{slug}")

        def predict(text):
            try:
                data = json.loads(text)
                feeds = {k: np.asarray(v) for k, v in data.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise gr.Error(f"not a JSON object of arrays: {exc}") from None
            outputs, _ = _run(repository, model.infer(feeds))
            return {k: np.asarray(v).tolist() for k, v in outputs.items()}

    button = gr.Button("Predict", variant="primary", elem_id=f"predict-{slug}")

    def guarded(value):
        try:
            return predict(value)
        except EdgekitError as exc:  # bad input: said in the page, the server keeps serving
            raise gr.Error(str(exc)) from None

    button.click(guarded, inputs=source, outputs=shown)


def _summary(result: dict) -> dict:
    """Long vectors shortened for the page: the first values, the length and the norm."""
    out = {}
    for key, value in result.items():
        if isinstance(value, list) and len(value) > 16 and all(isinstance(v, float) for v in value):
            vector = np.asarray(value)
            out[key] = {"dimensions": len(value), "norm": round(float(np.linalg.norm(vector)), 4),
                        "first values": [round(v, 4) for v in value[:8]]}
        else:
            out[key] = value
    return out
