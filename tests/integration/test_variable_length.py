"""Pay only for the sentence you have (issue 30): MiniLM's bundle, as `edgekit optimize` makes it,
keeps its sequence dynamic, records the axis in its manifest, and runs each sentence at its own
length alone, in a micro-batch and behind the server, with the embeddings fp32 torch gives."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cosine(a, b) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def minilm_bundle(bundles):
    return bundles[1]


@pytest.fixture(scope="module")
def torch_reference():
    """fp32 torch at each sentence's own length (no padding at all)."""
    import torch

    from edgekit.zoo import minilm

    module = minilm.build_module()

    def embed(sentence: str) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.from_numpy(a) for a in minilm.tokenize([sentence]).values())).numpy()[0]

    return embed


def test_the_manifest_records_the_sequence_axis_and_its_range(minilm_bundle):
    from edgekit.bundle import read_manifest

    manifest = read_manifest(minilm_bundle)
    assert [s.shape for s in manifest.inputs] == [("batch", "sequence")] * 2
    axis = manifest.axes["sequence"]
    assert (axis.min, axis.max) == (1, 128)  # the tokenizer truncates at 128
    shortest, longest = axis.judged
    assert 1 < shortest < 12 and 40 < longest <= 128  # the sentence set's real lengths were judged
    assert axis.buckets[-1] == 128 and len(axis.buckets) >= 3 and axis.buckets[0] <= 16


def test_a_sentence_runs_at_its_own_length_with_fp32s_embedding(minilm_bundle, torch_reference):
    from edgekit.runtime import load
    from edgekit.zoo import minilm

    runtime = load(minilm_bundle)
    widths, scores = [], []
    run = runtime.active.session.run

    def spy(feeds):  # what the variant is fed
        widths.append(feeds["input_ids"].shape[1])
        return run(feeds)

    runtime.active.session.run = spy
    sentences = minilm.sentences()[1::10]
    for sentence in sentences:
        answer = runtime.predict_raw(sentence)
        scores.append(_cosine(answer["embedding"], torch_reference(sentence))[0])
    tokens = [len(minilm.tokenizer().encode(s).ids) for s in sentences]
    assert widths == tokens and max(tokens) < 64  # never padded to 128
    assert np.mean(scores) >= 0.99 and min(scores) >= 0.97, scores
    runtime.close()


def test_mixed_lengths_batch_by_bucket_as_accurate_as_one_at_a_time(minilm_bundle, torch_reference):
    """Batched rows are not bit-equal to rows run alone: dynamic int8 quantises each activation
    tensor with one scale over the whole batch. They must be as close to fp32."""
    from edgekit.runtime import load
    from edgekit.zoo import minilm

    runtime = load(minilm_bundle, threads=1)
    sentences = minilm.sentences()[:24]
    feeds = [runtime.preprocess([s]) for s in sentences]
    alone = [runtime.predict(f)["embedding"][0] for f in feeds]
    widths = []
    run = runtime.active.session.run

    def spy(batch):
        widths.append((batch["input_ids"].shape[1], batch["attention_mask"].sum(1).tolist()))
        return run(batch)

    runtime.active.session.run = spy
    batcher = runtime.batched(max_batch_size=8, max_delay_ms=20)
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda f: batcher(f)["embedding"][0], feeds))
    batcher.close()
    reference = np.array([torch_reference(s) for s in sentences])
    batched, single = _cosine(np.array(together), reference), _cosine(np.array(alone), reference)
    assert batched.mean() >= 0.99 and batched.min() >= 0.97 and batched.mean() >= single.mean() - 0.002, (batched, single)
    assert len(widths) < len(sentences)  # requests did share batches
    for width, rows in widths:  # within one bucket, padded to the batch's longest row only
        assert width == max(rows) and len({runtime.joiner.bucket(n) for n in rows}) == 1, widths
    runtime.close()


def test_the_server_shows_the_variable_axis_and_answers_each_length(minilm_bundle, torch_reference):
    from edgekit.serve.plane import ServedModel, ServeOptions

    sentences = ["Hi.", "The quick brown fox jumps over the lazy dog near the river bank today.",
                 "A cat sits on the mat."]

    async def main():
        model = ServedModel(minilm_bundle, ServeOptions(max_delay_ms=20))
        feeds = [model.runtime.preprocess([s]) for s in sentences]
        answers = await asyncio.gather(*(model.infer(f) for f in feeds))
        meta = model.metadata()
        model.close()
        return answers, meta

    answers, meta = asyncio.run(main())
    assert [t["shape"] for t in meta["inputs"]] == [[-1, -1]] * 2
    axis = meta["parameters"]["variable_axes"]["sequence"]
    assert axis["max"] == 128 and axis["buckets"]
    json.dumps(meta)  # the metadata is JSON as served
    for sentence, (outputs, _) in zip(sentences, answers):
        assert _cosine(outputs["embedding"][0], torch_reference(sentence))[0] >= 0.97


def test_bench_reports_latency_per_sentence_length(minilm_bundle, bundles, cli):
    """`edgekit bench --length` sweeps the sequence of a dynamic model (synthetic tokens, all
    attended); a model without a varying axis is told so, not timed at a made-up size."""
    out_dir = minilm_bundle.with_suffix("")  # the optimize output the bundle was packed from
    result = cli("bench", out_dir / "best.onnx", "--length", "8,64", "--min-runs", "5", "--min-seconds", "0.2",
                 "--warmup-runs", "2", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]  # progress lines go to stderr
    assert [(r["length"], r["input_shapes"]["input_ids"]) for r in rows] == [(8, [1, 8]), (64, [1, 64])]
    assert all(r["label"].endswith(f"[len{r['length']}]") for r in rows)
    shown = cli("bench", out_dir / "best.onnx", "--length", "8", "--min-runs", "5", "--min-seconds", "0.2")
    assert shown.exit_code == 0 and "[len8]" in shown.stdout  # the table's label is text, not rich markup
    digits = bundles[0].with_suffix("")
    refused = cli("bench", digits / "best.onnx", "--length", "8")
    assert refused.exit_code != 0 and "no input whose axis 1 varies" in refused.output
