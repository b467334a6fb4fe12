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


class RecurrentBlock(nn.Module):
    """An LSTM or GRU over (batch, steps, features); an image batch (B, C, H, W) is read as H rows of C*W features.

    Returns the last step's output (the concatenation of both directions' final states when bidirectional),
    or every step's output with return_sequences. (values, lengths) are packed, so padding is never read.
    """

    rnn: nn.LSTM | nn.GRU

    def __init__(self, return_sequences):
        super().__init__()
        self.return_sequences = return_sequences

    def _final(self, h_n):
        if self.rnn.bidirectional:
            return torch.cat([h_n[-2], h_n[-1]], dim=1)
        return h_n[-1]

    def forward(self, x):
        if isinstance(x, tuple):
            return self._packed(*x)
        if x.dim() == 4:
            b, c, h, w = x.shape
            x = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, h_n = self.rnn(x)
        if self.return_sequences:
            return out
        return self._final(h_n[0] if isinstance(h_n, tuple) else h_n)

    def _packed(self, x, lengths):
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed)
        if self.return_sequences:
            return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], lengths
        return self._final(h_n[0] if isinstance(h_n, tuple) else h_n)


class LSTMBlock(RecurrentBlock):
    def __init__(self, features, units, num_layers, bidirectional, dropout, return_sequences):
        super().__init__(return_sequences)
        self.lstm = nn.LSTM(features, units, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if num_layers > 1 else 0.0)

    @property
    def rnn(self):
        return self.lstm


class GRUBlock(RecurrentBlock):
    def __init__(self, features, units, num_layers, bidirectional, dropout, return_sequences):
        super().__init__(return_sequences)
        self.gru = nn.GRU(features, units, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                          dropout=dropout if num_layers > 1 else 0.0)

    @property
    def rnn(self):
        return self.gru


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


# ---------------------------------------------------------------- numeric sequences (batch, steps, channels)
#
# A padded batch travels between layers as (values, lengths): values (B, T, C), lengths (B,) the real steps of each
# series. Values past a series' length are not guaranteed to be zero (a bias or a layer norm moves them); the layers
# that could read them (conv1d, batchnorm's training statistics, the global pools, the recurrent and attention layers)
# mask or pack what they read, so a padded series gives what it would give alone.


def step_mask(lengths, steps: int):
    """(B, steps) bool, True on each series' real steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class NaNPadding(nn.Module):
    """Series padded with NaN after their end -> (zero-filled values, lengths). A step counts as real when any of its
    channels is a number, and a series' length runs to its last real step (a gap inside it is filled with 0, the
    training mean after normalisation)."""

    def forward(self, x):
        real = ~torch.isnan(x).all(2)
        steps = torch.arange(1, x.shape[1] + 1, device=x.device)
        lengths = (real.long() * steps).amax(1).clamp_min(1)  # an empty series reads one (zero) step
        return torch.nan_to_num(x, nan=0.0), lengths


class OnValues(nn.Module):
    """Applies a parameter-free, step-wise module (an activation, dropout) to the values of (values, lengths)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        if isinstance(x, tuple):
            return self.module(x[0]), x[1]
        return self.module(x)


def _steps_after(lengths, kernel: int, stride: int, pad: int, dilation: int = 1):
    return (torch.div(lengths + 2 * pad - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1).clamp_min(1)


class Conv1d(nn.Conv1d):
    """nn.Conv1d over (B, T, C): the steps stay on axis 1 between layers, as Keras keeps them. The transposes are views
    that cancel out between consecutive convolutions, so a stack copies nothing extra. With (values, lengths), the
    steps past each length are zeroed first, so they read as the zero padding the series would get alone.

    padding 'same' with an odd total (an even kernel) pads one more step after than before, as Keras does; done here
    rather than by torch, which would warn on every call."""

    def __init__(self, channels, filters, kernel_size, stride=1, padding: int | str = 0, dilation=1, bias=True):
        total = dilation * (kernel_size - 1)
        self.same = padding == "same"
        self.extra = (total // 2, total - total // 2) if self.same and total % 2 else None
        pad = (0 if self.extra else total // 2) if self.same else padding
        super().__init__(channels, filters, kernel_size, stride=stride, padding=pad, dilation=dilation, bias=bias)

    def forward(self, x):
        lengths = None
        if isinstance(x, tuple):
            x, lengths = x
            x = x * step_mask(lengths, x.shape[1]).unsqueeze(2).to(x.dtype)
        x = x.transpose(1, 2)
        if self.extra is not None:
            x = nn.functional.pad(x, self.extra)
        out = super().forward(x).transpose(1, 2)
        if lengths is None:
            return out
        if self.same:
            return out, lengths
        return out, _steps_after(lengths, self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0])


class Pool1d(nn.Module):
    """Max or average pooling over the steps of (B, T, C); windows that end past a series' length are dropped from
    its length (floor, as Keras's 'valid' pooling does)."""

    def __init__(self, kind: str, kernel: int, stride: int):
        super().__init__()
        self.kind, self.kernel, self.stride = kind, kernel, stride

    def forward(self, x):
        lengths = None
        if isinstance(x, tuple):
            x, lengths = x
        pool = nn.functional.max_pool1d if self.kind == "max" else nn.functional.avg_pool1d
        out = pool(x.transpose(1, 2), self.kernel, self.stride).transpose(1, 2)
        if lengths is None:
            return out
        return out, _steps_after(lengths, self.kernel, self.stride, 0)

    def extra_repr(self):
        return f"{self.kind}, kernel_size={self.kernel}, stride={self.stride}"


class SequenceMax(nn.Module):
    """Max over the steps (only the real ones of a padded series)."""

    def forward(self, x):
        if isinstance(x, tuple):
            x, lengths = x
            x = x.masked_fill(~step_mask(lengths, x.shape[1]).unsqueeze(2), float("-inf"))
        return x.amax(1)


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the channels of (B, T, C). Training on a padded batch, its statistics come from the real steps
    alone; in eval mode it is a per-channel affine map, so it is applied everywhere."""

    def forward(self, x):
        if not isinstance(x, tuple):
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        x, lengths = x
        if not self.training:
            return super().forward(x.transpose(1, 2)).transpose(1, 2), lengths
        real = step_mask(lengths, x.shape[1])
        out = torch.zeros_like(x)
        out[real] = super().forward(x[real])
        return out, lengths


class SequenceLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each step; lengths pass through."""

    def forward(self, x):
        if isinstance(x, tuple):
            return super().forward(x[0]), x[1]
        return super().forward(x)


class PositionalEncoding(nn.Module):
    """Adds the sinusoids of Vaswani et al. (2017) to (B, T, D); a buffer left out of the checkpoint (it is a
    function of T and D alone)."""

    def __init__(self, steps: int, dim: int):
        super().__init__()
        position = torch.arange(steps, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-torch.log(torch.tensor(10000.0)) / dim))
        table = torch.zeros(steps, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x):
        return x + self.table[: x.shape[1]].to(x.dtype)


class TransformerEncoder(nn.Module):
    """An optional projection of the channels to the model width, sinusoidal positions, then pre-norm encoder layers
    (stable to train from scratch without warmup); a padded series' extra steps are masked out of attention."""

    def __init__(self, steps, features, dim, num_heads, ff_dim, num_layers, dropout):
        super().__init__()
        self.project = nn.Linear(features, dim) if dim != features else None
        self.position = PositionalEncoding(steps, dim)
        layer = nn.TransformerEncoderLayer(dim, num_heads, ff_dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(self, x):
        lengths = None
        if isinstance(x, tuple):
            x, lengths = x
        if self.project is not None:
            x = self.project(x)
        x = self.position(x)
        if lengths is None:
            return self.encoder(x)
        return self.encoder(x, src_key_padding_mask=~step_mask(lengths, x.shape[1])), lengths


class Residual(nn.Module):
    """x + body(x), the body's layers as named children (conv1d_1, batchnorm_1, ...) so the summary lists them;
    `shortcut` projects x where the body changes the width. Lengths, when present, are the body's."""

    def __init__(self, layers: list[tuple[str, nn.Module]], shortcut: nn.Module | None, activation: nn.Module | None):
        super().__init__()
        self.names = [name for name, _ in layers]
        for name, module in layers:
            self.add_module(name, module)
        self.shortcut = shortcut
        self.activation = activation

    def forward(self, x):
        y = x
        for name in self.names:
            y = getattr(self, name)(y)
        skip = self.shortcut(x) if self.shortcut is not None else x
        if isinstance(y, tuple):
            out, lengths = y[0] + (skip[0] if isinstance(skip, tuple) else skip), y[1]
            return (self.activation(out) if self.activation is not None else out), lengths
        out = y + skip
        return self.activation(out) if self.activation is not None else out
