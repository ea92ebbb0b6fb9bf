"""The message schema between sites and server, and the only numpy <-> Flower record conversion.

A site's train reply holds:
- ``arrays``: an ArrayRecord with only the parameters it updated (canonical names);
- ``metrics``: a MetricRecord with ``num-examples``, one ``weight:<group>`` per updated group
  (the number of local training samples that drove it) and aggregate training metrics;
- ``site``: a ConfigRecord with ``site-id`` and ``status`` (``trained`` or ``declined``) and
  ``reason`` when declined.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

ARRAYS = "arrays"
METRICS = "metrics"
SITE = "site"
CONFIG = "config"
PRIVACY = "privacy"  # DP sites: ConfigRecord {"ledger-row": JSON of the privacy ledger row}
WEIGHT_PREFIX = "weight:"


def to_array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays by name -> ArrayRecord (names kept as they are)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def from_array_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> numpy arrays by name."""
    return {name: array.numpy() for name, array in record.items()}


def train_reply(site_id: str, arrays: Mapping[str, np.ndarray], weights: Mapping[str, int],
                metrics: Mapping[str, float], status: str = "trained", reason: str = ""
                ) -> RecordDict:
    """Build the content of a train reply (see module docstring)."""
    values: dict[str, float | int] = {f"{WEIGHT_PREFIX}{g}": int(n) for g, n in weights.items()}
    values["num-examples"] = int(max(weights.values(), default=0))
    values.update({k: float(v) for k, v in metrics.items()})
    return RecordDict({ARRAYS: to_array_record(arrays), METRICS: MetricRecord(values),
                       SITE: ConfigRecord({"site-id": site_id, "status": status, "reason": reason})})


def group_weights(metrics: MetricRecord) -> dict[str, int]:
    """``weight:<group>`` entries of a reply's MetricRecord."""
    return {k[len(WEIGHT_PREFIX):]: int(v) for k, v in metrics.items() if k.startswith(WEIGHT_PREFIX)}
