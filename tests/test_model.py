"""MoE-Health model behaviour: indicators, routing, pre-training, balance loss, names, learning."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shared_model import ModelConfig, build_model
from shared_model.losses import kl_balance_loss, moe_loss, switch_balance_loss
from shared_model.modalities import COMBINATIONS
from shared_model.params import load_arrays, model_to_arrays, parameter_group

B = 6


def _batch(available: list[list[int]], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(available)
    return [torch.randn(n, 48, 17, generator=g), torch.ones(n, 48, 17), torch.randn(n, 2, generator=g),
            torch.randn(n, 384, generator=g), torch.randn(n, 1024, generator=g),
            torch.tensor(available, dtype=torch.float32)]


def _grad_norm(model, prefix: str) -> float:
    return sum(float(p.grad.abs().sum()) for n, p in model.named_parameters()
               if n.startswith(prefix) and p.grad is not None)


def test_indicator_gets_gradient_only_from_samples_missing_the_modality() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(dropout=0.0))
    inputs = _batch([[1, 1, 1], [1, 1, 0]])
    out = model(*inputs)
    out.logits[0].backward(retain_graph=True)  # sample 0 has cxr
    assert _grad_norm(model, "missing.cxr") == 0.0
    model.zero_grad()
    out.logits[1].backward()  # sample 1 lacks cxr
    assert _grad_norm(model, "missing.cxr") > 0.0
    assert _grad_norm(model, "missing.notes") == 0.0 and _grad_norm(model, "encoders.cxr") == 0.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_picks_exactly_k_experts_with_weights_summing_to_one(k: int) -> None:
    model = build_model(ModelConfig(top_k=k, gate_mask="none"))  # the paper's gate
    out = model(*_batch([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]]))
    assert ((out.weights > 0).sum(-1) == k).all()
    assert torch.allclose(out.weights.sum(-1), torch.ones(4))
    assert out.chosen.shape == (4, k) and out.gate_probs.shape == (4, len(COMBINATIONS))
    restricted = build_model(ModelConfig(top_k=k, gate_mask="available"))
    masked = restricted(*_batch([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    # the restricted gate: only experts of combinations the stay has (EHR only: one expert)
    has = [{"ehr", "notes", "cxr"}, {"ehr"}, {"ehr", "notes"}]
    allowed = [{i for i, c in enumerate(COMBINATIONS) if set(c.split("+")) <= h} for h in has]
    assert (masked.weights > 0).sum(-1).tolist() == [min(k, len(a)) for a in allowed] == [k, 1,
                                                                                      min(k, 3)]
    for row, experts in zip(masked.weights, allowed, strict=True):
        assert set(torch.nonzero(row).flatten().tolist()) <= experts
    assert torch.allclose(masked.weights.sum(-1), torch.ones(3))


def test_learned_gate_temperature_starts_at_one_and_has_exact_per_sample_gradients() -> None:
    """The temperature is part of the gate group; at its start the model is the fixed-temperature
    model; through Opacus' hooks (as a DP site trains) its per-sample gradients are each
    sample's own."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    fixed = build_model(ModelConfig(dropout=0.0)).double().eval()
    learned = build_model(ModelConfig(dropout=0.0, gate_temperature="learned")).double().eval()
    assert parameter_group("gate.4.log_inverse.weight") == "gate"
    learned.load_state_dict(fixed.state_dict(), strict=False)
    inputs = [x.double() for x in _batch([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 1]])]
    torch.testing.assert_close(learned(*inputs).logits, fixed(*inputs).logits)
    with torch.no_grad():
        learned.gate[4].log_inverse.weight.fill_(0.7)
    reference = copy.deepcopy(learned)
    wrapped = GradSampleModule(learned.train(), batch_first=True, loss_reduction="sum")
    (wrapped(*inputs).logits ** 2).sum().backward()
    for b in range(4):
        reference.zero_grad()
        (reference(*[x[b:b + 1] for x in inputs]).logits ** 2).sum().backward()
        torch.testing.assert_close(learned.gate[4].log_inverse.weight.grad_sample[b],
                                   reference.gate[4].log_inverse.weight.grad)


def test_pretraining_expert_learns_only_from_its_own_combination() -> None:
    model = build_model()
    model.set_phase("pretrain")
    out = model(*_batch([[1, 1, 0]] * 3 + [[1, 0, 1]] * 2))
    moe_loss(out, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])).backward()
    grads = {c: _grad_norm(model, f"experts.{c}.") for c in COMBINATIONS}
    assert grads["ehr+notes"] > 0 and grads["ehr+cxr"] > 0
    assert all(v == 0 for c, v in grads.items() if c not in ("ehr+notes", "ehr+cxr"))
    assert _grad_norm(model, "gate") == 0.0


def test_load_balancing_loss_is_minimal_for_uniform_routing() -> None:
    n = len(COMBINATIONS)
    uniform = torch.full((64, n), 1.0 / n)
    chosen = torch.stack([torch.randperm(n)[:2] for _ in range(64)])
    base = switch_balance_loss(uniform, chosen)
    assert base == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    for scale in (0.5, 2.0, 8.0):
        probs = torch.softmax(scale * torch.randn(64, n, generator=g), -1)
        assert switch_balance_loss(probs, probs.topk(2).indices) >= base - 1e-6
    collapsed = torch.zeros(64, n)
    collapsed[:, 0] = 1.0
    assert switch_balance_loss(collapsed, collapsed.topk(1).indices) == pytest.approx(n)
    assert kl_balance_loss(uniform) == pytest.approx(0.0, abs=1e-6)
    assert kl_balance_loss(collapsed) > 1.0


def test_parameter_names_show_the_aggregation_rule() -> None:
    names = [n for n, _ in build_model().named_parameters()]
    groups = {parameter_group(n) for n in names}
    assert groups == {"encoders.ehr", "encoders.notes", "encoders.cxr", "missing.ehr",
                      "missing.notes", "missing.cxr", "gate"} | {f"experts.{c}" for c in COMBINATIONS}
    assert "experts.ehr+cxr.0.weight" in names
    assert parameter_group("_module.experts.ehr+cxr.0.weight") == "experts.ehr+cxr"


def test_dp_lstm_model_exchanges_the_same_names_and_shapes() -> None:
    plain = model_to_arrays(build_model())
    dp_model = build_model(ModelConfig(lstm="dp"))
    dp = model_to_arrays(dp_model)
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in dp.items()}
    load_arrays(dp_model, plain)
    inputs = _batch([[1, 1, 0], [1, 0, 1]])
    reference = build_model()
    load_arrays(reference, plain)
    reference.eval()
    dp_model.eval()
    assert torch.allclose(reference(*inputs).logits, dp_model(*inputs).logits, atol=1e-5)


def test_load_arrays_rejects_bad_shapes_and_names() -> None:
    model = build_model()
    arrays = model_to_arrays(model)
    arrays["gate.0.bias"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="gate.0.bias: shape"):
        load_arrays(model, arrays)
    with pytest.raises(ValueError, match="unknown parameter"):
        load_arrays(model, {"experts.xray.0.weight": np.zeros(1)}, partial=True)


def test_variants_change_the_parameter_groups() -> None:
    zero = {parameter_group(n) for n, _ in build_model({"missing": "zero"}).named_parameters()}
    assert not any(g.startswith("missing") for g in zero)
    mlp = {parameter_group(n) for n, _ in build_model({"fusion": "mlp"}).named_parameters()}
    assert "head" in mlp and "gate" not in mlp and not any(g.startswith("experts") for g in mlp)
    uni = {parameter_group(n) for n, _ in build_model({"fusion": "mlp", "modalities": "cxr"})
           .named_parameters()}
    assert uni == {"encoders.cxr", "missing.cxr", "head"}
    with pytest.raises(ValueError, match="top_k"):
        ModelConfig(top_k=0)


def test_training_on_synthetic_data_beats_chance(synth_features) -> None:
    from client.data.dataset import SiteData
    from client.rounds.evaluation import binary_metrics
    from client.rounds.training import predict, resolve_device
    from simulation.centralized import CentralizedConfig, train_centralized

    data = SiteData.load(synth_features, "los")
    config = CentralizedConfig(task="los", lr=1e-3, max_epochs=6, pretrain_epochs=2, patience=6, seed=0)
    result = train_centralized(data, ModelConfig(), config)
    held_out = torch.utils.data.ConcatDataset([data.subset("val"), data.subset("test")])
    pred = predict(result.model, held_out, resolve_device())
    auroc = binary_metrics(pred.labels, pred.probs)["auroc"]
    assert auroc > 0.6, auroc  # ~130 held-out stays: 0.6 is two standard errors above chance
    assert set(result.routing) <= set(COMBINATIONS)
