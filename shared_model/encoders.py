"""Trainable modality encoders, each projecting its input to the shared dimension ``hidden``."""

from __future__ import annotations

import torch
from torch import nn

from shared_model.per_sample_lstm import PerSampleLSTM


class EHREncoder(nn.Module):
    """BiLSTM over the hourly series (values and observation mask) plus demographics."""

    def __init__(self, variables: int, demographics: int, lstm_hidden: int, out_features: int,
                 lstm: str = "torch") -> None:
        super().__init__()
        if lstm == "dp":  # same parameters and outputs; per-sample gradients for DP-SGD
            self.lstm: nn.LSTM = PerSampleLSTM(2 * variables, lstm_hidden)
        else:
            self.lstm = nn.LSTM(2 * variables, lstm_hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Sequential(nn.Linear(2 * lstm_hidden + demographics, out_features), nn.ReLU())
        self.out_features = out_features

    def forward(self, series: torch.Tensor, mask: torch.Tensor, demographics: torch.Tensor
                ) -> torch.Tensor:
        x = torch.cat([series, mask], dim=-1)
        if isinstance(self.lstm, PerSampleLSTM):
            last = self.lstm(x)
        else:
            _, (h, _) = self.lstm(x)
            last = torch.cat([h[-2], h[-1]], dim=-1)  # final forward and backward states
        return self.proj(torch.cat([last, demographics], dim=-1))


class FeatureProjection(nn.Module):
    """Projection head over cached frozen-backbone features (notes or images).

    A LayerNorm first puts every sample's features on one scale (backbone outputs arrive
    unscaled, while the EHR is standardized); it normalizes within the sample, so no statistic is
    fitted on any site's data (DP-safe, identical at every site). Dropout acts on the projection,
    not on the raw features.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, out_features),
                                 nn.ReLU(), nn.Dropout(dropout))
        self.out_features = out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    """Two-layer perceptron used by the gate, the experts and the fusion head."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_features))
