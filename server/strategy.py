"""Modality-aware federated strategy: FedAvg's round loop, per-group aggregation.

Each parameter group is averaged only over the sites that sent it, weighted by the samples behind
it (see server/aggregation.py); groups nobody updated keep their value. Invalid replies (NaN/Inf,
wrong shapes, unknown names) are rejected with a logged reason and the round goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from client.records import ARRAYS, METRICS, PRIVACY, SITE, from_array_record, group_weights, to_array_record
from server.aggregation import FedAdamState, SiteUpdate, aggregate_groups, validate_update
from server.run_dir import RunDirectory
from server.settings import FederationSettings

log = logging.getLogger(__name__)


def _site_of(msg: Message) -> str:
    site = msg.content.config_records.get(SITE)
    return str(site["site-id"]) if site and "site-id" in site else f"node-{msg.metadata.src_node_id}"


class ModalityAwareStrategy(FedAvg):
    """FedAvg with modality-aware, per-group aggregation, phases, run records and resume."""

    def __init__(self, settings: FederationSettings, run: RunDirectory, *, round_offset: int = 0,
                 server_optimizer: FedAdamState | None = None) -> None:
        super().__init__(fraction_train=settings.fraction_train, fraction_evaluate=1.0,
                         min_train_nodes=settings.min_sites, min_evaluate_nodes=settings.min_sites,
                         min_available_nodes=settings.min_sites)
        self.settings = settings
        self.run = run
        self.round_offset = round_offset
        self.server_optimizer = server_optimizer
        self.current: dict[str, np.ndarray] = {}
        self.last_site_eval: dict[str, dict[str, float]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = from_array_record(arrays)
        config = ConfigRecord({**dict(config),
                               **self.settings.round_config(server_round + self.round_offset),
                               "run-dir": str(self.run.path)})
        return super().configure_train(server_round, arrays, config, grid)

    def _collect(self, rnd: int, replies: list[Message]) -> tuple[list[SiteUpdate], dict, dict]:
        updates, rejected, declined = [], {}, {}
        for msg in replies:
            site = _site_of(msg)
            status = msg.content.config_records.get(SITE, {}).get("status", "trained")
            if status == "declined":
                declined[site] = str(msg.content[SITE].get("reason", ""))
                log.warning("round %d: site %s declined: %s", rnd, site, declined[site])
                continue
            if ARRAYS not in msg.content.array_records or METRICS not in msg.content.metric_records:
                rejected[site] = "reply lacks arrays or metrics"
            else:
                update = SiteUpdate(site, from_array_record(msg.content[ARRAYS]),
                                    group_weights(msg.content[METRICS]))
                reason = validate_update(update, self.current)
                if reason is None:
                    updates.append(update)
                    continue
                rejected[site] = reason
            log.warning("round %d: rejected update of site %s: %s", rnd, site, rejected[site])
        return updates, rejected, declined

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        valid, errors = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        updates, rejected, declined = self._collect(rnd, valid)
        for msg in errors:
            rejected[f"node-{msg.metadata.src_node_id}"] = f"error reply: {msg.error.reason}"
        new, contributors = aggregate_groups(self.current, updates, self.settings.aggregation,
                                             self.settings.trim_fraction)
        if self.server_optimizer is not None and updates:
            touched = {n for u in updates for n in u.arrays}
            new = self.server_optimizer.step(self.current, new, touched)
        site_metrics = {_site_of(m): dict(m.content[METRICS]) for m in valid
                        if METRICS in m.content.metric_records}
        bytes_in = {_site_of(m): m.content[ARRAYS].count_bytes() for m in valid
                    if ARRAYS in m.content.array_records}
        for msg in valid:
            privacy = msg.content.config_records.get(PRIVACY)
            if privacy and "ledger-row" in privacy:
                self.run.append("privacy_ledger.jsonl", json.loads(str(privacy["ledger-row"])))
        for site, metrics in site_metrics.items():
            self.run.append("site_metrics.jsonl", {"round": rnd, "site": site, "kind": "train",
                                                   **metrics})
        loss = _weighted([(m.get("train-loss"), m.get("num-examples", 0))
                          for m in site_metrics.values()])
        self.run.append("rounds.jsonl", {
            "round": rnd, "kind": "train", "phase": self.settings.phase(rnd),
            "contributors": contributors, "rejected": rejected, "declined": declined,
            "bytes_received": bytes_in, "train_loss": loss})
        state = ({"optimizer": "fedadam"} if self.server_optimizer else {"optimizer": "avg"})
        self.run.save_checkpoint(rnd, new, self.server_optimizer.state_arrays()
                                 if self.server_optimizer else {}, state)
        self.current = new
        return to_array_record(new), MetricRecord({"train-loss": loss, "sites": len(updates)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        config = ConfigRecord({**dict(config), "round": server_round + self.round_offset})
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        rnd = server_round + self.round_offset
        valid, _ = self._check_and_log_replies(list(replies), is_train=False, validate=False)
        per_site = {_site_of(m): dict(m.content[METRICS]) for m in valid
                    if METRICS in m.content.metric_records}
        for site, metrics in sorted(per_site.items()):
            self.run.append("site_metrics.jsonl", {"round": rnd, "site": site, "kind": "evaluate",
                                                   **metrics})
        summary = {key: _weighted([(m.get(key), m.get("num-examples", 0)) for m in per_site.values()])
                   for key in ("test.auroc", "test.auprc", "test.f1", "test.loss", "val.auroc")}
        self.run.append("rounds.jsonl", {"round": rnd, "kind": "evaluate", **summary})
        self.last_site_eval = per_site
        return MetricRecord({k: v for k, v in summary.items() if np.isfinite(v)}) if per_site else None


def _weighted(pairs: list[tuple[Any, Any]]) -> float:
    """Sample-weighted mean of finite values (NaN if none)."""
    pairs = [(float(v), float(w)) for v, w in pairs
             if v is not None and np.isfinite(float(v)) and w]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else float("nan")
