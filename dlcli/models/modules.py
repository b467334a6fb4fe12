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
        if isinstance(x, tuple):  # (vectors, lengths) from an embedding: pack, so padding is never read
            return self._packed(*x)
        if x.dim() == 4:
            b, c, h, w = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, (h_n, _) = self.lstm(x)
        if self.return_sequences:
            return out
        if self.lstm.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)
        return h_n[-1]

    def _packed(self, x, lengths):
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.return_sequences:
            return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], lengths
        if self.lstm.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)
        return h_n[-1]


class MaskedEmbedding(nn.Module):
    """Embedding with id 0 as padding; returns (vectors, lengths) for packed LSTMs and masked pooling."""

    def __init__(self, vocab_size, dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)

    def forward(self, ids):
        return self.embedding(ids), (ids != 0).sum(1)


class SequenceMean(nn.Module):
    def forward(self, x):
        if isinstance(x, tuple):
            x, lengths = x
            mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
            return (x * mask.unsqueeze(2)).sum(1) / lengths.clamp_min(1).unsqueeze(1).to(x.dtype)
        return x.mean(1)
