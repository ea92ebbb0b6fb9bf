"""The site's side of the wire: protocol types (shared_model/protocol.py) <-> Flower records."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from shared_model.protocol import (
    EvaluateConfig,
    EvaluateReply,
    Record,
    RoundConfig,
    SiteKey,
    TrainReply,
    arrays_from_record,
)


def global_arrays(msg: Message) -> dict[str, np.ndarray]:
    return arrays_from_record(msg.content[Record.ARRAYS])


def round_config(msg: Message) -> RoundConfig:
    return RoundConfig.from_record(dict(msg.content[Record.CONFIG]))


def evaluate_config(msg: Message) -> EvaluateConfig:
    return EvaluateConfig.from_record(dict(msg.content[Record.CONFIG]))


def train_reply_content(reply: TrainReply) -> RecordDict:
    arrays = ArrayRecord({name: Array(np.ascontiguousarray(value))  # names kept as they are
                          for name, value in reply.arrays.items()})
    content = RecordDict({Record.ARRAYS: arrays,
                          Record.METRICS: MetricRecord(reply.metrics()),
                          Record.SITE: ConfigRecord(reply.site_record())})
    privacy = reply.privacy_record()
    if privacy is not None:
        content[Record.PRIVACY] = ConfigRecord(privacy)
    if reply.evaluation is not None:
        content[Record.EVALUATION] = MetricRecord(reply.evaluation.metrics())
    return content


def evaluate_reply_content(reply: EvaluateReply) -> RecordDict:
    return RecordDict({Record.METRICS: MetricRecord(reply.metrics()),
                       Record.SITE: ConfigRecord(reply.site_record())})


def withheld_evaluation_content(site_id: str) -> RecordDict:
    """An evaluate reply without metrics (a DP site that does not share its evaluation)."""
    return RecordDict({Record.SITE: ConfigRecord({SiteKey.SITE_ID: site_id})})
