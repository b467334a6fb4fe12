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
    raw = loaders.load(source, cfg.data, cfg.seed)
    n = len(raw.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))

    def carve(fraction: float) -> torch.Tensor:
        """The next `fraction` of the seeded order, sorted; at least one sample when the fraction is not 0."""
        nonlocal order
        k = max(int(round(n * fraction)), 1 if fraction else 0)
        taken, order = order[:k], order[k:]
        return taken.sort().values

    test_idx = carve(cfg.data.test_split) if raw.test_y is None else None
    val_idx = carve(cfg.data.val_split) if raw.val_y is None else None
    train_idx = order if cfg.data.max_train_samples is None else order[: cfg.data.max_train_samples]
    if len(train_idx) == 0:
        raise DlcliError(f"data.val_split {cfg.data.val_split} leaves no training samples of {n}")
    pick = lambda idx: Split(raw.train_x[idx], raw.train_y[idx])  # noqa: E731
    train = pick(train_idx.sort().values)
    test = pick(test_idx) if test_idx is not None else Split(raw.test_x, raw.test_y)
    if val_idx is not None:
        val = pick(val_idx) if len(val_idx) else None
    else:
        val = Split(raw.val_x, raw.val_y)
    mean, std, image = statistics(train.x)
    shape = tuple(raw.train_x.shape[1:])
    return DataBundle(train, val, test, raw.classes, shape, Normalizer(mean, std, image))
