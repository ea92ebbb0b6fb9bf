"""DP-SGD parts built from Opacus, with the site's own randomness for noise and sampling.

Opacus computes the per-sample gradients (``GradSampleModule``, hooks) and clips and sums them
(``DPOptimizer``); only the noise is drawn differently: from the round's ChaCha20 stream
(:class:`SecureRandom`) instead of a torch generator. Batches are Poisson samples of privacy units
(:class:`UnitPoissonSampler`), with empty batches kept (a noise-only step), as Opacus' own
``DPDataLoader`` does.
"""

from __future__ import annotations

import client.privacy.quiet_opacus  # noqa: F401  (first: before any opacus import)

# isort: split
from dataclasses import dataclass

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

import client.privacy.lstm_grad_sampler  # noqa: F401  (registers the EHR LSTM's per-sample gradients)
from client.privacy.mechanism import Mechanism
from client.privacy.sampling import UnitPoissonSampler
from client.privacy.secure_random import SecureRandom
from shared_model.per_sample_lstm import PerSampleLSTM

SAMPLING_STREAM, NOISE_STREAM = 0, 1  # two ChaCha20 nonces of the round's one key


class SecureNoiseDPOptimizer(DPOptimizer):
    """Opacus' DPOptimizer whose Gaussian noise comes from a :class:`SecureRandom` stream."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, noise_source: SecureRandom,
                 **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self.noise_source = noise_source
        self.noised_steps = 0  # steps that added noise: what the ledger must account
        self.attach_step_hook(self._count_step)

    @staticmethod
    def _count_step(optimizer: SecureNoiseDPOptimizer) -> None:
        optimizer.noised_steps += 1

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        sizes = [p.summed_grad.numel() for p in self.params]
        flat = (self.noise_source.gaussian_noise(sum(sizes), std) if std > 0
                else np.zeros(sum(sizes)))
        for p, chunk in zip(self.params, np.split(flat, np.cumsum(sizes)[:-1]), strict=True):
            _check_processed_flag(p.summed_grad)
            noise = torch.as_tensor(chunk, dtype=p.summed_grad.dtype, device=p.summed_grad.device)
            p.grad = (p.summed_grad + noise.view_as(p.summed_grad)).view_as(p)
            _mark_as_processed(p.summed_grad)


@dataclass
class DPTraining:
    """The wrapped model, optimizer and loader of one DP round."""

    model: GradSampleModule
    optimizer: SecureNoiseDPOptimizer
    loader: DataLoader
    sampler: UnitPoissonSampler


def unit_loader(dataset: TensorDataset, unit_of_row: np.ndarray, sampler: UnitPoissonSampler
                ) -> DataLoader:
    """A loader of Poisson batches of units; an empty batch keeps the tensors' shapes."""
    first = dataset[0]
    collate = wrap_collate_with_empty(collate_fn=default_collate,
                                      sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
                                      dtypes=[dtype_safe(x) for x in first])
    # The loader's own generator only seeds worker processes (there are none); giving it one
    # keeps torch's default generator out of the round entirely.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      generator=torch.Generator())


def make_dp_training(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: TensorDataset,
                     unit_of_row: np.ndarray, mechanism: Mechanism, *, key: bytes | None = None,
                     steps: int | None = None) -> DPTraining:
    """DP-SGD for one round of ``mechanism`` (``steps`` overrides its steps per round, for the
    canary audit); ``key`` (tests only) replaces the fresh secret."""
    if key is None:
        import secrets

        key = secrets.token_bytes(32)
    sampler = UnitPoissonSampler(unit_of_row, mechanism.sample_rate,
                                 mechanism.steps_per_round if steps is None else steps,
                                 SecureRandom(key, SAMPLING_STREAM))
    for module in model.modules():  # Opacus' optimizer uses per-sample gradients only
        if isinstance(module, PerSampleLSTM):
            module.per_sample_only = any(p.requires_grad for p in module.parameters())
    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    dp_optimizer = SecureNoiseDPOptimizer(
        optimizer, noise_source=SecureRandom(key, NOISE_STREAM),
        noise_multiplier=mechanism.noise_multiplier, max_grad_norm=mechanism.max_grad_norm,
        expected_batch_size=mechanism.units * mechanism.sample_rate, loss_reduction="mean")
    return DPTraining(wrapped, dp_optimizer, unit_loader(dataset, unit_of_row, sampler), sampler)


def trained_names(training: DPTraining) -> set[str]:
    """Canonical names of the parameters the DP optimizer updates."""
    from shared_model.params import canonical_name

    in_optimizer = {id(p) for group in training.optimizer.param_groups for p in group["params"]}
    return {canonical_name(n) for n, p in training.model.named_parameters()
            if id(p) in in_optimizer}
