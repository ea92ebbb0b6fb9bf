"""The wire protocol: every key the sites send is declared, builders and parsers agree, and both
sides (client and server Flower adapters) read what the other writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, Metadata

from client.data.dataset import SiteData
from client.flower_io import evaluate_reply_content, train_reply_content
from client.rounds.federated import local_evaluate
from client.site.manifest import simulated_node_config, write_manifest
from server.flower_io import parse_evaluate_reply, parse_train_reply
from server.settings import FederationSettings
from shared_model import build_model
from shared_model.errors import ProtocolError
from shared_model.modalities import COMBINATIONS
from shared_model.params import model_to_arrays
from shared_model.protocol import (
    NUM_EXAMPLES,
    ROUND,
    SITE_SUBGROUPS,
    SPLIT_METRICS,
    SUBGROUP_METRICS,
    SUBGROUP_SUPPRESSED,
    TEST_EXTRAS,
    EvaluateReply,
    Phase,
    RoundConfig,
    SiteStatus,
    TrainReply,
    combination_key,
    parse_subgroup_key,
    route_key,
    split_key,
    subgroup_key,
)


def _as_reply(content, node: int = 7) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="i", group_id="1", created_at=0.0, ttl=60.0,
                    message_type="train")
    return Message(content, metadata=meta)


@pytest.fixture(scope="module")
def site(synth_features) -> SiteData:
    return SiteData.load(synth_features, "mortality", "site-a")


def test_round_config_round_trips_and_names_a_missing_key() -> None:
    cfg = FederationSettings(pretrain_rounds=2).round_config(3, "/tmp/sites.json")
    record = cfg.to_record()
    assert record[ROUND] == 3 and "round" not in record  # one round number on the wire
    assert RoundConfig.from_record(record) == cfg and cfg.phase is Phase.JOINT
    assert not RoundConfig.from_record({**record, "evaluate-incoming": "yes"}).evaluate_incoming
    del record["evaluate-incoming"]  # a coordinator from before it: never asks
    assert RoundConfig.from_record(record) == cfg
    del record["lr"]
    with pytest.raises(ProtocolError, match="train config: missing key 'lr'"):
        RoundConfig.from_record(record)


def test_local_evaluate_sends_only_declared_keys_and_the_server_reads_them(site) -> None:
    arrays = model_to_arrays(build_model())
    reply = local_evaluate(site, build_model().config, arrays, "site-a", min_cell_size=1)
    metrics = reply.metrics()
    declared = {NUM_EXAMPLES} | {split_key("test", m) for m in TEST_EXTRAS}
    declared |= {split_key(s, m) for s in ("val", "test") for m in SPLIT_METRICS}
    declared |= {combination_key(c, m) for c in COMBINATIONS for m in ("auroc", "n")}
    declared |= {route_key(c, e) for c in COMBINATIONS for e in COMBINATIONS}
    groups = SITE_SUBGROUPS | {"modalities": COMBINATIONS}
    declared |= {subgroup_key(d, g, m) for d, values in groups.items() for g in values
                 for m in SUBGROUP_METRICS} | {subgroup_key(d, "", SUBGROUP_SUPPRESSED)
                                               for d in groups}
    assert set(metrics) <= declared, set(metrics) - declared
    assert any(key.startswith("subgroup.sex.") for key in metrics)
    assert metrics[NUM_EXAMPLES] == site.size("test")
    for combo, experts in reply.routing.items():  # mean gate weights: a distribution per combo
        assert math.isclose(sum(experts.values()), 1.0, abs_tol=1e-3), combo
    parsed = parse_evaluate_reply(_as_reply(evaluate_reply_content(reply)))
    assert parsed == EvaluateReply.parse("site-a", metrics)
    assert parsed.splits.keys() == reply.splits.keys() and parsed.routing == reply.routing
    assert parsed.get("test", "auroc") == pytest.approx(reply.splits["test"]["auroc"])


def test_train_reply_round_trips_with_ledger_row_and_status() -> None:
    arrays = {"gate.0.bias": np.arange(3, dtype=np.float32)}
    sent = TrainReply("site-a", arrays, {"gate": 40}, train_loss=0.5, train_examples=40,
                      epsilon=1.5, ledger_row={"round": 2, "epsilon": 1.5})
    got = parse_train_reply(_as_reply(train_reply_content(sent)))
    assert got.site_id == "site-a" and got.status is SiteStatus.TRAINED
    assert got.group_weights == {"gate": 40} and got.num_examples == 40
    assert got.ledger_row == {"round": 2, "epsilon": 1.5} and got.epsilon == 1.5
    assert np.array_equal(got.arrays["gate.0.bias"], arrays["gate.0.bias"])
    declined = TrainReply("site-b", {}, {}, SiteStatus.DECLINED, "privacy budget")
    assert parse_train_reply(_as_reply(train_reply_content(declined))).reason == "privacy budget"


def test_a_reply_with_an_unknown_status_is_a_protocol_error() -> None:
    content = train_reply_content(TrainReply("site-a", {}, {}))
    content["site"]["status"] = "hacked"
    with pytest.raises(ProtocolError, match="site 'site-a'.*status"):
        parse_train_reply(_as_reply(content))


def test_supernode_count_must_match_the_sites_manifest(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "sites.json",
                              [{"site-id": f"site-{i}", "data-dir": "/x"} for i in range(5)])
    assert simulated_node_config({"partition-id": 3, "num-partitions": 5}, manifest)["site-id"] == \
        "site-3"
    with pytest.raises(Exception, match=r"2 SuperNodes but data.num-sites = 5: run with "
                                        r"--federation-config 'num-supernodes=5'"):
        simulated_node_config({"partition-id": 0, "num-partitions": 2}, manifest)
    with pytest.raises(Exception, match="sites manifest not found"):
        simulated_node_config({"partition-id": 0, "num-partitions": 5}, tmp_path / "none.json")
    assert json.loads(manifest.read_text())["sites"][4]["site-id"] == "site-4"


def test_a_subgroup_key_parses_back_to_what_built_it() -> None:
    for dimension, group, metric in [("sex", "female", "auroc"), ("age", "80+", "n"),
                                     ("modalities", "ehr+notes+cxr", "auroc_low"),
                                     ("care_unit", "Medical Intensive Care Unit (MICU)", "brier"),
                                     ("age", "", SUBGROUP_SUPPRESSED)]:
        assert parse_subgroup_key(subgroup_key(dimension, group, metric)) == \
            (dimension, group, metric)
    assert parse_subgroup_key("test.auroc") is None
    assert parse_subgroup_key("subgroup") is None
