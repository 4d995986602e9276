"""``loop.toml``: one model's retraining loop, validated into typed documents.

    model = "digits-cnn"                  # the model's name in the collector
    db = "sqlite:///collector.db"
    workdir = "loop"                      # run directories, data sets, the always-keep set, releases
    current = "out-host.ekb"              # the bundle the fleet runs now
    target = "host"                       # what `edgekit optimize` builds the candidate for
    train = "mypkg.train:fit"             # fit(dataset_dir, current, out_dir) -> nn.Module or a model file
    base_data = "train.npz"               # the current model's training data (earlier knowledge)

    [curation]
    budget = 300                          # examples sent for labelling per run
    window = "7d"
    strategies = { entropy = 1.0, novelty = 1.0 }  # least_confidence, margin, entropy, loss, disagreement,
                                          # novelty, random
    diversity = true                      # k-center greedy over the top candidates' outputs
    rules = ["mypkg.rules:corrected"]     # rows a rule flags are queued first

    [trigger]
    schedule = "7d"                       # periodic
    volume = 200                          # new labelled examples since the last run
    alerts = ["data drift", "estimated accuracy dropped", "feedback accuracy dropped"]
    cooldown = "1d"
    max_runs_per_week = 3

Every path is relative to the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .._schema import Document, SchemaError, field, from_dict, replace
from ..errors import EdgekitError
from ..monitor.rules import parse_duration

class Curation(Document):
    budget: int = 300
    window: str = "7d"
    # Uncertainty finds what the model hesitates on; novelty what it is confidently wrong on
    # (drifted inputs far from anything it learnt from).
    strategies: dict = field(default_factory=lambda: {"entropy": 1.0, "novelty": 1.0})
    diversity: bool = True
    oversample: int = 2  # diversity picks the budget among this many times as many top candidates
    rules: tuple[str, ...] = ()
    other: Optional[str] = None  # the second model for disagreement (a bigger one, or the candidate)
    seed: int = 0
    # The pool from a telemetry lake (edgekit collector lake) instead of the database, read with
    # DuckDB or Spark: the same rows, without a week of raw inputs read from the fleet's database.
    lake: Optional[str] = None
    engine: str = "duckdb"
    spark_master: str = "local[*]"

    def __post_init__(self):
        if self.budget < 1:
            raise EdgekitError("curation.budget must be at least 1")
        from .curate import STRATEGIES  # the registry is the list

        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise EdgekitError(f"unknown curation strategy {unknown[0]!r}", f"use {', '.join(STRATEGIES)}")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.strategies.values()):
            raise EdgekitError("curation.strategies weights must be numbers >= 0", "e.g. { entropy = 1.0, random = 0.2 }")
        if not self.strategies and not self.rules:
            raise EdgekitError("curation needs a strategy or a rule", "e.g. strategies = { entropy = 1.0 }")
        if "disagreement" in self.strategies and not self.other:
            raise EdgekitError("the disagreement strategy needs a second model", "set curation.other = 'big.onnx'")
        parse_duration(self.window, "curation.window")
        from ..lake.read import ENGINES  # the registry is the list

        if self.engine not in ENGINES:
            raise EdgekitError(f"curation.engine = {self.engine!r} is not a lake engine", f"use {' or '.join(ENGINES)}")


class Trigger(Document):
    schedule: Optional[str] = None
    volume: Optional[int] = None
    alerts: tuple[str, ...] = ()
    rules: Optional[str] = None  # the monitor's rules file (default rules otherwise)
    cooldown: str = "1d"
    max_runs_per_week: int = 3

    def __post_init__(self):
        for name in ("schedule", "cooldown"):
            if getattr(self, name) is not None:
                parse_duration(getattr(self, name), f"trigger.{name}")


class DatasetSpec(Document):
    history: int = 2000  # rows of earlier data kept in every data set (a reservoir sample)
    balance: bool = False  # down-sample the new data to its rarest class
    split: tuple[float, ...] = (0.7, 0.15, 0.15)  # train / validation / test, oldest first
    seed: int = 0

    def __post_init__(self):
        if len(self.split) != 3 or abs(sum(self.split) - 1) > 1e-6 or min(self.split) <= 0:
            raise EdgekitError("dataset.split must be three positive shares that sum to 1", "e.g. [0.7, 0.15, 0.15]")


class Gate(Document):
    slices: tuple[str, ...] = ("group", "source")
    formats: Optional[tuple[str, ...]] = None  # what optimize may try (all the target allows otherwise)
    thresholds: dict = field(default_factory=dict)  # report-card thresholds over the loop's defaults
    expect: Optional[str] = None  # an expectation suite the test split must meet
    factory: Optional[str] = None  # module:function building the untrained model: the memorisation check
    inputs: dict = field(default_factory=dict)  # the factory's input -> the data's array, where names differ


class LoopConfig(Document):
    model: str
    db: str
    current: str
    train: str
    workdir: str = "loop"
    target: str = "host"
    base_data: Optional[str] = None
    labeler: Optional[str] = None  # module:function(queue_dir) -> {(device, request_id, row): label}
    label_wait: str = "3d"  # how long a run waits for labels before it forms a data set from what came
    min_new_labels: int = 20  # fewer new labels than this: the run stops (nothing to learn from)
    train_timeout: str = "30m"
    sign_key: Optional[str] = None  # releases are signed with this private key (edgekit package --sign-key)
    publish_store: Optional[str] = None  # hand releases to the fleet: publish into the collector's registry here
    canary: Optional[float] = None  # ... and start a canary rollout on this share of devices (percent)
    canary_min_devices: int = 0  # ... raised until at least this many devices are in it (a small fleet)
    curation: Curation = field(default_factory=Curation)
    trigger: Trigger = field(default_factory=Trigger)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    gate: Gate = field(default_factory=Gate)
    root: str = "."  # the folder relative paths start from (the config file's)

    def __post_init__(self):
        parse_duration(self.label_wait, "label_wait")
        parse_duration(self.train_timeout, "train_timeout")
        if self.canary is not None and not 0 < self.canary <= 100:
            raise EdgekitError(f"canary = {self.canary:g} is not a share of devices",
                               "give a percentage above 0 and at most 100, e.g. canary = 10.0")
        if self.min_new_labels < 1:
            raise EdgekitError(f"min_new_labels = {self.min_new_labels} must be at least 1")

    def path(self, value: Optional[str]) -> Optional[Path]:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else Path(self.root) / p

    @property
    def work(self) -> Path:
        return self.path(self.workdir)

    @property
    def db_url(self) -> str:
        if self.db.startswith("sqlite:///") and not Path(self.db[len("sqlite:///"):]).is_absolute():
            return f"sqlite:///{Path(self.root) / self.db[len('sqlite:///'):]}"
        return self.db

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "LoopConfig":
        from .._io import read_toml

        path = Path(path)
        data = read_toml(path, "loop config", "see 'edgekit loop run --help' for the format")
        data.setdefault("root", str(path.resolve().parent))
        try:
            config = from_dict(cls, data)
        except SchemaError as exc:
            raise EdgekitError(f"{path}: {exc}", "see 'edgekit loop run --help' for the format") from None
        return replace(config, **overrides) if overrides else config
