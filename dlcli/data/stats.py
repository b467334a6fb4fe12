"""Normalisation statistics: per-channel (images) or per-feature mean and standard deviation of a training split."""

from __future__ import annotations

import torch

STATS_CHUNK_VALUES = 1 << 22  # values per float64 chunk: bounded temporaries, whatever the split's size


def statistics(x: torch.Tensor) -> tuple[list[float], list[float], bool]:
    """Per-channel mean and std of images (N, C, H, W), per-feature otherwise; accumulated in float64 chunks."""
    image = x.dim() == 4
    dims = (0, 2, 3) if image else tuple(range(x.dim() - 1))
    total = total_sq = 0
    count = 0
    rows = max(1, STATS_CHUNK_VALUES // max(1, x[0].numel()))  # bounded float64 temporaries, whatever the sample size
    for chunk in x.split(rows):
        c = chunk.double()
        total = total + c.sum(dims)
        total_sq = total_sq + (c * c).sum(dims)
        count += c.numel() // c.shape[1 if image else -1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    # A feature constant in the training split is centred, not scaled: dividing by its ~0 spread would blow any other
    # value it takes in validation, test or predict rows up by a million (scikit-learn's StandardScaler does the same).
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return mean.tolist(), std.tolist(), image
