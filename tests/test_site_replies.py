"""What a site without DP sends, checked on real replies of the ClientApp against the table in
deploy/README.md ("What leaves a hospital"), and the minimum cell size on the values sent."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from client.app import app as client_app
from server.settings import FederationSettings
from shared_model.protocol import MIN_CELL_SIZE, Record, SiteStatus
from tests.test_dp_site_replies import _context, _message

DEPLOY_README = Path(__file__).resolve().parents[1] / "deploy" / "README.md"


def _documented_patterns() -> list[re.Pattern[str]]:
    """Backticked keys of the first column of the table, ``<placeholder>`` matching a name."""
    section = DEPLOY_README.read_text().split("## What leaves a hospital", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    keys = [key for row in rows for key in re.findall(r"`([^`]+)`", row.split("|")[1])]
    return [re.compile("^" + re.sub(r"<[a-z]+>", r"[a-z0-9+.\-]+?", re.escape(k).replace(r"\<", "<")
                                    .replace(r"\>", ">")) + "$") for k in keys]


def _undocumented(keys: set[str]) -> set[str]:
    patterns = _documented_patterns()
    return {k for k in keys if not any(p.match(k) for p in patterns)}


@pytest.fixture()
def node(tmp_path: Path, synth_features: Path) -> dict:
    return {"site-id": "hospital-a", "data-dir": str(tmp_path), "feature-dir": str(synth_features),
            "privacy-dir": str(tmp_path / "privacy")}


def test_train_reply_keys_are_documented_and_respect_the_cell_size(node) -> None:
    cfg = FederationSettings(num_rounds=2, pretrain_rounds=0, local_epochs=1).round_config(1)
    content = client_app(_message("train", cfg.to_record()), _context(node)).content
    metrics = dict(content[Record.METRICS])
    sent = set(metrics) | set(content[Record.SITE]) | set(content.array_records)
    assert not _undocumented(sent), _undocumented(sent)
    weights = {k: v for k, v in metrics.items() if k.startswith("weight:")}
    assert weights and min(weights.values()) >= MIN_CELL_SIZE
    assert content[Record.SITE]["status"] == SiteStatus.TRAINED


def test_evaluate_reply_keys_are_documented_and_respect_the_cell_size(node) -> None:
    cell = 5  # the small synthetic site's released test cells hold 7 positives
    content = client_app(_message("evaluate", {"server-round": 1}),
                         _context({**node, "min-cell-size": cell})).content
    metrics = dict(content[Record.METRICS])
    sent = set(metrics) | set(content[Record.SITE])
    assert not _undocumented(sent), _undocumented(sent)
    assert any(k.startswith("route.") for k in metrics) and "test.auroc_low" in metrics
    assert not any("threshold" in k for k in metrics)
    for key, value in metrics.items():
        if key.endswith(".n") or key in ("num-examples", "test.positives"):
            assert value >= cell, (key, value)
        if key.startswith("subgroup.") and key.endswith(".positives"):
            negatives = metrics[key.removesuffix("positives") + "n"] - value
            assert min(value, negatives) >= cell, (key, value, negatives)
    two = dict(client_app(_message("evaluate", {"server-round": 1}),
                          _context({**node, "min-cell-size": 2})).content[Record.METRICS])
    released = [k for k in two if k.startswith("subgroup.") and k.endswith(".positives")]
    assert released, sorted(two)
    for key in released:
        assert min(two[key], two[key.removesuffix("positives") + "n"] - two[key]) >= 2, key
    default = dict(client_app(_message("evaluate", {"server-round": 1}), _context(node))
                   .content[Record.METRICS])  # 7 positives < MIN_CELL_SIZE: no metric at all
    assert not [k for k in default if k.startswith(("test.", "val.")) and k.count(".") == 1]
    small = client_app(_message("evaluate", {"server-round": 1}),
                       _context({**node, "min-cell-size": 10_000})).content
    assert dict(small[Record.METRICS]) == {"num-examples": 0}  # a too-small site sends nothing


def test_a_train_message_can_carry_the_last_rounds_evaluation(node) -> None:
    """With ``evaluate-incoming`` the train reply also carries the received model's evaluation:
    the same keys and values the evaluate handler sends for that model, under the same rules."""
    import torch

    from server.flower_io import parse_train_reply

    node = {**node, "min-cell-size": 5}
    cfg = replace(FederationSettings(num_rounds=3, pretrain_rounds=0).round_config(2),
                  evaluate_incoming=True)
    torch.manual_seed(0)
    train = client_app(_message("train", cfg.to_record()), _context(node))
    torch.manual_seed(0)
    evaluate = client_app(_message("evaluate", {"server-round": 2}), _context(node)).content
    carried = dict(train.content.metric_records[Record.EVALUATION])
    assert carried == dict(evaluate[Record.METRICS]) and "test.auroc_low" in carried
    assert not _undocumented(set(carried)), _undocumented(set(carried))
    assert parse_train_reply(train).evaluation.get("test", "auroc") == carried["test.auroc"]
    plain = client_app(_message("train", replace(cfg, evaluate_incoming=False).to_record()),
                       _context(node))
    assert set(plain.content.metric_records) == {Record.METRICS}


def test_a_site_local_gate_is_trained_kept_and_used_but_never_sent(node, tmp_path: Path) -> None:
    """``site-local-groups = "gate"``: the train reply holds no gate, the site's file does (moved
    by training), and the site evaluates a received model with its own gate put over it."""
    import torch
    from flwr.app import Context

    from client.rounds.site_local import local_parts_path
    from server.flower_io import parse_train_reply, to_array_record
    from shared_model.checkpoint import read_model_file
    from shared_model.errors import MoeHealthInputError
    from shared_model.params import parameter_group
    from shared_model.protocol import arrays_from_record
    from shared_model.run_config import site_local_groups

    def message(kind: str, config: dict, gate: dict | None = None):
        torch.manual_seed(0)  # the same global model in every message
        msg = _message(kind, config)
        if gate:
            arrays = arrays_from_record(msg.content[Record.ARRAYS]) | gate
            msg.content[Record.ARRAYS] = to_array_record(arrays)
        return msg

    node = {**node, "min-cell-size": 5}
    plain = _context(node)
    local = Context(run_id=1, node_id=1, node_config=node, state=plain.state,
                    run_config={**plain.run_config, "site-local-groups": "gate"})
    cfg = FederationSettings(num_rounds=3, pretrain_rounds=0).round_config(2)
    train = parse_train_reply(client_app(message("train", cfg.to_record()), local))
    assert "gate" not in train.group_weights and "experts.ehr" in train.group_weights
    assert not any(parameter_group(n) == "gate" for n in train.arrays)
    kept = read_model_file(local_parts_path(tmp_path, 1))
    received = arrays_from_record(message("train", {}).content[Record.ARRAYS])
    assert kept and all(parameter_group(n) == "gate" for n in kept)
    assert any(not (kept[n] == received[n]).all() for n in kept)  # trained at the site
    own = client_app(message("evaluate", {"server-round": 2}), local).content[Record.METRICS]
    same = client_app(message("evaluate", {"server-round": 2}, gate=kept), plain)
    assert dict(own) == dict(same.content[Record.METRICS])
    with pytest.raises(MoeHealthInputError, match="site-local-groups"):
        site_local_groups("experts")


def test_patterns_reject_an_undocumented_key() -> None:
    assert _undocumented({"test.threshold", "route.ehr.ehr", "weight:gate"}) == {"test.threshold"}
