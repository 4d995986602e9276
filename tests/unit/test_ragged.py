"""Variable lengths (issue 30) on small arrays: a dataset of padded token rows runs each sample at
its own length, and requests of different lengths share a batch only within a length bucket,
padded only where a mask says what is padding."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgekit.dataset import Dataset, row_lengths
from edgekit.manifest import Manifest
from edgekit.runtime.ragged import Joiner
from edgekit.serve.batching import AsyncBatcher


def _tokens(lengths, width):
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(1, n + 1) + 100 * row
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_each_sample_runs_at_its_own_length_and_outputs_keep_the_datasets_order():
    lengths = [3, 7, 3, 5, 7, 1]
    tokens = _tokens(lengths, 12)
    data = Dataset(tokens, None, lengths=row_lengths(tokens["attention_mask"]), ragged=dict.fromkeys(tokens, 1))
    assert data.lengths.tolist() == lengths and data.length_range() == (1, 7)
    assert data.feeds(0, 2)["input_ids"].shape == (2, 7)  # the longest of the batch, not the padded 12
    seen = []

    def run(feeds):  # the row's own tokens summed: differs when padding or order is wrong
        seen.append(feeds["input_ids"].shape)
        return [feeds["input_ids"].sum(1, keepdims=True), feeds["attention_mask"].sum(1)]

    sums, counts = data.grouped(run, batch_size=2)
    assert counts.tolist() == lengths  # every sample at exactly its length, in order
    assert sums[:, 0].tolist() == [int(tokens["input_ids"][i].sum()) for i in range(len(lengths))]
    assert sorted(seen) == [(1, 1), (1, 5), (2, 3), (2, 7)]  # one batch per length
    assert data.head(3).lengths.tolist() == [3, 7, 3] and data.subset(np.array([5, 0])).lengths.tolist() == [1, 3]


def _manifest(axes, shape=("batch", "sequence")):
    return Manifest.parse({
        "schema_version": 5, "model": {"name": "m"},
        "inputs": [{"name": "input_ids", "shape": list(shape), "dtype": "int64"},
                   {"name": "attention_mask", "shape": list(shape), "dtype": "int64"}],
        "outputs": [{"name": "y", "shape": ["batch", 4], "dtype": "float32"}],
        "variants": [{"id": "a", "file": "a.onnx", "format": "onnx", "precision": "fp32", "sha256": "0" * 64}],
        "processing": {"text": {"tokenizer": "processing/t.json", "sha256": "0" * 64, "max_length": 128,
                                "pad_to_max": False}},
        "axes": axes,
    })


def test_requests_share_a_batch_within_a_bucket_padded_to_the_longest():
    joiner = Joiner(_manifest({"sequence": {"max": 128, "judged": [3, 40], "buckets": [8, 16, 64, 128]}}))
    short, shorter, long = (_tokens([n], n) for n in (7, 5, 12))
    assert joiner.key(short) == joiner.key(shorter) != joiner.key(long)  # 5 and 7 in bucket 8, 12 in 16
    joined = joiner.join([short, shorter])
    assert joined["input_ids"].shape == (2, 7) and joined["attention_mask"][1].tolist() == [1] * 5 + [0, 0]
    assert joined["input_ids"][1, 5:].tolist() == [0, 0]


def test_an_axis_without_a_mask_is_never_padded():
    """A text line's width varies too, but nothing tells a recogniser which columns were added:
    only equal widths share a batch."""
    manifest = _manifest({}, shape=("batch", "width"))
    manifest = manifest.replace(processing=None, axes={"width": {"judged": [80, 80]}})
    joiner = Joiner(manifest)
    assert not joiner.padded
    assert joiner.key(_tokens([5], 5)) != joiner.key(_tokens([5], 6))


def test_the_batcher_groups_by_bucket_and_keeps_each_its_rows():
    joiner = Joiner(_manifest({"sequence": {"buckets": [8, 16]}}))
    calls = []

    def run(feeds):
        calls.append((feeds["input_ids"].shape[1], feeds["attention_mask"].sum(1).tolist()))
        return {"y": feeds["attention_mask"].sum(1)}

    async def main():
        batcher = AsyncBatcher(run, ThreadPoolExecutor(1), max_batch=8, max_delay_ms=50, max_queue=64, joiner=joiner)
        lengths = [3, 14, 6, 9, 2, 16]
        results = await asyncio.gather(*(batcher.submit(_tokens([n], n)) for n in lengths))
        return lengths, results

    lengths, results = asyncio.run(main())
    assert [int(r["y"][0]) for r in results] == lengths  # each caller its own row, unpadded length
    assert sorted(n for _, rows in calls for n in rows) == sorted(lengths)
    for width, rows in calls:  # one bucket per batch, padded to its longest row only
        assert width == max(rows) and len({joiner.bucket(n) for n in rows}) == 1, calls
    assert len(calls) <= 3  # and they did batch


def _line_model(shape=(1, 1, 4, "width")):
    from edgekit.spec import Model, TensorSpec

    return Model("lines", "onnx", "lines.onnx", [TensorSpec("x", shape, "float32")],
                 [TensorSpec("logits", (1, "steps", 3), "float32")])


def test_text_lines_of_their_own_widths_from_a_data_files_lengths():
    """A data file's `lengths` for a model that varies along one axis without a mask (text-line
    images): each line runs at its own width, the outputs of different widths come back padded
    with zero steps, and greedy CTC decoding skips those steps."""
    from edgekit.data import check_against
    from edgekit.optimizer.accuracy import ctc_decode

    widths = np.array([5, 9, 5, 2])
    x = np.zeros((4, 1, 4, 12), np.float32)
    for i, w in enumerate(widths):
        x[i, ..., :w] = i + 1
    data = check_against(Dataset({"x": x}, source="t", lengths=widths), _line_model())
    assert data.ragged == {"x": 3} and data.feeds(0, 2)["x"].shape == (2, 1, 4, 9)
    seen = []

    def run(feeds):  # one step per column: class 1 where the line has ink, else the blank (2)
        seen.append(feeds["x"].shape[-1])
        steps = feeds["x"][:, 0, 0, :]
        return [np.stack([np.full_like(steps, -1.0), np.where(steps > 0, 0.0, -9.0), np.full_like(steps, -0.5)], -1)]

    (logits,) = data.grouped(run)
    assert sorted(seen) == [2, 5, 9] and logits.shape == (4, 9, 3)
    assert ctc_decode(logits, blank=2) == [(1,)] * 4  # zero padding is not read as steps of class 0
    assert not logits[0, 5:].any() and logits[1, 8].any()


def test_a_data_files_lengths_that_do_not_fit_the_model_are_refused():
    import pytest

    from edgekit.data import check_against
    from edgekit.errors import DataError

    x = np.zeros((2, 1, 4, 8), np.float32)
    with pytest.raises(DataError, match="past the padded size 8"):
        check_against(Dataset({"x": x}, source="t", lengths=np.array([3, 9])), _line_model())
    with pytest.raises(DataError, match="vary along 0 dims"):
        check_against(Dataset({"x": x}, source="t", lengths=np.array([3, 4])), _line_model((1, 1, 4, 8)))
    with pytest.raises(DataError, match="one positive integer"):
        check_against(Dataset({"x": x}, source="t", lengths=np.array([0, 4])), _line_model())


def test_latency_is_reported_at_the_datas_median_p90_p99_and_longest_length():
    from edgekit.optimizer.lengths import length_picks

    lengths = np.array([30, 10] + [12] * 97 + [50])  # 100 samples
    picks = length_picks(lengths)
    assert [(label, n) for label, n, _ in picks] == [("median", 12), ("p99", 30), ("longest", 50)]  # p90 is 12 too
    assert all(lengths[i] == n for _, n, i in picks)
