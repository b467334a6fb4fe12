"""Splits, normalisation statistics and the DataBundle the engine trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlcli.data.catalog import DATASETS
from dlcli.errors import DlcliError


@dataclass
class Split:
    x: torch.Tensor  # uint8 images (N, C, H, W) or float features
    y: torch.Tensor  # int64 class indices

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Normalizer:
    """(x - mean) / std per channel (images) or per feature, with statistics of the training split."""

    mean: list[float]
    std: list[float]
    image: bool

    def __post_init__(self):
        shape = (1, -1, 1, 1) if self.image else (1, -1)
        self._mean = torch.tensor(self.mean).view(shape)
        self._inv_std = 1.0 / torch.tensor(self.std).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._mean.device != x.device:
            self._mean, self._inv_std = self._mean.to(x.device), self._inv_std.to(x.device)
        return (x.float() - self._mean) * self._inv_std

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "image": self.image}


@dataclass
class DataBundle:
    train: Split
    val: Split | None
    test: Split
    classes: list[str]
    input_shape: tuple[int, ...]
    normalizer: Normalizer


def statistics(x: torch.Tensor) -> tuple[list[float], list[float], bool]:
    """Per-channel mean and std of images (N, C, H, W), per-feature otherwise; accumulated in float64 chunks."""
    image = x.dim() == 4
    dims = (0, 2, 3) if image else tuple(range(x.dim() - 1))
    total = total_sq = 0
    count = 0
    for chunk in x.split(8192):
        c = chunk.double()
        total = total + c.sum(dims)
        total_sq = total_sq + (c * c).sum(dims)
        count += c.numel() // c.shape[1 if image else -1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist(), image


def load_data(cfg) -> DataBundle:
    """The configured dataset, split into train/val/test with a seeded permutation, and its normalisation."""
    from dlcli.data import loaders

    source = DATASETS[cfg.data.dataset]
    train_x, train_y, test_x, test_y, classes = loaders.load(source, cfg.data, cfg.seed)
    n = len(train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = int(round(n * cfg.data.val_split))
    if cfg.data.val_split and n_val == 0:
        n_val = 1
    val_idx, train_idx = order[:n_val], order[n_val:]
    if cfg.data.max_train_samples is not None:
        train_idx = train_idx[: cfg.data.max_train_samples]
    if len(train_idx) == 0:
        raise DlcliError(f"data.val_split {cfg.data.val_split} leaves no training samples of {n}")
    train_idx, _ = train_idx.sort()
    val_idx, _ = val_idx.sort()
    train = Split(train_x[train_idx], train_y[train_idx])
    val = Split(train_x[val_idx], train_y[val_idx]) if n_val else None
    mean, std, image = statistics(train.x)
    return DataBundle(train, val, Split(test_x, test_y), classes, tuple(train_x.shape[1:]), Normalizer(mean, std, image))
