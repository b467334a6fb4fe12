"""Small nn.Modules the layer registry needs and torch does not ship."""

from __future__ import annotations

import torch
from torch import nn


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


class LSTMBlock(nn.Module):
    """An LSTM over (batch, steps, features); an image batch (B, C, H, W) is read as H rows of C*W features.

    Returns the last step's output (the concatenation of both directions' final states when bidirectional),
    or every step's output with return_sequences.
    """

    def __init__(self, features, units, num_layers, bidirectional, dropout, return_sequences):
        super().__init__()
        self.lstm = nn.LSTM(
            features,
            units,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.return_sequences = return_sequences

    def forward(self, x):
        if x.dim() == 4:
            b, c, h, w = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, (h_n, _) = self.lstm(x)
        if self.return_sequences:
            return out
        if self.lstm.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)
        return h_n[-1]
