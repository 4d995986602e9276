"""Candidates that lost the source's dynamic sizes.

onnx2tf fixes every dynamic dimension to the size of the data it was given: a CRNN that reads a
text line of any width came back from the TFLite route reading lines of 80 pixels only. It passes
the guard (the evaluation data is 80 wide), wins, and then every other width fails on the device
and falls back to the next variant, call after call. So each passing candidate is also run once
with every dynamic dimension of the source (not the batch) at half the data's size; where another
candidate runs that and this one cannot, it is unfit, and the report says which size it fixed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..formats import open_session


def smaller_sample(model, dataset) -> Optional[tuple[dict, str]]:
    """One sample with each dynamic, non-batch dimension of the inputs halved, and what changed."""
    feeds = dataset.feeds(0, 1)
    changed = {}
    for spec in model.inputs:
        if not spec.is_data or spec.name not in feeds:
            continue
        array = feeds[spec.name]
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and axis != spec.batch_axis and axis < array.ndim and array.shape[axis] >= 2:
                changed[dim] = f"{dim} {array.shape[axis]}"
                array = np.take(array, range(array.shape[axis] // 2), axis=axis)
        feeds[spec.name] = array
    return (feeds, ", ".join(changed.values())) if changed else None


def drop_fixed_sizes(opt, outcomes) -> None:
    """Mark unfit the passing candidates that run only at the data's size, when another runs smaller."""
    probe = smaller_sample(opt.model, opt.eval)
    passing = [o for o in outcomes if o.status == "passed"]
    if probe is None or len(passing) < 2:
        return
    feeds, sizes = probe
    runs = {}
    for o in passing:
        try:
            open_session(o.path, opt.options, opt.model).run(feeds)
            runs[o.candidate.id] = True
        except Exception:  # the artifact cannot take another size: that is the finding
            runs[o.candidate.id] = False
    if not any(runs.values()):
        return  # half the size is not one this model takes at all: nothing learnt
    for o in passing:
        if not runs[o.candidate.id]:
            o.status = "unfit"
            o.reason = f"fixed {sizes}, dynamic in the source: runs that size only"
