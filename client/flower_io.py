"""The site's side of the wire: protocol types (shared_model/protocol.py) <-> Flower records."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from shared_model.protocol import (
    EvaluateConfig,
    EvaluateReply,
    Record,
    RoundConfig,
    SiteKey,
    TrainReply,
)


def to_array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays by name -> ArrayRecord (names kept as they are)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def from_array_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> numpy arrays by name."""
    return {name: array.numpy() for name, array in record.items()}


def global_arrays(msg: Message) -> dict[str, np.ndarray]:
    return from_array_record(msg.content[Record.ARRAYS])


def round_config(msg: Message) -> RoundConfig:
    return RoundConfig.from_record(dict(msg.content[Record.CONFIG]))


def evaluate_config(msg: Message) -> EvaluateConfig:
    return EvaluateConfig.from_record(dict(msg.content[Record.CONFIG]))


def train_reply_content(reply: TrainReply) -> RecordDict:
    content = RecordDict({Record.ARRAYS: to_array_record(reply.arrays),
                          Record.METRICS: MetricRecord(reply.metrics()),
                          Record.SITE: ConfigRecord(reply.site_record())})
    privacy = reply.privacy_record()
    if privacy is not None:
        content[Record.PRIVACY] = ConfigRecord(privacy)
    return content


def evaluate_reply_content(reply: EvaluateReply) -> RecordDict:
    return RecordDict({Record.METRICS: MetricRecord(reply.metrics()),
                       Record.SITE: ConfigRecord(reply.site_record())})


def withheld_evaluation_content(site_id: str) -> RecordDict:
    """An evaluate reply without metrics (a DP site that does not share its evaluation)."""
    return RecordDict({Record.SITE: ConfigRecord({SiteKey.SITE_ID: site_id})})
