"""The wire protocol between coordinator and sites: every record name and key, declared once.

Plain Python and numpy, no flwr: ``client/flower_io.py`` and ``server/flower_io.py`` turn these
types into Flower records and back. A message's RecordDict holds named records:

- server -> site, train: ``arrays`` (global model) + ``config`` (:class:`RoundConfig`);
- server -> site, evaluate: ``arrays`` + ``config`` (:class:`EvaluateConfig`);
- site -> server, train: :class:`TrainReply` as ``arrays`` (only the updated parameters),
  ``metrics`` (sample counts per group, training metrics), ``site`` (identity and status) and,
  at DP sites, ``privacy`` (the ledger row of the round);
- site -> server, evaluate: :class:`EvaluateReply` as ``metrics`` + ``site``.

The round number is Flower's own ``server-round`` key, set by the strategy to the absolute round
of the run (it keeps counting after a resume), and nothing else carries a round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np

from shared_model.errors import ProtocolError

ConfigValue = int | float | str | bool


class Record(StrEnum):
    """Names of the records in a message's RecordDict."""

    ARRAYS = "arrays"
    CONFIG = "config"
    METRICS = "metrics"
    SITE = "site"
    PRIVACY = "privacy"
    EVALUATION = "evaluation"  # train reply: the metrics of the model the site received


class SiteKey(StrEnum):
    """Keys of the ``site`` ConfigRecord of every reply."""

    SITE_ID = "site-id"
    STATUS = "status"
    REASON = "reason"


class SiteStatus(StrEnum):
    TRAINED = "trained"
    DECLINED = "declined"  # DP budget exhausted: no arrays, a ledger row saying why


class Phase(StrEnum):
    PRETRAIN = "pretrain"  # each expert learns only from samples of its own combination
    JOINT = "joint"


class AggregationRule(StrEnum):
    MODALITY_AWARE = "modality-aware"  # each group over the sites that trained it
    FEDAVG_ALL = "fedavg-all"  # baseline: every site sends every parameter, weighted by its size


class NodeConfigKey(StrEnum):
    """Keys of a SuperNode's node config (a hospital's site YAML, or a simulated site's entry in
    the sites manifest); the site's ``dp-*`` keys are declared with its DP settings
    (client/privacy/settings.py)."""

    PARTITION_ID = "partition-id"  # simulation only (set by Flower)
    NUM_PARTITIONS = "num-partitions"  # simulation only (set by Flower)
    SITE_ID = "site-id"
    DATA_DIR = "data-dir"
    FEATURE_DIR = "feature-dir"
    CACHE_DIR = "cache-dir"
    PRIVACY_DIR = "privacy-dir"
    STATE_DIR = "state-dir"  # the site's writable folder for site-local logs (default: data-dir)
    TEXT_MODEL = "text-model"
    IMAGE_WEIGHTS = "image-weights"
    MODALITIES = "modalities"  # comma list of the modalities the site declares it has
    MIN_CELL_SIZE = "min-cell-size"  # smallest group of patients any sent value may derive from


ROUND = "server-round"  # Flower's key; the strategy sets it to the run's absolute round
SITES_MANIFEST = "sites-manifest"  # simulation only: where the ServerApp wrote the sites manifest


def arrays_from_record(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A Flower ``ArrayRecord`` -> numpy arrays by name. Duck-typed (each value has Flower's
    ``Array.numpy()``) so that this module, shared by both sides, needs no flwr import."""
    return {name: array.numpy() for name, array in record.items()}


def _require(record: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in record:
        raise ProtocolError(f"{where}: missing key '{key}'")
    try:
        return kind(record[key])
    except (TypeError, ValueError):
        raise ProtocolError(f"{where}: key '{key}' = {record[key]!r} is not {kind.__name__}") from None


@dataclass(frozen=True)
class RoundConfig:
    """What the server tells every site for one training round (the train message's config)."""

    server_round: int
    num_rounds: int  # rounds of the whole run (a DP site plans its budget for them)
    phase: Phase
    local_epochs: int
    lr: float
    batch_size: int
    alpha: float
    proximal_mu: float
    seed: int
    aggregation_rule: AggregationRule
    evaluate_incoming: bool = False  # also evaluate the received model (the last round's)
    sites_manifest: str = ""

    _KEYS = {"server_round": ROUND, "sites_manifest": SITES_MANIFEST}

    @classmethod
    def key(cls, attribute: str) -> str:
        """Wire key of a field: ``server_round`` -> ``server-round``, ``lr`` -> ``lr``."""
        return cls._KEYS.get(attribute, attribute.replace("_", "-"))

    def to_record(self) -> dict[str, ConfigValue]:
        return {self.key(f.name): (str(v) if isinstance(v := getattr(self, f.name), StrEnum) else v)
                for f in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RoundConfig:
        where = "train config"
        kinds = {"server_round": int, "num_rounds": int, "phase": Phase, "local_epochs": int, "lr": float,
                 "batch_size": int, "alpha": float, "proximal_mu": float, "seed": int,
                 "aggregation_rule": AggregationRule}
        values = {name: _require(record, cls.key(name), kind, where) for name, kind in kinds.items()}
        # optional: a coordinator from before it existed never asks (a site upgraded first
        # keeps training with it instead of failing every round)
        incoming = record.get(cls.key("evaluate_incoming"), False) is True
        return cls(**values, evaluate_incoming=incoming,
                   sites_manifest=str(record.get(SITES_MANIFEST, "")))


@dataclass(frozen=True)
class EvaluateConfig:
    """What the server tells every site for one evaluation round."""

    server_round: int
    sites_manifest: str = ""

    def to_record(self) -> dict[str, ConfigValue]:
        return {ROUND: self.server_round, SITES_MANIFEST: self.sites_manifest}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvaluateConfig:
        return cls(_require(record, ROUND, int, "evaluate config"),
                   str(record.get(SITES_MANIFEST, "")))


# --- metric keys (MetricRecord of replies; also the columns of site_metrics.jsonl) -------------
NUM_EXAMPLES = "num-examples"
WEIGHT_PREFIX = "weight:"  # weight:<group> = training samples behind that parameter group
TRAIN_LOSS = "train-loss"
TRAIN_EXAMPLES = "train-examples"
EPSILON = "epsilon"
LEDGER_ROW = "ledger-row"  # key of the ``privacy`` ConfigRecord: the ledger row as JSON
SPLITS = ("val", "test")
SPLIT_METRICS = ("auroc", "auprc", "f1", "loss")  # per split; the server averages them over sites
TEST_EXTRAS = ("auroc_low", "auroc_high", "positives")  # test split: bootstrap 95% interval, count
MIN_CELL_SIZE = 10  # default: no value derived from fewer patients leaves a site (site YAML)
POOLED_PREFIX = "pooled."  # centralized evaluation on the pooled test split (simulation)
RELIABILITY = "reliability"  # pooled.reliability.{predicted,observed,count}: lists per bin
DECISION_CURVE = "decision_curve"  # pooled.decision_curve.{threshold,model,treat_all}: lists
DECISION_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 51))  # the decision curve's
STATED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)  # pooled.{sensitivity,specificity,ppv}@<t>
SUBGROUP = "subgroup"  # pooled.subgroup.<dimension>.<value>.<metric> (client/rounds/clinical.py)


def split_key(split: str, metric: str) -> str:
    """``test.auroc``: a metric of the global model on one of the site's splits."""
    return f"{split}.{metric}"


def combination_key(combination: str, metric: str) -> str:
    """``test.ehr+notes.auroc``: a test metric on the samples of one modality combination."""
    return f"test.{combination}.{metric}"


SUBGROUP_METRICS = ("n", "positives", "auroc", "auroc_low", "auroc_high", "calibration_intercept",
                    "brier")
SUBGROUP_SUPPRESSED = "suppressed"  # the whole dimension withheld (client/rounds/clinical.py)
SITE_SUBGROUPS = {"sex": ("female", "male"), "age": ("18-49", "50-64", "65-79", "80+")}
# ... and "modalities": the combinations; a site reports these, the simulation adds care units
# and sites on the pooled test data


def subgroup_key(dimension: str, group: str, metric: str) -> str:
    """``subgroup.sex.female.auroc``; ``subgroup_key(d, "", SUBGROUP_SUPPRESSED)`` for a
    withheld dimension."""
    return ".".join(part for part in (SUBGROUP, dimension, group, metric) if part)


def parse_subgroup_key(key: str) -> tuple[str, str, str] | None:
    """The inverse of ``subgroup_key``: ``(dimension, group, metric)``, with group ``""`` for a
    withheld dimension; None when ``key`` is not a subgroup key."""
    head, _, rest = key.partition(".")
    if head != SUBGROUP or "." not in rest:
        return None
    dimension, rest = rest.split(".", 1)
    group, metric = rest.rsplit(".", 1) if "." in rest else ("", rest)
    return dimension, group, metric


def route_key(combination: str, expert: str) -> str:
    """``route.ehr+notes.ehr+cxr``: mean routing weight of an expert on one combination."""
    return f"route.{combination}.{expert}"


def pooled_key(metric: str) -> str:
    """``pooled.auroc``: a metric of the centralized evaluation."""
    return f"{POOLED_PREFIX}{metric}"


@dataclass(frozen=True)
class TrainReply:
    """A site's answer to a train message."""

    site_id: str
    arrays: dict[str, np.ndarray]
    group_weights: dict[str, int]
    status: SiteStatus = SiteStatus.TRAINED
    reason: str = ""
    train_loss: float | None = None  # not sent by DP sites (computed without noise)
    train_examples: int | None = None  # not sent by DP sites (the training-set size)
    epsilon: float | None = None
    ledger_row: dict[str, Any] | None = None
    evaluation: EvaluateReply | None = None  # of the received model (``evaluate-incoming``)

    @property
    def num_examples(self) -> int:
        """Samples behind the largest group (Flower's sample-count convention)."""
        return int(max(self.group_weights.values(), default=0))

    def site_record(self) -> dict[str, ConfigValue]:
        return {SiteKey.SITE_ID: self.site_id, SiteKey.STATUS: str(self.status),
                SiteKey.REASON: self.reason}

    def metrics(self) -> dict[str, int | float]:
        values: dict[str, int | float] = {f"{WEIGHT_PREFIX}{g}": int(n)
                                          for g, n in self.group_weights.items()}
        values[NUM_EXAMPLES] = self.num_examples
        if self.train_examples is not None:
            values[TRAIN_EXAMPLES] = int(self.train_examples)
        if self.train_loss is not None:
            values[TRAIN_LOSS] = float(self.train_loss)
        if self.epsilon is not None:
            values[EPSILON] = float(self.epsilon)
        return values

    def privacy_record(self) -> dict[str, ConfigValue] | None:
        return None if self.ledger_row is None else {LEDGER_ROW: json.dumps(self.ledger_row)}

    @classmethod
    def parse(cls, site: Mapping[str, Any], metrics: Mapping[str, Any],
              arrays: dict[str, np.ndarray], privacy: Mapping[str, Any] | None,
              evaluation: Mapping[str, Any] | None = None) -> TrainReply:
        """The reply from its records (raises :class:`ProtocolError` naming the bad key)."""
        site_id = _require(site, SiteKey.SITE_ID, str, "train reply site record")
        where = f"train reply of site '{site_id}'"
        status = _require(site, SiteKey.STATUS, SiteStatus, where)
        weights = {k[len(WEIGHT_PREFIX):]: int(v) for k, v in metrics.items()
                   if k.startswith(WEIGHT_PREFIX)}
        row = json.loads(str(privacy[LEDGER_ROW])) if privacy and LEDGER_ROW in privacy else None
        return cls(site_id, arrays, weights, status, str(site.get(SiteKey.REASON, "")),
                   _optional_float(metrics, TRAIN_LOSS),
                   int(metrics[TRAIN_EXAMPLES]) if TRAIN_EXAMPLES in metrics else None,
                   _optional_float(metrics, EPSILON), row,
                   EvaluateReply.parse(site_id, evaluation) if evaluation is not None else None)


def _optional_float(values: Mapping[str, Any], key: str) -> float | None:
    return float(values[key]) if key in values else None


@dataclass(frozen=True)
class EvaluateReply:
    """A site's aggregate metrics of the global model: no value per patient, and none derived
    from fewer than the site's minimum cell size of patients (see client/rounds/federated.py)."""

    site_id: str
    num_examples: int
    splits: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    by_combination: dict[str, dict[str, float]] = field(default_factory=dict)  # combo -> auroc, n
    routing: dict[str, dict[str, float]] = field(default_factory=dict)  # combo -> expert -> weight
    subgroups: dict[str, float] = field(default_factory=dict)  # subgroup.<dim>.<value>.<metric>

    def site_record(self) -> dict[str, ConfigValue]:
        return {SiteKey.SITE_ID: self.site_id}

    def metrics(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {NUM_EXAMPLES: int(self.num_examples)}
        for split, values in self.splits.items():
            out.update({split_key(split, k): float(v) for k, v in values.items()})
        for combo, values in self.by_combination.items():
            out.update({combination_key(combo, k): float(v) for k, v in values.items()})
        for combo, experts in self.routing.items():
            out.update({route_key(combo, e): float(w) for e, w in experts.items()})
        out.update({k: float(v) for k, v in self.subgroups.items()})
        return out

    @classmethod
    def parse(cls, site_id: str, metrics: Mapping[str, Any]) -> EvaluateReply:
        """The reply from its flat metrics (also a row of site_metrics.jsonl)."""
        splits: dict[str, dict[str, float]] = {}
        combos: dict[str, dict[str, float]] = {}
        routing: dict[str, dict[str, float]] = {}
        subgroups: dict[str, float] = {}
        for key, value in metrics.items():
            if value is None or key == NUM_EXAMPLES:
                continue
            head, _, rest = key.partition(".")
            if parse_subgroup_key(key) is not None:
                subgroups[key] = float(value)
            elif head == "route" and "." in rest:
                combo, expert = rest.rsplit(".", 1)
                routing.setdefault(combo, {})[expert] = float(value)
            elif head == "test" and "." in rest:
                combo, metric = rest.rsplit(".", 1)
                combos.setdefault(combo, {})[metric] = float(value)
            elif head in SPLITS and (rest in SPLIT_METRICS or rest in TEST_EXTRAS):
                splits.setdefault(head, {})[rest] = float(value)
        return cls(site_id, int(metrics.get(NUM_EXAMPLES, 0)), splits, combos, routing,
                   subgroups)

    def get(self, split: str, metric: str) -> float:
        return self.splits.get(split, {}).get(metric, math.nan)
