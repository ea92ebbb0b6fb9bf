"""Modality-aware federated strategy: FedAvg's sampling and messages, our own aggregation.

The strategy subclasses Flower's FedAvg for what FedAvg's public hooks give: node sampling
(``fraction-train``, ``min-sites``) and the train/evaluate messages. It overrides all four hooks:
``configure_*`` to send the run's typed round config and the run's absolute round number, and to
note which nodes were asked (so silent ones are named); ``aggregate_*`` to replace FedAvg's
aggregation entirely. Each parameter group is averaged only over the sites that sent it, weighted
by the samples behind it (see server/aggregation.py); groups nobody updated keep their value.
Invalid replies (NaN/Inf, wrong shapes, unknown names, malformed records) are rejected with a
logged reason and the round goes on. A train round is four named steps: collect, aggregate, record,
checkpoint. The sites' evaluation of an evaluated round's model comes with the next round's train
replies (``FederationSettings.evaluates_with_next_train``); only the last round, or every round
when just some sites train, sends evaluate messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from server.aggregation import (
    Aggregation,
    FedAdamState,
    SiteUpdate,
    aggregate_groups,
    min_trimmed_contributors,
    trimmed_count,
    validate_update,
)
from server.flower_io import parse_evaluate_reply, parse_train_reply, to_array_record
from server.gate_health import gate_health, log_gate_health
from server.identity import SiteIdentity
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from shared_model.errors import ProtocolError
from shared_model.protocol import (
    ROUND,
    SPLIT_METRICS,
    TRAIN_LOSS,
    EvaluateConfig,
    EvaluateReply,
    Record,
    SiteStatus,
    TrainReply,
    arrays_from_record,
    split_key,
)

log = logging.getLogger(__name__)
SUMMARY_KEYS = tuple(split_key("test", m) for m in SPLIT_METRICS) + (split_key("val", "auroc"),)


@dataclass
class CollectedRound:
    """A train round's replies sorted into accepted updates, rejections and declines."""

    updates: list[SiteUpdate] = field(default_factory=list)
    replies: dict[str, TrainReply] = field(default_factory=dict)  # accepted, by site
    rejected: dict[str, str] = field(default_factory=dict)  # site -> reason
    declined: dict[str, str] = field(default_factory=dict)  # site -> reason
    no_reply: dict[str, str] = field(default_factory=dict)  # sampled site -> reason
    evaluations: dict[str, EvaluateReply] = field(default_factory=dict)  # of the received model
    ledger_rows: list[dict[str, Any]] = field(default_factory=list)
    bytes_received: dict[str, int] = field(default_factory=dict)


class ModalityAwareStrategy(FedAvg):
    """FedAvg's sampling with modality-aware, per-group aggregation, phases, run records, resume.

    Args:
        settings: the run's federation settings (rounds, phases, aggregation, min sites).
        run: the run directory its records and checkpoints go to.
        round_offset: rounds already done (a resumed run's Flower round 1 is round offset + 1).
        server_optimizer: FedAdam state applied after averaging (None: plain averaging).
        sites_manifest: simulation only: the manifest the ClientApps read their node config from.
        identity: maps node ids to registered site names (deployment) or site-id claims.
    """

    def __init__(self, settings: FederationSettings, run: RunDirectory, *, round_offset: int = 0,
                 server_optimizer: FedAdamState | None = None, sites_manifest: str = "",
                 identity: SiteIdentity | None = None) -> None:
        super().__init__(fraction_train=settings.fraction_train, fraction_evaluate=1.0,
                         min_train_nodes=settings.min_sites, min_evaluate_nodes=settings.min_sites,
                         min_available_nodes=settings.min_sites)
        self.settings = settings
        self.run = run
        self.round_offset = round_offset
        self.server_optimizer = server_optimizer
        self.sites_manifest = sites_manifest
        self.current: dict[str, np.ndarray] = {}
        self.last_site_eval: dict[str, EvaluateReply] = {}
        self.trained_rounds: list[int] = []  # rounds in which at least one update was accepted
        self.identity = identity or SiteIdentity()
        self._sampled: set[int] = set()  # node ids sent the current round's messages
        self._sent: list[Message] = []
        self._sent_at, self._sent_wall = time.perf_counter(), time.time()
        self._evaluating = True  # whether this round's evaluation was sent (evaluate-every)
        self._untrimmed_groups: set[str] = set()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = arrays_from_record(arrays)
        rnd = server_round + self.round_offset
        record = replace(self.settings.round_config(rnd, self.sites_manifest),
                         evaluate_incoming=self._carries_previous_evaluation(rnd)).to_record()
        messages = _with_round(super().configure_train(server_round, arrays, ConfigRecord(record),
                                                       grid), rnd)
        self._remember_sent(messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        seconds = self._seconds_since_sent()
        collected = self.collect(rnd, replies)
        if self._carries_previous_evaluation(rnd):
            refused = {site: reason for site, reason in collected.rejected.items()
                       if site not in collected.evaluations}  # the reply itself was refused
            self.record_evaluation(rnd - 1, collected.evaluations, refused, collected.no_reply,
                                   {"with_train_round": rnd})
        if collected.updates:
            self.trained_rounds.append(rnd)
        else:
            log.error("round %d: no site contributed an update; the global model is unchanged", rnd)
        started = time.perf_counter()
        new, contributors = self.aggregate(collected)
        seconds["aggregate"] = round(time.perf_counter() - started, 3)
        loss = self.record_train_round(rnd, collected, contributors, seconds)
        self.checkpoint(rnd, new)
        self.current = new
        return to_array_record(new), MetricRecord({TRAIN_LOSS: loss, "sites": len(collected.updates)})

    def _carries_previous_evaluation(self, rnd: int) -> bool:
        """Whether round ``rnd``'s train messages carry round ``rnd - 1``'s evaluation: not when
        that round ran before a resume (its evaluation, if any, was then sent or is lost)."""
        return rnd - 1 > self.round_offset and self.settings.evaluates_with_next_train(rnd - 1)

    def _remember_sent(self, messages: list[Message]) -> None:
        """The phase's messages (Flower sets each one's message id when it pushes it)."""
        self._sent = messages
        self._sampled = {m.metadata.dst_node_id for m in messages}
        self._sent_at = time.perf_counter()
        self._sent_wall = time.time()

    def _addressee(self, msg: Message) -> int:
        """The node a reply is about. An error reply made by the SuperLink itself (e.g. "Node
        Unavailable" for a SuperNode that went offline) carries the SuperLink's id as its source,
        so it is matched to the message it answers."""
        if msg.has_error():
            sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent}
            return sent.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
        return msg.metadata.src_node_id

    def _error_replies(self, errors: list[Message]) -> dict[str, str]:
        """Site -> the error and when it came, one entry per site under its registered name."""
        return {self.identity.name(self._addressee(msg)):
                f"error reply: {msg.error.reason} "
                f"({max(0.0, msg.metadata.created_at - self._sent_wall):.0f} s after sending)"
                for msg in errors}

    def _seconds_since_sent(self) -> dict[str, float]:
        """``sent_at``: wall-clock time the phase's messages went out; ``sites``: seconds until
        the replies were back (delivery, the sites' work, the replies)."""
        elapsed = time.perf_counter() - self._sent_at
        return {"sent_at": round(time.time() - elapsed, 3), "sites": round(elapsed, 3)}

    def collect(self, rnd: int, replies: Iterable[Message]) -> CollectedRound:
        """Parse and validate each reply; a bad one is rejected with its reason, never fatal."""
        replies = list(replies)
        valid, errors = _split_errors(rnd, "train", replies)
        out = CollectedRound(no_reply=self._silent(replies), rejected=self._error_replies(errors))
        for msg, site, refused in self.identity.identify_all(valid):
            if refused:
                out.rejected[site] = refused
                continue
            try:
                reply = parse_train_reply(msg)
            except ProtocolError as err:
                out.rejected[site] = str(err)
                continue
            if reply.ledger_row is not None:
                out.ledger_rows.append(reply.ledger_row)
            if reply.evaluation is not None:
                out.evaluations[site] = replace(reply.evaluation, site_id=site)
            if reply.status is SiteStatus.DECLINED:
                out.declined[site] = reply.reason
                continue
            out.bytes_received[site] = msg.content[Record.ARRAYS].count_bytes() if reply.arrays else 0
            update = SiteUpdate(site, reply.arrays, reply.group_weights)
            reason = validate_update(update, self.current) if reply.arrays else "reply lacks arrays"
            if reason is None:
                out.updates.append(update)
                out.replies[site] = reply
            else:
                out.rejected[site] = reason
        for site, reason in out.declined.items():
            log.warning("round %d: site %s declined: %s", rnd, site, reason)
        for site, reason in out.rejected.items():
            log.warning("round %d: rejected update of site %s: %s", rnd, site, reason)
        for site, reason in out.no_reply.items():
            log.warning("round %d: site %s sent nothing: %s", rnd, site, reason)
        return out

    def _silent(self, replies: list[Message]) -> dict[str, str]:
        """Sampled sites that did not answer (killed, disconnected, or slower than the timeout)."""
        answered = {self._addressee(m) for m in replies}
        waited = time.perf_counter() - self._sent_at
        return {self.identity.name(node): f"no reply in the {waited:.0f} s the round waited "
                f"(round-timeout {self.settings.round_timeout:g} s)"
                for node in self._sampled - answered}

    def aggregate(self, collected: CollectedRound
                  ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
        """Per-group aggregation of the accepted updates, then the server optimizer if any."""
        new, contributors = aggregate_groups(self.current, collected.updates,
                                             self.settings.aggregation, self.settings.trim_fraction)
        if self.settings.aggregation == Aggregation.TRIMMED_MEAN:
            self._warn_untrimmed(contributors)
        if self.server_optimizer is not None and collected.updates:
            touched = {n for u in collected.updates for n in u.arrays}
            new = self.server_optimizer.step(self.current, new, touched)
        return new, contributors

    def _warn_untrimmed(self, contributors: dict[str, dict[str, int]]) -> None:
        """Trimmed mean trims nothing where floor(trim x contributors) is 0: say so once per group."""
        for group, sites in contributors.items():
            if trimmed_count(len(sites), self.settings.trim_fraction) == 0 and \
                    group not in self._untrimmed_groups:
                self._untrimmed_groups.add(group)
                log.warning("trimmed-mean: group %s has %d contributor(s); trim-fraction %.2f trims "
                            "none of them, so it is a weighted mean (needs >= %d contributors)",
                            group, len(sites), self.settings.trim_fraction,
                            min_trimmed_contributors(self.settings.trim_fraction))

    def record_train_round(self, rnd: int, collected: CollectedRound,
                           contributors: dict[str, dict[str, int]],
                           seconds: dict[str, float] | None = None) -> float:
        """Ledger rows, per-site training metrics and the round's line in rounds.jsonl
        (``seconds``: messages handed to Flower -> replies back, and the aggregation)."""
        for row in collected.ledger_rows:
            self.run.append("privacy_ledger.jsonl", row)
        for site, reply in collected.replies.items():
            self.run.append("site_metrics.jsonl", {"round": rnd, "site": site, "kind": "train",
                                                   **reply.metrics()})
        loss = _weighted([(r.train_loss, r.num_examples) for r in collected.replies.values()])
        self.run.append("rounds.jsonl", {
            "round": rnd, "kind": "train", "phase": str(self.settings.phase(rnd)),
            "contributors": contributors, "rejected": collected.rejected,
            "declined": collected.declined, "no_reply": collected.no_reply,
            "bytes_received": collected.bytes_received,
            "accepted": sorted(collected.replies), "train_loss": loss, "seconds": seconds or {}})
        return loss

    def checkpoint(self, rnd: int, arrays: dict[str, np.ndarray]) -> None:
        optimizer = self.server_optimizer
        self.run.save_checkpoint(rnd, arrays, optimizer.state_arrays() if optimizer else {},
                                 {"optimizer": "fedadam" if optimizer else "avg"})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        rnd = server_round + self.round_offset
        # evaluate-every: no messages this round; or the evaluation comes with the next round's
        # train replies (``evaluates_with_next_train``)
        self._evaluating = (self.settings.evaluates(rnd)
                            and not self.settings.evaluates_with_next_train(rnd))
        if not self._evaluating:
            return []
        record = ConfigRecord(EvaluateConfig(rnd, self.sites_manifest).to_record())
        messages = _with_round(super().configure_evaluate(server_round, arrays, record, grid), rnd)
        self._remember_sent(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        rnd = server_round + self.round_offset
        if not self._evaluating:
            return None
        seconds = self._seconds_since_sent()
        replies = list(replies)
        valid, errors = _split_errors(rnd, "evaluate", replies)
        per_site: dict[str, EvaluateReply] = {}
        refused: dict[str, str] = self._error_replies(errors)
        for msg, site, problem in self.identity.identify_all(valid):
            reply = parse_evaluate_reply(msg)
            if problem:
                refused[site] = problem
                log.warning("round %d: rejected evaluation of site %s: %s", rnd, site, problem)
            elif reply is not None:
                per_site[site] = replace(reply, site_id=site)
        summary = self.record_evaluation(rnd, per_site, refused, self._silent(replies), seconds)
        return MetricRecord({k: v for k, v in summary.items() if np.isfinite(v)}) if per_site else None

    def record_evaluation(self, rnd: int, per_site: dict[str, EvaluateReply],
                          refused: dict[str, str], no_reply: dict[str, str],
                          seconds: dict[str, Any]) -> dict[str, float]:
        """Each site's evaluation of round ``rnd``'s global model and the round's summary line
        (from evaluate replies, or from the next round's train replies: ``seconds`` then says
        ``with_train_round``); returns the summary."""
        for site, reply in sorted(per_site.items()):
            self.run.append("site_metrics.jsonl", {"round": rnd, "site": site, "kind": "evaluate",
                                                   **reply.metrics()})
        summary = {key: _weighted([(r.get(*key.split(".")), r.num_examples)
                                   for r in per_site.values()]) for key in SUMMARY_KEYS}
        health = gate_health(list(per_site.values()))
        log_gate_health(rnd, health, self.settings.phase(rnd))
        self.run.append("rounds.jsonl", {"round": rnd, "kind": "evaluate", **summary,
                                         "gate": health, "rejected": refused,
                                         "no_reply": no_reply, "seconds": seconds})
        self.last_site_eval = per_site
        return summary


def _split_errors(rnd: int, phase: str, replies: list[Message]
                  ) -> tuple[list[Message], list[Message]]:
    """Replies with content, and error replies (a ClientApp that raised, or the SuperLink's own
    reply for a node that went away). FedAvg's consistency check is not used: a reply that lacks
    a record is rejected by the protocol parser with the site's name, never fatal."""
    errors = [msg for msg in replies if msg.has_error()]
    log.info("round %d %s: %d replies, %d errors", rnd, phase, len(replies) - len(errors),
             len(errors))
    return [msg for msg in replies if not msg.has_error()], errors


def _with_round(messages: Iterable[Message], rnd: int) -> list[Message]:
    """Flower writes its own round count into ``server-round``; after a resume that count starts
    again at 1, so set the run's absolute round instead (the one round number on the wire)."""
    out = list(messages)
    for msg in out:
        msg.content[Record.CONFIG][ROUND] = rnd
    return out


def _weighted(pairs: list[tuple[Any, Any]]) -> float:
    """Sample-weighted mean of finite values (NaN if none)."""
    pairs = [(float(v), float(w)) for v, w in pairs
             if v is not None and np.isfinite(float(v)) and w]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else float("nan")

