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

    def batches(self, indices, device=None):
        """(x, y) of each index tensor in `indices`, cut by indexing the resident tensors."""
        for idx in indices:
            yield self.x[idx], self.y[idx]


@dataclass
class Normalizer:
    """(x - mean) / std per channel (images) or per feature, with statistics of the training split.

    Token ids (text) pass through unchanged: `tokens` marks that identity.
    """

    mean: list[float]
    std: list[float]
    image: bool
    tokens: bool = False

    def __post_init__(self):
        shape = (1, -1, 1, 1) if self.image else (1, -1)
        self._mean = torch.tensor(self.mean).view(shape)
        self._inv_std = 1.0 / torch.tensor(self.std).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return x
        if self._mean.device != x.device:
            self._mean, self._inv_std = self._mean.to(x.device), self._inv_std.to(x.device)
        return (x.float() - self._mean) * self._inv_std

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "image": self.image, "tokens": self.tokens}


@dataclass
class DataBundle:
    train: Split
    val: Split | None
    test: Split
    classes: list[str]
    input_shape: tuple[int, ...]
    normalizer: Normalizer
    preprocessing: dict | None = None  # fitted on train, stored in data.json: CSV categories, fill values, vocab
    vocab_size: int | None = None


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


STATS_SAMPLE = 5000


class _Splitter:
    """Seeded index sets: test (when the dataset has none) and val are cut first, the rest is train."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def cut(self, fraction: float) -> torch.Tensor:
        k = max(int(round(self.n * fraction)), 1 if fraction else 0)
        taken, self.order = self.order[:k], self.order[k:]
        return taken.sort().values

    def train(self, cap: int | None, val_split: float) -> torch.Tensor:
        idx = self.order if cap is None else self.order[:cap]
        if len(idx) == 0:
            raise DlcliError(f"data.val_split {val_split} leaves no training samples of {self.n}")
        return idx.sort().values


def load_data(cfg, preprocessing: dict | None = None) -> DataBundle:
    """The configured dataset, split into train/val/test with a seeded permutation, and its normalisation.

    preprocessing: a run's stored CSV/text preprocessing, used instead of fitting it again (evaluate, predict).
    """
    from dlcli.data import loaders

    source = DATASETS[cfg.data.dataset]
    if source.kind == "table":
        return _load_table(cfg, preprocessing)
    raw = loaders.load(source, cfg.data, cfg.seed)
    cut = _Splitter(len(raw.train_y), cfg.seed)
    test_idx = cut.cut(cfg.data.test_split) if raw.test_y is None else None
    val_idx = cut.cut(cfg.data.val_split) if raw.val_y is None else None
    from dlcli.data.stream import FileList, StreamingSplit

    make = lambda x, y: StreamingSplit(x, y) if isinstance(x, FileList) else Split(x, y)  # noqa: E731
    pick = lambda idx: make(raw.train_x[idx], raw.train_y[idx])  # noqa: E731
    train = pick(cut.train(cfg.data.max_train_samples, cfg.data.val_split))
    test = pick(test_idx) if test_idx is not None else make(raw.test_x, raw.test_y)
    if val_idx is not None:
        val = pick(val_idx) if len(val_idx) else None
    else:
        val = make(raw.val_x, raw.val_y)
    # Streamed images: the statistics of a seeded sample of STATS_SAMPLE training images.
    mean, std, image = statistics(train.sample(STATS_SAMPLE, cfg.seed) if isinstance(train, StreamingSplit) else train.x)
    shape = tuple(raw.train_x.shape[1:])
    return DataBundle(train, val, test, raw.classes, shape, Normalizer(mean, std, image))


def _load_table(cfg, stored: dict | None) -> DataBundle:
    from dlcli.data.tables import preprocessor_for, read_table_dataset

    table = read_table_dataset(cfg.data)
    rows, labels = table["train"]
    cut = _Splitter(len(rows), cfg.seed)
    test_idx = cut.cut(cfg.data.test_split) if table["test"] is None else None
    val_idx = cut.cut(cfg.data.val_split)
    train_idx = cut.train(cfg.data.max_train_samples, cfg.data.val_split)
    state = {k: v for k, v in stored.items() if k != "kind"} if stored else None
    pre = preprocessor_for(cfg.data, table["header"], state)
    source = str(cfg.data.train_file)
    if state is None:
        pre.fit([rows[i] for i in train_idx.tolist()], source)

    def encode(sel_rows, sel_labels, where, lines=None) -> Split:
        x, kept = pre.encode(sel_rows, where, lines)
        return Split(x, torch.tensor([sel_labels[k] for k in kept], dtype=torch.long))

    def subset(idx) -> Split:
        idx = idx.tolist()
        return encode([rows[i] for i in idx], [labels[i] for i in idx], source, [i + 2 for i in idx])
    train = subset(train_idx)
    val = subset(val_idx) if len(val_idx) else None
    test = subset(test_idx) if test_idx is not None else encode(*table["test"], str(cfg.data.test_file))
    if pre.kind == "text":
        normalizer = Normalizer([0.0], [1.0], image=False, tokens=True)
        vocab_size = pre.vocab_size
    else:
        mean, std, _ = statistics(train.x)
        for i in pre.unscaled():  # one-hot indicators stay 0/1
            mean[i], std[i] = 0.0, 1.0
        normalizer, vocab_size = Normalizer(mean, std, image=False), None
    return DataBundle(train, val, test, table["classes"], (pre.width,), normalizer,
                      {"kind": pre.kind, **pre.state}, vocab_size)
