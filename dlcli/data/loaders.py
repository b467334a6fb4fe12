"""Reading datasets into uint8/float tensors: MNIST-format IDX files, torchvision downloads, synthetic data.

Parsed sets are cached as one tensor file under `<root>/.cache/` (dlcli.data.cache), so a changed source is parsed
again.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import torch

from dlcli.data.cache import cached_tensors, file_stamp
from dlcli.errors import DataError, RUNTIME

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_DATASETS = Path("/usr/share/datasets")
DEBIAN_PACKAGES = {"fashion-mnist"}  # the dataset-* packages Debian ships today


class Raw(NamedTuple):
    """A dataset as read: test (image folders without test/) and val (only image folders' val/) may be None."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: list[str]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None


# ---------------------------------------------------------------- MNIST family


def _search_dirs(source, root: Path) -> list[Path]:
    names = [source.dataset] + ([source.debian] if source.debian else [])
    dirs = [root / n for n in names] + [root, root / source.torchvision / "raw"]
    if os.environ.get("DLCLI_DATA"):
        env = Path(os.environ["DLCLI_DATA"])
        dirs += [env / n for n in names] + [env]
    if source.debian:
        dirs.append(DEBIAN_DATASETS / source.debian)
    return dirs


def _find_idx(directory: Path) -> list[Path] | None:
    found = []
    for base in IDX_FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzipped or not) of unsigned bytes as a tensor of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})", RUNTIME) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)", RUNTIME)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, count = 4 + 4 * ndim, 1
    for d in dims:
        count *= d
    if len(raw) - start != count:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - start} bytes of data, header says {count})", RUNTIME)
    return torch.frombuffer(bytearray(raw[start:]), dtype=torch.uint8).reshape(dims)


def load_builtin(source) -> Raw:
    """mnist, fashion_mnist, kmnist (IDX files) or cifar10/100 (torchvision's files)."""
    reader = load_idx_dataset if source.reader == "idx" else load_cifar
    return Raw(*reader(source))


def load_idx_dataset(source):
    root = Path(source.root)
    for directory in _search_dirs(source, root):
        files = _find_idx(directory)
        if files:
            def parse():
                tx, ty, vx, vy = (read_idx(p) for p in files)
                return {"train_x": tx.unsqueeze(1), "train_y": ty.long(), "test_x": vx.unsqueeze(1), "test_y": vy.long()}

            cache = root / ".cache" / f"{source.dataset}-{file_stamp(files)}.pt"
            t = cached_tensors(cache, parse)
            return t["train_x"], t["train_y"], t["test_x"], t["test_y"], list(source.classes)
    if not source.download:
        raise DataError(_missing_message(source, root, "data.download is false"), RUNTIME)
    tx, ty, vx, vy = _torchvision(source, root, lambda ds: (ds.data.unsqueeze(1), ds.targets.long()))
    return tx, ty, vx, vy, list(source.classes)


def _missing_message(source, root: Path, why: str) -> str:
    debian = f", or install Debian's package dataset-{source.debian}" if source.debian in DEBIAN_PACKAGES else ""
    return (
        f"{source.dataset}: no IDX files found ({why}). Put {', '.join(f + '[.gz]' for f in IDX_FILES)} "
        f"in {root / source.dataset}/ or in $DLCLI_DATA/{source.dataset}/{debian}"
    )


def _torchvision(source, root: Path, convert):
    import torchvision.datasets as tvd

    cls = getattr(tvd, source.torchvision)
    try:
        splits = [cls(str(root), train=train, download=True) for train in (True, False)]
    except Exception as err:  # urllib and torchvision raise many kinds; all mean the same to the user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if source.reader == "idx":
            raise DataError(_missing_message(source, root, f"download failed: {reason}"), RUNTIME) from None
        raise DataError(
            f"{source.dataset}: download into {root}/ failed ({reason}). Offline? Copy the extracted "
            f"torchvision archive (e.g. cifar-10-batches-py/) into {root}/ and set data.download: false",
            RUNTIME,
        ) from None
    (tx, ty), (vx, vy) = (convert(s) for s in splits)
    return tx, ty, vx, vy


# ---------------------------------------------------------------- CIFAR


def load_cifar(source):
    import torchvision.datasets as tvd

    root = Path(source.root)
    cls = getattr(tvd, source.torchvision)

    def convert(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.long)

    try:
        splits = [cls(str(root), train=train, download=False) for train in (True, False)]
        (tx, ty), (vx, vy) = (convert(s) for s in splits)
        classes = list(splits[0].classes)
    except RuntimeError:
        if not source.download:
            raise DataError(
                f"{source.dataset}: not found in {root}/ and data.download is false: copy the extracted torchvision "
                f"archive there or set data.download: true on a machine with internet",
                RUNTIME,
            ) from None
        tx, ty, vx, vy = _torchvision(source, root, convert)
        classes = list(cls(str(root), train=False, download=False).classes)
    return tx, ty, vx, vy, classes


# ---------------------------------------------------------------- synthetic


def load_synthetic(syn, seed) -> Raw:
    """Each class is a random prototype; samples are prototypes plus Gaussian noise (seeded, so reproducible)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(syn.num_classes, *syn.shape, generator=g)

    def draw(n):
        y = torch.randint(0, syn.num_classes, (n,), generator=g)
        return prototypes[y] + syn.noise * torch.randn(n, *syn.shape, generator=g), y

    (tx, ty), (vx, vy) = draw(syn.train_samples), draw(syn.test_samples)
    return Raw(tx, ty, vx, vy, [f"class_{i}" for i in range(syn.num_classes)])
