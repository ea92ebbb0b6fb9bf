"""A bidirectional LSTM whose per-sample gradients cost one extra pass through time.

DP-SGD clips each sample's gradient, so a DP site needs per-sample gradients of the EHR encoder's
BiLSTM. Opacus' DPLSTM gets them by running the LSTM as Python-level cells whose every time step
is hooked (7.7x the non-DP round at benchmark scale). Here the forward pass is ``nn.LSTM``'s own
(same parameters, names and outputs) and the per-sample gradients are computed afterwards from
the input, the output sequence and the gradient of the final states: the gate pre-activations of
all time steps in one matrix product, one loop over time carries the cell state forward and the
gradient backward (batched over samples), and each weight's per-sample gradient is one ``einsum``
over time. Pure torch: client/privacy registers :func:`per_sample_gradients` with Opacus for this
module.

With ``per_sample_only`` set (a DP site's training, where Opacus' optimizer uses only the
per-sample gradients), the forward pass keeps its output sequence for them and autograd computes
no LSTM parameter gradients: nn.LSTM's own backward pass, whose summed gradients DP-SGD would
discard, is skipped. Otherwise the module is an ``nn.LSTM`` in every respect.
"""

from __future__ import annotations

import torch
from torch import nn


class PerSampleLSTM(nn.LSTM):
    """One-layer bidirectional, batch-first ``nn.LSTM`` returning the final forward and backward
    hidden states ``[B, 2H]``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, batch_first=True, bidirectional=True)
        self.per_sample_only = False
        self.kept: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, output sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.per_sample_only and torch.is_grad_enabled():
            if x.requires_grad:
                raise ValueError("PerSampleLSTM.per_sample_only: the input must not need a "
                                 "gradient (the EHR series are data)")
            return _FinalStatesForPerSampleGradients.apply(x, self, *self.parameters())
        _, (h, _) = super().forward(x)
        return torch.cat([h[-2], h[-1]], dim=-1)


class _FinalStatesForPerSampleGradients(torch.autograd.Function):
    """nn.LSTM's forward without a graph (the output sequence kept on the module); its backward
    gives no parameter gradient: Opacus' grad sampler computes the per-sample ones."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lstm: PerSampleLSTM, *params: torch.Tensor
                ) -> torch.Tensor:
        out, (h, _) = nn.LSTM.forward(lstm, x)
        lstm.kept = (x, out)
        return torch.cat([h[-2], h[-1]], dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, ...]:
        return (None,) * len(ctx.needs_input_grad)  # one per input of forward


def per_sample_gradients(lstm: PerSampleLSTM, x: torch.Tensor, grad_last: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """Each parameter's gradient per sample ``[B, *shape]`` of ``sum_b <grad_last[b], last[b]>``
    where ``last = lstm(x)``. The output sequence is the one the forward pass kept for this
    input (``per_sample_only``), else it is recomputed without gradients."""
    kept, lstm.kept = lstm.kept, None
    if kept is not None and _same_tensor(kept[0], x):
        out = kept[1]
    else:
        with torch.no_grad():
            out, _ = nn.LSTM.forward(lstm, x)
    h = lstm.hidden_size
    grads = {}
    for suffix, xs, outs, grad in (("", x, out[..., :h], grad_last[:, :h]),
                                   ("_reverse", x.flip(1), out[..., h:].flip(1), grad_last[:, h:])):
        w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
        d_gates, h_prev = _gate_gradients(xs, outs, grad, w_ih.detach(), w_hh.detach(),
                                          bias.detach())
        grads[f"weight_ih_l0{suffix}"] = torch.einsum("btg,bti->bgi", d_gates, xs)
        grads[f"weight_hh_l0{suffix}"] = torch.einsum("btg,bth->bgh", d_gates, h_prev)
        grads[f"bias_ih_l0{suffix}"] = d_gates.sum(1)
        grads[f"bias_hh_l0{suffix}"] = d_gates.sum(1)  # its own tensor: Opacus may add in place
    return grads


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same values in the same memory (Opacus hands the grad sampler a detached input)."""
    return a.shape == b.shape and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def _gate_gradients(x: torch.Tensor, out: torch.Tensor, grad_final: torch.Tensor,
                    w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction (time already in processing order): the gradient of each time step's gate
    pre-activations ``[B, T, 4H]`` given the gradient of the last hidden state, and the hidden
    state each step started from ``[B, T, H]``. Gate order as in ``nn.LSTM``: i, f, g, o."""
    batch, steps, hidden = out.shape
    zeros = out.new_zeros(batch, 1, hidden)
    h_prev = torch.cat([zeros, out[:, :-1]], dim=1)
    gates = x @ w_ih.T + h_prev @ w_hh.T + bias
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = torch.empty_like(out)
    state = out.new_zeros(batch, hidden)
    for t in range(steps):
        state = f[:, t] * state + i[:, t] * g[:, t]
        c[:, t] = state
    tanh_c = c.tanh()
    c_prev = torch.cat([zeros, c[:, :-1]], dim=1)
    d_gates = torch.empty_like(gates)
    d_h, d_c = grad_final, out.new_zeros(batch, hidden)
    for t in range(steps - 1, -1, -1):
        d_c = d_c + d_h * o[:, t] * (1 - tanh_c[:, t] ** 2)
        d_gates[:, t] = torch.cat([d_c * g[:, t] * i[:, t] * (1 - i[:, t]),
                                   d_c * c_prev[:, t] * f[:, t] * (1 - f[:, t]),
                                   d_c * i[:, t] * (1 - g[:, t] ** 2),
                                   d_h * tanh_c[:, t] * o[:, t] * (1 - o[:, t])], dim=-1)
        d_h = d_gates[:, t] @ w_hh
        d_c = d_c * f[:, t]
    return d_gates, h_prev
