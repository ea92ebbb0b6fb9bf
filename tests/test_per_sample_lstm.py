"""The EHR encoder's per-sample LSTM gradients (DP-SGD's input) against per-sample autograd."""

from __future__ import annotations

import pytest
import torch

from shared_model.encoders import EHREncoder
from shared_model.per_sample_lstm import PerSampleLSTM, per_sample_gradients


def _reference(module: torch.nn.Module, inputs: list[torch.Tensor], loss) -> list[dict]:
    """Each sample's gradient by its own forward and backward pass."""
    out = []
    for b in range(inputs[0].shape[0]):
        module.zero_grad()
        loss(module(*[x[b:b + 1] for x in inputs])).backward()
        out.append({n: p.grad.clone() for n, p in module.named_parameters()})
    return out


def test_per_sample_gradients_equal_each_samples_own_backward_pass() -> None:
    torch.manual_seed(0)
    lstm = PerSampleLSTM(5, 4).double()
    x = torch.randn(6, 7, 5, dtype=torch.double)
    weight = torch.randn(8, dtype=torch.double)
    grads = per_sample_gradients(lstm, x, weight.expand(6, -1))
    for b, expected in enumerate(_reference(lstm, [x], lambda last: (last @ weight).sum())):
        for name, grad in expected.items():
            torch.testing.assert_close(grads[name][b], grad, rtol=1e-10, atol=1e-12)


def test_same_outputs_and_parameter_names_as_the_plain_lstm() -> None:
    torch.manual_seed(0)
    plain = EHREncoder(17, 2, 8, 16, lstm="torch")
    dp = EHREncoder(17, 2, 8, 16, lstm="dp")
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in dp.named_parameters()]
    dp.load_state_dict(plain.state_dict())
    inputs = [torch.randn(3, 48, 17), (torch.rand(3, 48, 17) > 0.5).float(), torch.randn(3, 2)]
    dp.eval()
    torch.testing.assert_close(dp(*inputs), plain(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("batch, per_sample_only", [(5, True), (5, False), (0, True)])
def test_opacus_clips_the_encoders_true_per_sample_gradients(batch: int,
                                                             per_sample_only: bool) -> None:
    """Through Opacus' GradSampleModule (hooks, mean loss) as a DP site trains: every parameter's
    ``grad_sample`` is each sample's own gradient by nn.LSTM's autograd, whether the forward pass
    kept its outputs (``per_sample_only``, as DP-SGD runs it) or they are recomputed; an empty
    Poisson batch gives empty ones."""
    from opacus import GradSampleModule

    import client.privacy.lstm_grad_sampler  # noqa: F401  (the registration under test)

    torch.manual_seed(1)
    encoder = EHREncoder(17, 2, 8, 16, lstm="dp").double()
    encoder.lstm.per_sample_only = per_sample_only
    plain = EHREncoder(17, 2, 8, 16, lstm="torch").double()
    plain.load_state_dict(encoder.state_dict())
    inputs = [torch.randn(batch, 48, 17, dtype=torch.double),
              (torch.rand(batch, 48, 17) > 0.5).double(), torch.randn(batch, 2, dtype=torch.double)]
    target = torch.randn(16, dtype=torch.double)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return ((out @ target).tanh() ** 2).mean() if len(out) else out.sum()

    wrapped = GradSampleModule(encoder, batch_first=True, loss_reduction="mean")
    loss(wrapped(*inputs)).backward()
    samples = {n.removeprefix("_module."): p.grad_sample for n, p in wrapped.named_parameters()}
    assert all(s.shape[0] == batch for s in samples.values())
    assert (encoder.lstm.weight_ih_l0.grad is None) == per_sample_only  # no discarded backward
    assert encoder.lstm.kept is None  # used once, then let go
    for b, expected in enumerate(_reference(plain, inputs, loss)):
        for name, grad in expected.items():
            torch.testing.assert_close(samples[name][b], grad, rtol=1e-9, atol=1e-11)


def test_per_sample_only_trains_nothing_that_needs_an_input_gradient() -> None:
    lstm = PerSampleLSTM(3, 2)
    lstm.per_sample_only = True
    with pytest.raises(ValueError, match="input must not need a gradient"):
        lstm(torch.randn(2, 4, 3, requires_grad=True))
    with torch.no_grad():  # evaluation: nn.LSTM's own path, nothing kept
        lstm(torch.randn(2, 4, 3))
    assert lstm.kept is None
