"""Opacus' per-sample gradients for the EHR encoder's :class:`PerSampleLSTM` (imported for its
registration by client/privacy/dp_sgd.py): the module's forward is ``nn.LSTM``'s, and its
per-sample gradients come from one extra pass through time (shared_model/per_sample_lstm.py)
instead of Opacus' DPLSTM, whose every time step is a hooked Python cell."""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn

from shared_model.per_sample_lstm import PerSampleLSTM, per_sample_gradients


@register_grad_sampler(PerSampleLSTM)
def lstm_grad_sample(layer: PerSampleLSTM, activations: list[torch.Tensor],
                     backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus' grad-sampler signature: the module's input and the gradient of its output (already
    scaled for the loss reduction) -> each trainable parameter's per-sample gradient."""
    grads = per_sample_gradients(layer, activations[0], backprops)
    return {p: grads[name] for name, p in layer.named_parameters() if p.requires_grad}
