"""The coordinator's side of the wire: Flower records <-> protocol types (shared_model/protocol.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from shared_model.protocol import EvaluateReply, Record, SiteKey, TrainReply, arrays_from_record


def to_array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays by name -> ArrayRecord (names kept as they are)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def declared_site(msg: Message) -> str:
    """The site id a reply declares (``node-<id>`` when it declares none)."""
    site = msg.content.config_records.get(Record.SITE)
    if site and SiteKey.SITE_ID in site:
        return str(site[SiteKey.SITE_ID])
    return f"node-{msg.metadata.src_node_id}"


def parse_train_reply(msg: Message) -> TrainReply:
    """A train reply's records as a :class:`TrainReply` (ProtocolError on a malformed one)."""
    content = msg.content
    arrays = (arrays_from_record(content[Record.ARRAYS])
              if Record.ARRAYS in content.array_records else {})
    metrics = dict(content[Record.METRICS]) if Record.METRICS in content.metric_records else {}
    site = dict(content[Record.SITE]) if Record.SITE in content.config_records else {}
    privacy = content.config_records.get(Record.PRIVACY)
    evaluation = content.metric_records.get(Record.EVALUATION)
    return TrainReply.parse(site, metrics, arrays, dict(privacy) if privacy else None,
                            dict(evaluation) if evaluation is not None else None)


def parse_evaluate_reply(msg: Message) -> EvaluateReply | None:
    """An evaluate reply's metrics, or None when it carries none."""
    if Record.METRICS not in msg.content.metric_records:
        return None
    return EvaluateReply.parse(declared_site(msg), dict(msg.content[Record.METRICS]))
