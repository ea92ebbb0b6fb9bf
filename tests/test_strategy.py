"""Modality-aware aggregation with hand-built Flower replies."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, Metadata, RecordDict

from client.flower_io import train_reply_content
from server.aggregation import Aggregation, SiteUpdate, aggregate_groups
from server.flower_io import to_array_record
from server.run_dir import RunDirectory
from server.settings import FederationSettings
from server.strategy import ModalityAwareStrategy
from shared_model import build_model
from shared_model.params import model_to_arrays, parameter_group
from shared_model.protocol import TrainReply
from shared_model.protocol import arrays_from_record as from_array_record


def _reply(node: int, content) -> Message:
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="i", group_id="1", created_at=0.0, ttl=60.0,
                    message_type="train")
    return Message(content, metadata=meta)


def train_reply(site: str, arrays: dict, weights: dict, metrics: dict):
    """A site's train reply content, built by the site's own code."""
    return train_reply_content(TrainReply(site, arrays, weights,
                                          train_loss=metrics.get("train-loss")))


def _site_arrays(global_arrays: dict, groups: set[str], value: float) -> dict:
    return {n: np.full_like(a, value) for n, a in global_arrays.items()
            if parameter_group(n) in groups}


@pytest.fixture()
def setup(tmp_path: Path):
    global_arrays = model_to_arrays(build_model())
    run = RunDirectory.create(str(tmp_path / "run"), {"test": True})
    strategy = ModalityAwareStrategy(FederationSettings(num_rounds=2, pretrain_rounds=0), run)
    strategy.current = global_arrays
    return strategy, global_arrays, run


def test_groups_are_averaged_over_their_contributors_only(setup) -> None:
    strategy, g, run = setup
    full = {"encoders.ehr", "encoders.notes", "encoders.cxr", "gate", "experts.ehr+notes+cxr",
            "experts.ehr+cxr"}
    no_cxr = {"encoders.ehr", "encoders.notes", "gate", "experts.ehr+notes", "missing.cxr"}
    replies = [
        _reply(1, train_reply("a", _site_arrays(g, full, 1.0),
                              {"encoders.ehr": 100, "encoders.notes": 80, "encoders.cxr": 30,
                               "gate": 100, "experts.ehr+notes+cxr": 20, "experts.ehr+cxr": 10},
                              {"train-loss": 0.5})),
        _reply(2, train_reply("b", _site_arrays(g, no_cxr, 4.0),
                              {"encoders.ehr": 300, "encoders.notes": 120, "gate": 300,
                               "experts.ehr+notes": 120, "missing.cxr": 300}, {"train-loss": 0.4})),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    new = from_array_record(arrays)
    assert set(new) == set(g)
    ehr = next(n for n in g if n.startswith("encoders.ehr."))
    assert np.allclose(new[ehr], (100 * 1 + 300 * 4) / 400)
    notes = next(n for n in g if n.startswith("encoders.notes."))
    assert np.allclose(new[notes], (80 * 1 + 120 * 4) / 200)
    for name in g:
        group = parameter_group(name)
        if group in ("encoders.cxr", "experts.ehr+cxr", "experts.ehr+notes+cxr"):
            assert np.allclose(new[name], 1.0), name  # only site a has cxr
        elif group == "experts.ehr+notes" or group == "missing.cxr":
            assert np.allclose(new[name], 4.0), name
        elif group not in full | no_cxr:
            assert np.array_equal(new[name], g[name]), name  # nobody trained it
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["contributors"]["encoders.cxr"] == {"a": 30}
    assert set(record["bytes_received"]) == {"a", "b"}
    assert (run.path / "checkpoints" / "round-001.safetensors").is_file()


def test_site_without_cxr_never_changes_cxr_groups(setup) -> None:
    strategy, g, _ = setup
    no_cxr = {"encoders.ehr", "encoders.notes", "gate", "experts.ehr+notes"}
    reply = _reply(1, train_reply("b", _site_arrays(g, no_cxr, 9.0),
                                  dict.fromkeys(no_cxr, 50), {}))
    new = from_array_record(strategy.aggregate_train(1, [reply])[0])
    for name in g:
        if "cxr" in parameter_group(name):
            assert np.array_equal(new[name], g[name]), name


@pytest.mark.parametrize("bad", ["nan", "inf", "shape"])
def test_bad_update_is_rejected_and_round_goes_on(setup, bad: str, caplog) -> None:
    strategy, g, run = setup
    groups = {"encoders.ehr", "gate"}
    poisoned = _site_arrays(g, groups, 2.0)
    name = next(n for n in poisoned if n.startswith("gate."))
    if bad == "shape":
        poisoned[name] = np.zeros((3, 3), dtype=np.float32)
    else:
        poisoned[name][...] = np.nan if bad == "nan" else np.inf
    good = _reply(1, train_reply("good", _site_arrays(g, groups, 1.0), dict.fromkeys(groups, 10), {}))
    evil = _reply(2, train_reply("evil", poisoned, dict.fromkeys(groups, 10), {}))
    with caplog.at_level("WARNING"):
        new = from_array_record(strategy.aggregate_train(1, [good, evil])[0])
    assert "rejected update of site evil" in caplog.text
    assert np.allclose(new[name], 1.0)
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert "evil" in record["rejected"] and "good" not in record["rejected"]


def test_a_round_without_accepted_updates_is_recorded_and_keeps_the_model(setup, caplog) -> None:
    strategy, g, run = setup
    bad = _site_arrays(g, {"gate"}, float("nan"))
    with caplog.at_level("ERROR"):
        new = from_array_record(strategy.aggregate_train(1, [
            _reply(1, train_reply("a", bad, {"gate": 5}, {"train-loss": 0.3}))])[0])
    assert "round 1: no site contributed an update" in caplog.text
    assert all(np.array_equal(new[n], g[n]) for n in g) and strategy.trained_rounds == []
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["accepted"] == [] and "a" in record["rejected"]
    assert record["train_loss"] is None  # a rejected site's loss is not averaged in


def test_trimmed_mean_that_trims_nothing_is_said_once_per_group(tmp_path: Path, caplog) -> None:
    g = model_to_arrays(build_model())
    run = RunDirectory.create(str(tmp_path / "run"), {})
    strategy = ModalityAwareStrategy(FederationSettings(num_rounds=2, pretrain_rounds=0,
                                                        aggregation="trimmed-mean"), run)
    replies = [_reply(i, train_reply(s, _site_arrays(g, {"gate"}, 1.0), {"gate": 10}, {}))
               for i, s in ((1, "a"), (2, "b"))]
    with caplog.at_level("WARNING"):
        for rnd in (1, 2):
            strategy.current = g
            strategy.aggregate_train(rnd, replies)
    assert caplog.text.count("trimmed-mean: group gate has 2 contributor(s)") == 1
    assert "needs >= 5 contributors" in caplog.text


def test_robust_aggregation_per_group() -> None:
    current = {"gate.0.bias": np.zeros(4, dtype=np.float32)}
    updates = [SiteUpdate(s, {"gate.0.bias": np.full(4, v, dtype=np.float32)}, {"gate": 10})
               for s, v in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 100.0), ("e", 2.5)]]
    median, _ = aggregate_groups(current, updates, Aggregation.MEDIAN)
    assert np.allclose(median["gate.0.bias"], 2.5)
    trimmed, _ = aggregate_groups(current, updates, Aggregation.TRIMMED_MEAN, trim=0.2)
    assert np.allclose(trimmed["gate.0.bias"], (2.0 + 2.5 + 3.0) / 3)


def test_checkpoint_resume_and_truncation(tmp_path: Path) -> None:
    run = RunDirectory.create(str(tmp_path / "r"), {})
    arrays = model_to_arrays(build_model())
    run.append("rounds.jsonl", {"round": 1})
    run.save_checkpoint(1, arrays, {}, {"optimizer": "avg"})
    run.append("rounds.jsonl", {"round": 2})
    for rnd in (1, 2):
        run.append("privacy_ledger.jsonl", {"round": rnd, "site": "s", "epsilon": rnd})
    with open(run.path / "rounds.jsonl", "a") as fh:
        fh.write('{"round": 2, "kind": "trai')  # cut short by a crash
    rnd, loaded, _, _ = RunDirectory(run.path).load_latest()
    assert rnd == 1 and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    run.truncate_after(1)
    assert [json.loads(x)["round"] for x in (run.path / "rounds.jsonl").read_text().splitlines()] == [1]
    # a released round's privacy row is never dropped: it is marked as after the checkpoint
    ledger = [json.loads(x) for x in (run.path / "privacy_ledger.jsonl").read_text().splitlines()]
    assert [(r["round"], r.get("after_checkpoint", False)) for r in ledger] == [(1, False), (2, True)]
    with pytest.raises(ValueError, match="already holds a run"):
        RunDirectory.create(str(run.path), {})


def test_record_round_trip() -> None:
    arrays = {"experts.ehr+cxr.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    back = from_array_record(to_array_record(arrays))
    assert np.array_equal(back["experts.ehr+cxr.0.weight"], arrays["experts.ehr+cxr.0.weight"])


def test_fedadam_moves_only_updated_parameters_and_restores_state() -> None:
    from server.aggregation import FedAdamState

    current = {"gate.0.bias": np.zeros(3, dtype=np.float32), "head.0.bias": np.ones(2, dtype=np.float32)}
    averaged = {"gate.0.bias": np.full(3, 0.5, dtype=np.float32), "head.0.bias": current["head.0.bias"]}
    adam = FedAdamState(lr=0.1)
    new = adam.step(current, averaged, {"gate.0.bias"})
    assert np.all(new["gate.0.bias"] > 0) and np.array_equal(new["head.0.bias"], current["head.0.bias"])
    restored = FedAdamState(lr=0.1)
    restored.load_state_arrays(adam.state_arrays())
    assert np.array_equal(restored.step(new, averaged, {"gate.0.bias"})["gate.0.bias"],
                          adam.step(new, averaged, {"gate.0.bias"})["gate.0.bias"])


def test_fedadam_is_flowers_fedadam_when_every_parameter_moves_every_round() -> None:
    from flwr.app import Array, ArrayRecord, MetricRecord
    from flwr.serverapp.strategy import FedAdam

    from server.aggregation import FedAdamState

    rng = np.random.default_rng(0)
    current = {"gate.0.bias": rng.normal(size=4), "head.0.weight": rng.normal(size=(2, 3))}
    flower = FedAdam(eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-3)
    ours = FedAdamState(lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3)
    flower_arrays = dict(current)
    for server_round in (1, 2, 3):
        averaged = {k: v + rng.normal(scale=0.1, size=v.shape) for k, v in current.items()}
        flower.current_arrays = flower_arrays
        reply = RecordDict({"arrays": ArrayRecord({k: Array(v.copy()) for k, v in averaged.items()}),
                            "metrics": MetricRecord({"num-examples": 10})})
        arrays, _ = flower.aggregate_train(server_round, [_reply(1, reply)])
        flower_arrays = {k: a.numpy() for k, a in arrays.items()}
        current = ours.step(current, averaged, set(current))
        for name in current:
            np.testing.assert_allclose(current[name], flower_arrays[name], rtol=1e-10)


def test_fedadam_counts_each_parameters_own_steps() -> None:
    """A group updated for the first time in round 3 gets the first step's bias correction."""
    from server.aggregation import FedAdamState

    current = {"gate.0.bias": np.zeros(2), "experts.ehr.0.bias": np.zeros(2)}
    averaged = {k: v + 1.0 for k, v in current.items()}
    adam = FedAdamState(lr=0.1)
    for _ in range(2):
        current = adam.step(current, {**averaged, "gate.0.bias": current["gate.0.bias"] + 1},
                            {"gate.0.bias"})
    late = adam.step(current, {**averaged, "experts.ehr.0.bias": current["experts.ehr.0.bias"] + 1},
                     {"experts.ehr.0.bias"})
    fresh = FedAdamState(lr=0.1).step({"x": np.zeros(2)}, {"x": np.ones(2)}, {"x"})
    np.testing.assert_allclose(late["experts.ehr.0.bias"], fresh["x"])
    assert adam.steps == {"gate.0.bias": 2, "experts.ehr.0.bias": 1}


def test_plain_fedavg_rule_sends_every_group(synth_features) -> None:
    from client.data.dataset import SiteData
    from client.rounds.federated import trainable_groups

    data = SiteData.load(synth_features, "mortality", "s")
    model = build_model()
    aware = trainable_groups(data, model, "joint")
    plain = trainable_groups(data, model, "joint", "fedavg-all")
    n = data.size("train")
    assert set(plain) == {parameter_group(name) for name, _ in model.named_parameters()}
    assert set(plain.values()) == {n} and set(aware) < set(plain)
    assert aware["encoders.cxr"] == int(data.inputs["available"][data.split == "train", 2].sum())


def test_gate_health_weights_sites_by_combination_counts_and_flags_misrouting() -> None:
    from server.gate_health import gate_health
    from shared_model.protocol import EvaluateReply

    a = EvaluateReply("a", 30, by_combination={"ehr": {"auroc": 0.7, "n": 30}},
                      routing={"ehr": {"ehr": 0.3, "ehr+notes": 0.7}})
    b = EvaluateReply("b", 30, by_combination={"ehr": {"n": 10}, "ehr+notes": {"n": 20}},
                      routing={"ehr": {"ehr": 0.7, "ehr+notes": 0.3},
                               "ehr+notes": {"ehr": 0.0, "ehr+notes": 1.0}})
    health = gate_health([a, b])
    assert health["by_combination"]["ehr"] == pytest.approx({"ehr": 0.4, "ehr+notes": 0.6})
    assert health["expert_share"] == pytest.approx({"ehr": 0.4 * 40 / 60,
                                                    "ehr+notes": (0.6 * 40 + 20) / 60})
    assert health["misrouted"] == pytest.approx({"ehr": 0.6})  # EHR-only samples -> notes expert


def test_only_a_collapsed_gate_warns_and_only_in_joint_rounds(caplog) -> None:
    import logging

    from server.gate_health import log_gate_health
    from shared_model.protocol import Phase

    caplog.set_level(logging.INFO, logger="server.gate_health")
    healthy = {"expert_share": {"ehr": 0.34, "ehr+notes": 0.66}, "misrouted": {"ehr": 0.66}}
    collapsed = {"expert_share": {"ehr": 0.04, "ehr+notes": 0.96}, "misrouted": {"ehr": 0.96}}
    log_gate_health(1, collapsed, Phase.PRETRAIN)  # the gate is not trained in pre-training rounds
    assert not caplog.records
    log_gate_health(3, healthy, Phase.JOINT)  # a default run's routing: information, no warning
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "round 3: gate routes 0.66 of the weight of ehr samples" in caplog.text
    caplog.clear()
    log_gate_health(4, collapsed, Phase.JOINT)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["round 4: the gate has collapsed: expert ehr+notes takes 0.96 of all "
                        "routing weight, so the mixture acts as one network (is the "
                        "load-balancing loss on? run config alpha, model.balance)"]


def test_records_use_the_registered_name_and_an_impostor_is_rejected(tmp_path: Path, caplog) -> None:
    from server.identity import SiteIdentity, register_site

    registry = tmp_path / "site-registry.json"
    register_site(registry, 11, "hospital-a")
    register_site(registry, 22, "hospital-b")
    global_arrays = model_to_arrays(build_model())
    run = RunDirectory.create(str(tmp_path / "run"), {})
    strategy = ModalityAwareStrategy(FederationSettings(num_rounds=2, pretrain_rounds=0), run,
                                     identity=SiteIdentity.from_setting(str(registry)))
    strategy.current = global_arrays
    groups = {"encoders.ehr", "gate"}
    honest = _reply(11, train_reply("hospital-a", _site_arrays(global_arrays, groups, 1.0),
                                    dict.fromkeys(groups, 50), {}))
    impostor = _reply(22, train_reply("hospital-a", _site_arrays(global_arrays, groups, 9.0),
                                      dict.fromkeys(groups, 50), {}))
    stranger = _reply(33, train_reply("hospital-c", _site_arrays(global_arrays, groups, 9.0),
                                      dict.fromkeys(groups, 50), {}))
    with caplog.at_level("WARNING"):
        new = from_array_record(strategy.aggregate_train(1, [honest, impostor, stranger])[0])
    name = next(n for n in new if n.startswith("gate."))
    assert np.allclose(new[name], 1.0)  # only the honest update
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["accepted"] == ["hospital-a"]
    assert record["rejected"]["hospital-b"] == ("node 22 is registered as 'hospital-b' but claims "
                                                "to be 'hospital-a'")
    assert "not in the coordinator's site registry" in record["rejected"]["node-33"]


def test_two_nodes_claiming_one_site_id_without_a_registry_are_both_refused(setup) -> None:
    strategy, g, run = setup
    groups = {"encoders.ehr", "gate"}
    first = _reply(1, train_reply("site-a", _site_arrays(g, groups, 1.0), dict.fromkeys(groups, 10),
                                  {}))
    second = _reply(2, train_reply("site-a", _site_arrays(g, groups, 9.0),
                                   dict.fromkeys(groups, 10), {}))
    third = _reply(3, train_reply("site-b", _site_arrays(g, groups, 2.0), dict.fromkeys(groups, 10),
                                  {}))
    new = from_array_record(strategy.aggregate_train(1, [first, second, third])[0])
    gate = next(n for n in new if n.startswith("gate."))
    assert np.allclose(new[gate], 2.0)  # site-b alone: neither claimant of site-a is averaged
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["accepted"] == ["site-b"]
    assert "site-id 'site-a' is claimed by nodes 1, 2" in record["rejected"]["site-a"]


def _sent(node: int) -> Message:
    """A train instruction to ``node`` as Flower holds it once pushed (its message id set)."""
    meta = Metadata(run_id=1, message_id=f"ins-{node}", src_node_id=0, dst_node_id=node,
                    reply_to_message_id="", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")
    return Message(RecordDict(), metadata=meta)


def test_a_sampled_site_that_never_answers_is_recorded(setup) -> None:
    strategy, g, run = setup
    strategy._remember_sent([_sent(1), _sent(2)])  # what configure_train sent this round
    groups = {"encoders.ehr", "gate"}
    strategy.aggregate_train(1, [_reply(1, train_reply("a", _site_arrays(g, groups, 1.0),
                                                       dict.fromkeys(groups, 10), {}))])
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert list(record["no_reply"]) == ["node-2"]
    assert re.fullmatch(r"no reply in the \d+ s the round waited \(round-timeout 3600 s\)",
                        record["no_reply"]["node-2"])


def test_the_superlinks_node_unavailable_reply_names_the_site_it_is_about(setup) -> None:
    """Flower's SuperLink answers for a SuperNode that went offline with an error reply whose
    source is the SuperLink itself (node 1): it is recorded once, under the site it is about."""
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    strategy, g, run = setup
    sent = [_sent(5), _sent(6)]
    strategy._remember_sent(sent)
    groups = {"encoders.ehr", "gate"}
    unavailable = create_message_error_unavailable_res_message(sent[1].metadata, "node_unavail")
    assert unavailable.metadata.src_node_id == 1
    strategy.aggregate_train(1, [_reply(5, train_reply("a", _site_arrays(g, groups, 1.0),
                                                       dict.fromkeys(groups, 10), {})),
                                 unavailable])
    record = json.loads((run.path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["no_reply"] == {}
    assert list(record["rejected"]) == ["node-6"]
    assert re.fullmatch(r"error reply: Error: Node Unavailable.* \(\d+ s after sending\)",
                        record["rejected"]["node-6"]), record["rejected"]


def test_resume_falls_back_from_a_corrupt_checkpoint_and_names_it(tmp_path: Path, caplog) -> None:
    run = RunDirectory.create(str(tmp_path / "r"), {})
    arrays = model_to_arrays(build_model())
    run.save_checkpoint(1, arrays, {}, {"optimizer": "avg"})
    run.save_checkpoint(2, {k: v + 1 for k, v in arrays.items()}, {}, {"optimizer": "avg"})
    latest = run.path / "checkpoints" / "round-002.safetensors"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated (disk full, crash mid-copy)
    with caplog.at_level("WARNING"):
        rnd, loaded, _, _ = RunDirectory(run.path).load_latest()
    assert rnd == 1 and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert "round-002.safetensors is unreadable" in caplog.text
    (run.path / "checkpoints" / "latest.json").write_text("{not json")
    assert RunDirectory(run.path).load_latest()[0] == 1  # a corrupt pointer is survivable too
    (run.path / "checkpoints" / "round-001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no intact checkpoint to resume from"):
        RunDirectory(run.path).load_latest()


def test_resume_from_alone_continues_the_run_as_it_was_started(tmp_path: Path) -> None:
    from server.app import resumed_run_config
    from shared_model.run_config import pyproject_defaults

    defaults = pyproject_defaults()
    stored = {**defaults, "simulation": False, "num-server-rounds": 4, "data.num-sites": 3,
              "centralized-eval": False}
    (tmp_path / "config.json").write_text(json.dumps(stored))
    resumed = resumed_run_config({**defaults, "resume-from": str(tmp_path)})
    assert resumed["simulation"] is False and resumed["num-server-rounds"] == 4
    assert resumed["data.num-sites"] == 3 and resumed["resume-from"] == str(tmp_path)
    longer = resumed_run_config({**defaults, "resume-from": str(tmp_path), "num-server-rounds": 6})
    assert longer["num-server-rounds"] == 6 and longer["simulation"] is False  # given: it wins
    default = defaults["num-server-rounds"]  # given, and equal to the pyproject default: it wins
    same = resumed_run_config({**defaults, "resume-from": str(tmp_path)},
                              given={"resume-from", "num-server-rounds"})
    assert same["num-server-rounds"] == default and same["simulation"] is False


def test_evaluate_every_skips_rounds_but_never_the_last(tmp_path: Path) -> None:
    from flwr.app import ArrayRecord, ConfigRecord

    settings = FederationSettings(num_rounds=5, pretrain_rounds=0, evaluate_every=2)
    assert [r for r in range(1, 6) if settings.evaluates(r)] == [2, 4, 5]
    run = RunDirectory.create(str(tmp_path / "run"), {})
    strategy = ModalityAwareStrategy(settings, run)
    assert list(strategy.configure_evaluate(3, ArrayRecord(), ConfigRecord(), None)) == []
    assert strategy.aggregate_evaluate(3, []) is None
    assert not (run.path / "rounds.jsonl").exists()  # nothing recorded for a skipped round


def test_init_from_a_checkpoint_file_or_run_checks_the_model(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from shared_model import ModelConfig

    expected = model_to_arrays(build_model())
    pretrained = {k: v + 1 for k, v in expected.items()}
    save_file(pretrained, str(tmp_path / "public.safetensors"))
    loaded = RunDirectory.load_model(tmp_path / "public.safetensors", expected)
    assert all(np.array_equal(loaded[k], pretrained[k]) for k in expected)
    run = RunDirectory.create(str(tmp_path / "run"), {})
    run.save_checkpoint(3, pretrained, {"m.x": np.zeros(2)}, {"optimizer": "avg"})
    assert set(RunDirectory.load_model(run.path, expected)) == set(expected)  # no optimizer state
    other = model_to_arrays(build_model(ModelConfig(hidden=32)))
    with pytest.raises(ValueError, match="does not fit this run's model .* same model"):
        RunDirectory.load_model(tmp_path / "public.safetensors", other)
    with pytest.raises(ValueError, match="init-from: .*nothing.safetensors not found"):
        RunDirectory.load_model(tmp_path / "nothing.safetensors", expected)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="init-from: .*bad.safetensors is not a readable checkpoint"):
        RunDirectory.load_model(tmp_path / "bad.safetensors", expected)
    with pytest.raises(ValueError, match="init-from starts a new run"):
        FederationSettings(init_from="a", resume_from="b")


def test_an_evaluation_rides_in_the_next_train_round_and_the_last_has_its_own(tmp_path: Path
                                                                             ) -> None:
    """Round r's evaluation comes with round r + 1's train replies and is recorded as round r's;
    the last round (and any round when only some sites train) keeps its evaluate messages."""
    import json

    from flwr.app import ArrayRecord, ConfigRecord

    from shared_model.protocol import EvaluateReply

    settings = FederationSettings(num_rounds=3, pretrain_rounds=0, evaluate_every=1)
    assert [settings.evaluates_with_next_train(r) for r in (1, 2, 3)] == [True, True, False]
    sampled = FederationSettings(num_rounds=3, pretrain_rounds=0, fraction_train=0.5)
    assert not sampled.evaluates_with_next_train(1)
    run = RunDirectory.create(str(tmp_path / "run"), {})
    strategy = ModalityAwareStrategy(settings, run)
    g = model_to_arrays(build_model())
    strategy.current = g
    assert list(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None)) == []
    assert strategy.aggregate_evaluate(1, []) is None
    evaluation = EvaluateReply("a", 120, {"test": {"auroc": 0.71, "loss": 0.3}})
    content = train_reply_content(TrainReply("a", _site_arrays(g, {"gate"}, 1.0), {"gate": 50},
                                             evaluation=evaluation))
    strategy.aggregate_train(2, [_reply(1, content)])
    rounds = [json.loads(x) for x in (run.path / "rounds.jsonl").read_text().splitlines()]
    assert [(r["round"], r["kind"]) for r in rounds] == [(1, "evaluate"), (2, "train")]
    assert rounds[0]["test.auroc"] == pytest.approx(0.71)
    assert rounds[0]["seconds"] == {"with_train_round": 2}
    assert strategy.last_site_eval["a"].get("test", "auroc") == 0.71
    resumed = ModalityAwareStrategy(settings, run, round_offset=1)  # round 1 ran before resuming
    resumed.current = g
    resumed.aggregate_train(1, [_reply(1, content)])  # absolute round 2: no evaluation of 1
    kinds = [json.loads(x)["kind"] for x in (run.path / "rounds.jsonl").read_text().splitlines()]
    assert kinds == ["evaluate", "train", "train"]
