"""Splits, normalisation statistics and the DataBundle the engine trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dlcli.data.stats import statistics  # noqa: F401 (dlcli.data.statistics)
from dlcli.errors import DataError


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

    Token ids (text) pass through unchanged: `tokens` marks that identity. Images for a pretrained backbone are first
    resized to `size` [height, width] (bilinear, antialiased) and grayscale ones repeated to `channels` (3), and the
    statistics are those the backbone's weights were trained with (dlcli.finetune).
    """

    mean: list[float]
    std: list[float]
    image: bool
    tokens: bool = False
    channels: int | None = None
    size: list[int] | None = None
    series: bool = False  # numeric sequences (N, T, C): each series z-normalised on its own first (the UCR way)

    def __post_init__(self):
        shape = (1, -1, 1, 1) if self.image else (1, -1)
        self._mean = torch.tensor(self.mean).view(shape)
        self._inv_std = 1.0 / torch.tensor(self.std).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return x
        if self._mean.device != x.device:
            self._mean, self._inv_std = self._mean.to(x.device), self._inv_std.to(x.device)
        x = x.float()
        if self.series:
            x = series_znorm(x)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(x, size=tuple(self.size), mode="bilinear", antialias=True)
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        return (x - self._mean) * self._inv_std

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape (without the batch axis) of what the model receives for inputs of `shape`."""
        return adapted_shape(shape, self.channels, self.size)

    def to_dict(self) -> dict:
        out = {"mean": self.mean, "std": self.std, "image": self.image, "tokens": self.tokens}
        out |= {"series": True} if self.series else {}
        return out | {k: v for k, v in (("channels", self.channels), ("size", self.size)) if v is not None}


def series_znorm(x: torch.Tensor) -> torch.Tensor:
    """Each channel of each series (B, T, C) to mean 0 and standard deviation 1 over its own steps; NaN padding stays
    NaN and a constant channel is only centred. Written with plain reductions so an exported graph holds it too."""
    valid = ~torch.isnan(x)
    filled = torch.where(valid, x, torch.zeros_like(x))
    count = valid.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
    mean = filled.sum(1, keepdim=True) / count
    centred = torch.where(valid, x - mean, torch.zeros_like(x))
    std = ((centred * centred).sum(1, keepdim=True) / count).sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return torch.where(valid, centred / std, x)


def adapted_shape(shape: tuple[int, ...], channels: int | None, size: list[int] | None) -> tuple[int, ...]:
    if len(shape) != 3:
        return tuple(shape)
    return (channels or shape[0], *(size or shape[1:]))


@dataclass
class DataBundle:
    train: Split
    val: Split | None
    test: Split
    classes: list[str]  # the outputs' names: classes, regression targets or multilabel labels
    input_shape: tuple[int, ...]
    normalizer: Normalizer
    preprocessing: dict | None = None  # fitted on train, stored in data.json: CSV categories, fill values, vocab
    vocab_size: int | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know about the splits
    target: dict = field(default_factory=dict)  # the task's fit on the training targets (data.json's `task`)


STATS_SAMPLE = 5000  # streamed images: the statistics come from this many, a seeded sample


class Splitter:
    """Seeded index sets: test (when the dataset has none) and val are cut first, the rest is train.

    stratified (the default): each cut takes its share of every class (at least one sample of a class that has two
    or more left), drawn in a seeded random order, so a small or imbalanced dataset keeps every class in every
    split where it can; `notes` says where it cannot. random: a seeded permutation cut without regard to class
    (how runs of dlcli 0.1 were split, and what their evaluation rebuilds).
    """

    def __init__(self, labels: torch.Tensor | None, seed: int, method: str = "stratified",
                 classes: list[str] | None = None, n: int | None = None):
        self.n = len(labels) if labels is not None else n
        self.order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        # labels None: nothing to stratify on (regression and multilabel targets), a seeded random cut
        self.labels = torch.as_tensor(labels)[self.order] if method == "stratified" and labels is not None else None
        self.taken = torch.zeros(self.n, dtype=torch.bool)  # by position in `order`
        self.classes, self.notes = classes, []

    def cut(self, fraction: float, name: str) -> torch.Tensor:
        if self.labels is None:
            free = (~self.taken).nonzero().flatten()
            k = max(int(round(self.n * fraction)), 1 if fraction else 0)
            chosen = free[:k]
        else:
            chosen = []
            classes, totals = self.labels.unique(return_counts=True)
            for c, total in zip(classes.tolist(), totals.tolist()):
                free = ((self.labels == c) & ~self.taken).nonzero().flatten()
                k = min(int(round(total * fraction)), len(free)) if fraction else 0  # a share of the whole class
                if fraction and k == 0:
                    if len(free) >= 2:
                        k = 1
                    else:
                        label = self.classes[c] if self.classes and c < len(self.classes) else c
                        self.notes.append(f"class '{label}' has {len(free)} sample(s) left for {name}: "
                                          f"the {name} split has none of it")
                chosen.append(free[:k])
            chosen = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
        self.taken[chosen] = True
        return self.order[chosen].sort().values

    def fold(self, k: int, folds: int) -> torch.Tensor:
        """Fold k (1-based) of `folds` of the samples not yet cut: every folds-th sample of the seeded order, taken
        class by class when stratified (as scikit-learn's StratifiedKFold), so each fold holds its share of every
        class and the K folds of one seed partition the same samples."""
        free = (~self.taken).nonzero().flatten()
        if self.labels is not None:
            free = free[torch.sort(self.labels[free], stable=True).indices]
        chosen = free[k - 1 :: folds]
        self.taken[chosen] = True
        return self.order[chosen].sort().values

    def cut_val(self, entry) -> torch.Tensor:
        """The validation split a data entry asks for: its cross-validation fold (data.cv_fold), else val_split."""
        fold = getattr(entry, "cv_fold", None)
        return self.fold(*fold) if fold else self.cut(entry.val_split, "val")

    def train(self, cap: int | None, val_split: float) -> torch.Tensor:
        idx = self.order[~self.taken]
        idx = idx if cap is None else idx[:cap]
        if len(idx) == 0:
            raise DataError(f"data.val_split {val_split} leaves no training samples of {self.n}")
        return idx.sort().values


def load_data(cfg, preprocessing: dict | None = None) -> DataBundle:
    """The configured dataset, split into train/val/test with a seeded permutation, and its normalisation.

    preprocessing: a run's stored CSV/text preprocessing, used instead of fitting it again (evaluate, predict).
    """
    return cfg.data.read(cfg.seed, preprocessing, task=cfg.task)


def image_split(x, y, known: dict, name: str = ""):
    """A split of image files (dlcli.data.stream.FileList) and their targets: streamed per batch, or decoded into
    memory with the statistics stored beside its cached pixels put in known[name]; a tensor x is a Split as it is."""
    from dlcli.data.stream import FileList, StreamingSplit

    if not isinstance(x, FileList):
        return Split(x, y)
    if x.stream:
        return StreamingSplit(x, y)
    pixels, known[name] = x.decoded()
    return Split(pixels, y)


def train_statistics(train, known: dict, seed: int) -> tuple[list[float], list[float], bool]:
    """The training split's normalisation statistics: those stored beside its cached pixels (image_split's known),
    else computed, on a seeded sample of STATS_SAMPLE images when the split is streamed."""
    from dlcli.data.stream import StreamingSplit

    if known.get("train"):
        return known["train"]
    return statistics(train.sample(STATS_SAMPLE, seed) if isinstance(train, StreamingSplit) else train.x)


def split_raw(raw, entry, seed: int) -> DataBundle:
    """Cut val (and test, when the dataset has none) from a Raw's train part; image files are decoded only now,
    each split straight into its own tensor."""
    cut = Splitter(raw.train_y, seed, entry.split, raw.classes)
    test_idx = cut.cut(entry.test_split, "test") if raw.test_y is None else None
    if raw.val_y is not None and getattr(entry, "cv_fold", None):
        raise DataError(f"train.cv: this {entry.dataset} dataset has its own validation split; cross-validation "
                        f"cuts its folds from the training samples: move the validation samples into train, or "
                        f"train without --cv")
    val_idx = cut.cut_val(entry) if raw.val_y is None else None

    known = {}  # a cached split's statistics, stored beside its pixels
    make = lambda x, y, name="": image_split(x, y, known, name)  # noqa: E731
    pick = lambda idx, name="": make(raw.train_x[idx], raw.train_y[idx], name)  # noqa: E731
    train = pick(cut.train(entry.max_train_samples, entry.val_split), "train")
    test = pick(test_idx) if test_idx is not None else make(raw.test_x, raw.test_y)
    if val_idx is not None:
        val = pick(val_idx) if len(val_idx) else None
    else:
        val = make(raw.val_x, raw.val_y)
    mean, std, image = train_statistics(train, known, seed)
    shape = tuple(raw.train_x.shape[1:])
    return DataBundle(train, val, test, raw.classes, shape, Normalizer(mean, std, image), notes=cut.notes)
