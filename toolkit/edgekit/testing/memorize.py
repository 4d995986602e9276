"""The memorisation test ("overfit one batch", Karpathy's recipe): a fresh copy of the model must
drive the loss on a handful of examples to ~0. A model that cannot has a bug in its training
path: a frozen or detached layer, a broken loss, labels that do not fit the inputs.

Three checks, each with its numbers: the loss reaches the bar and (for classifiers) the batch is
100% right; every parameter moved (names the ones that did not: frozen or cut off from the loss);
and what was learned carries a little beyond the batch (held-out accuracy above chance): a model
can memorise random labels too, so only this catches labels shuffled against their inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .._hooks import import_callable
from .._plot import pyplot, save
from ..errors import DataError, EdgekitError, require
from ..tables import labels_of, load_columns


@dataclass
class MemorizeResult:
    model: str
    passed: bool
    reasons: list[str]
    losses: list[float]
    steps: int
    train_accuracy: Optional[float] = None
    holdout_accuracy: Optional[float] = None
    chance: Optional[float] = None
    frozen: list[str] = field(default_factory=list)
    plot: Optional[str] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _loss_fn(loss: str):
    torch = require("torch", "torch", "convert", "the memorisation test")
    if loss == "cross_entropy":
        return lambda out, y: torch.nn.functional.cross_entropy(out, y.long()), True
    if loss == "mse":
        return lambda out, y: torch.nn.functional.mse_loss(out, y.to(out.dtype).reshape(out.shape)), False
    return import_callable(loss, "--loss (cross_entropy, mse or module:function)"), False


def _reset(module) -> None:
    """Fresh weights, as training from scratch starts: every layer that can reset itself does."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


def _columns_for(specs, columns: dict, given: dict[str, str], positional: tuple[str, ...]) -> dict[str, str]:
    """The data array each model input reads: the mapping given, the input's own name, the
    positional names (the bundle's inputs, in order), or for a model of one input and data of
    one array besides the labels, that array."""
    named = {s.name: given.get(s.name, s.name) for s in specs}
    if all(v in columns for v in named.values()):
        return named
    if not given and len(positional) == len(specs) and all(p in columns for p in positional):
        return {s.name: p for s, p in zip(specs, positional)}
    arrays = [c for c in columns if c not in ("labels", "label")]
    if not given and len(specs) == 1 and len(arrays) == 1:
        return {specs[0].name: arrays[0]}
    return named


def memorize(factory: str, data: str | Path, loss: str = "cross_entropy", samples: int = 16, steps: int = 300,
             lr: float = 1e-2, holdout: int = 128, seed: int = 0, out: Optional[str | Path] = None,
             inputs: tuple[str, ...] = (), columns_of: Optional[dict[str, str]] = None,
             positional: tuple[str, ...] = ()) -> MemorizeResult:
    """Can the training code fit ``samples`` labelled samples of ``data`` from fresh weights?
    ``columns_of`` maps the factory's input names to the data's arrays where they differ (a
    factory's one input is called "input"; a data set holds the bundle's names); else
    ``positional`` names the arrays in the order of the model's inputs (the bundle's inputs)."""
    torch = require("torch", "torch", "convert", "the memorisation test")
    from ..data import Dataset, check_against
    from ..models import load_model

    model = load_model(factory, inputs)
    if not model.is_torch:
        raise EdgekitError(f"{factory} is {model.format}; the memorisation test trains a PyTorch model",
                           "pass the PyTorch factory (module:function) that builds it")
    columns = load_columns(data)
    labels = labels_of(columns, None, str(data)) if loss == "cross_entropy" else \
        columns.get("labels", columns.get("label"))
    if labels is None:
        raise DataError(f"{data} has no labels", "the memorisation test needs targets: add a 'labels' array")
    source = _columns_for(model.inputs, columns, columns_of or {}, positional)
    missing = [s.name for s in model.inputs if source[s.name] not in columns]
    if missing:
        wanted = ", ".join(repr(source[m]) + ("" if source[m] == m else f" (for input {m!r})") for m in missing)
        raise DataError(f"{data} has no array {wanted} for {model.name}'s inputs (its arrays are {', '.join(columns)})",
                        "map the factory's inputs to the data's arrays (loop.toml: [gate] inputs = "
                        f'{{ {missing[0]} = "ARRAY" }})')
    dataset = check_against(Dataset({s.name: columns[source[s.name]] for s in model.inputs}, labels, str(data)), model)
    if len(dataset) < samples:
        raise DataError(f"{data} has {len(dataset)} samples; the test takes {samples}", "give more data or --samples")
    criterion, classifier = _loss_fn(loss)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(dataset))
    batch, rest = order[:samples], order[samples:samples + holdout]
    names = [s.name for s in model.inputs]

    def tensors(index):
        return [torch.from_numpy(dataset.arrays[n][index]) for n in names]

    x, y = tensors(batch), torch.from_numpy(np.asarray(dataset.labels)[batch])
    module = copy.deepcopy(model.module)
    _reset(module)
    module.train()
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise EdgekitError("the model has no trainable parameters", "every parameter has requires_grad=False")
    optimizer = torch.optim.Adam(trainable, lr=lr)
    losses: list[float] = []
    if classifier:
        with torch.no_grad():
            classes = _first(module(*x)).shape[-1]
        labels_all = np.asarray(dataset.labels)
        outside = (labels_all < 0) | (labels_all >= classes)
        if outside.any():  # torch's own error here is an IndexError from inside the loss
            raise DataError(f"{int(outside.sum())} labels in {data} are not classes of {model.name} (e.g. "
                            f"{labels_all[outside][0]}; it has {classes}: 0-{classes - 1})",
                            "give labels as the model's class numbers")
    for _ in range(steps):
        optimizer.zero_grad()
        value = criterion(_first(module(*x)), y)
        if not torch.isfinite(value):
            losses.append(float("nan"))
            break
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
        if losses[-1] < 1e-4:
            break
    module.eval()
    with torch.no_grad():
        final_out = _first(module(*x))
        final = float(criterion(final_out, y))
    reasons = []
    bar = 0.01 if classifier else 0.01 * (losses[0] if losses else 1.0)
    if not np.isfinite(final) or final > bar:
        reasons.append(f"the loss on {samples} examples ends at {final:.4g} after {len(losses)} steps "
                       f"(bar {bar:.3g}, started at {losses[0]:.4g}): the model cannot memorise a batch")
    result = MemorizeResult(model.name, False, reasons, losses, len(losses))
    frozen = [n for n, p in module.named_parameters() if torch.equal(p.detach(), start[n])]
    if frozen:
        result.frozen = frozen
        reasons.append(f"{len(frozen)} parameter(s) never changed ({', '.join(frozen[:6])}"
                       f"{'...' if len(frozen) > 6 else ''}): frozen, or cut off from the loss")
    if classifier:
        result.train_accuracy = float((final_out.argmax(1) == y).float().mean())
        if result.train_accuracy < 1.0:
            reasons.append(f"train accuracy {result.train_accuracy:.0%} on the memorised batch, not 100%")
        if len(rest):
            with torch.no_grad():
                predicted = _first(module(*tensors(rest))).argmax(1).numpy()
            truth = np.asarray(dataset.labels)[rest]
            classes = len(np.unique(np.asarray(dataset.labels)))
            result.holdout_accuracy = float((predicted == truth).mean())
            result.chance = 1.0 / max(classes, 1)
            if result.holdout_accuracy < 1.5 * result.chance:
                reasons.append(f"held-out accuracy {result.holdout_accuracy:.0%} is at chance ({result.chance:.0%}): "
                               "the batch was memorised but nothing carried over; labels may not match the inputs")
    result.passed = not reasons
    if out is not None:
        result.plot = _plot(result, Path(out))
    return result


def _first(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    return list(out.values())[0] if isinstance(out, dict) else out[0]


def _plot(result: MemorizeResult, out: Path) -> Optional[str]:
    plt = pyplot()
    if plt is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(result.losses) + 1), result.losses, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.set_title(f"{result.model}: memorising one batch - {'PASS' if result.passed else 'FAIL'}", fontsize=10)
    path = out / "memorize_loss.png"
    save(fig, path)
    return str(path)
