"""Reading datasets into uint8/float tensors: MNIST-format IDX files, torchvision downloads, synthetic data.

Parsed sets are cached as one tensor file under `<root>/.cache/`, keyed by the source files' paths, sizes and
modification times, so a changed source is parsed again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch

from dlcli.errors import RUNTIME, DlcliError

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


def load(source, data_cfg, seed: int) -> Raw:
    from dlcli.data.folders import load_image_folder

    readers = {"idx": load_idx_dataset, "cifar": load_cifar, "synthetic": load_synthetic, "folder": load_image_folder}
    return Raw(*readers[source.kind](source, data_cfg, seed))


# ---------------------------------------------------------------- MNIST family


def _search_dirs(source, root: Path) -> list[Path]:
    names = [source.name] + ([source.debian] if source.debian else [])
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
        raise DlcliError(f"{path}: cannot read IDX file ({err})", RUNTIME) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DlcliError(f"{path}: not an IDX file of unsigned bytes (bad magic number)", RUNTIME)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, count = 4 + 4 * ndim, 1
    for d in dims:
        count *= d
    if len(raw) - start != count:
        raise DlcliError(f"{path}: truncated IDX file ({len(raw) - start} bytes of data, header says {count})", RUNTIME)
    return torch.frombuffer(bytearray(raw[start:]), dtype=torch.uint8).reshape(dims)


def _cached(files: list[Path], root: Path, name: str, parse):
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache = root / ".cache" / f"{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    tensors = parse()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(tensors, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only root still trains, just without the cache
    return tensors


def load_idx_dataset(source, data_cfg, seed):
    root = Path(data_cfg.root)
    for directory in _search_dirs(source, root):
        files = _find_idx(directory)
        if files:
            def parse():
                tx, ty, vx, vy = (read_idx(p) for p in files)
                return {"train_x": tx.unsqueeze(1), "train_y": ty.long(), "test_x": vx.unsqueeze(1), "test_y": vy.long()}

            t = _cached(files, root, source.name, parse)
            return t["train_x"], t["train_y"], t["test_x"], t["test_y"], list(source.classes)
    if not data_cfg.download:
        raise DlcliError(_missing_message(source, root, "data.download is false"), RUNTIME)
    tx, ty, vx, vy = _torchvision(source, root, lambda ds: (ds.data.unsqueeze(1), ds.targets.long()))
    return tx, ty, vx, vy, list(source.classes)


def _missing_message(source, root: Path, why: str) -> str:
    debian = f", or install Debian's package dataset-{source.debian}" if source.debian in DEBIAN_PACKAGES else ""
    return (
        f"{source.name}: no IDX files found ({why}). Put {', '.join(f + '[.gz]' for f in IDX_FILES)} "
        f"in {root / source.name}/ or in $DLCLI_DATA/{source.name}/{debian}"
    )


def _torchvision(source, root: Path, convert):
    import torchvision.datasets as tvd

    cls = getattr(tvd, source.torchvision)
    try:
        splits = [cls(str(root), train=train, download=True) for train in (True, False)]
    except Exception as err:  # urllib and torchvision raise many kinds; all mean the same to the user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if source.kind == "idx":
            raise DlcliError(_missing_message(source, root, f"download failed: {reason}"), RUNTIME) from None
        raise DlcliError(
            f"{source.name}: download into {root}/ failed ({reason}). Offline? Copy the extracted "
            f"torchvision archive (e.g. cifar-10-batches-py/) into {root}/ and set data.download: false",
            RUNTIME,
        ) from None
    (tx, ty), (vx, vy) = (convert(s) for s in splits)
    return tx, ty, vx, vy


# ---------------------------------------------------------------- CIFAR


def load_cifar(source, data_cfg, seed):
    import torchvision.datasets as tvd

    root = Path(data_cfg.root)
    cls = getattr(tvd, source.torchvision)

    def convert(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.long)

    try:
        splits = [cls(str(root), train=train, download=False) for train in (True, False)]
        (tx, ty), (vx, vy) = (convert(s) for s in splits)
        classes = list(splits[0].classes)
    except RuntimeError:
        if not data_cfg.download:
            raise DlcliError(
                f"{source.name}: not found in {root}/ and data.download is false: copy the extracted torchvision "
                f"archive there or set data.download: true on a machine with internet",
                RUNTIME,
            ) from None
        tx, ty, vx, vy = _torchvision(source, root, convert)
        classes = list(cls(str(root), train=False, download=False).classes)
    return tx, ty, vx, vy, classes


# ---------------------------------------------------------------- synthetic


def load_synthetic(source, data_cfg, seed):
    """Each class is a random prototype; samples are prototypes plus Gaussian noise (seeded, so reproducible)."""
    syn = data_cfg.synthetic
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(syn.num_classes, *syn.shape, generator=g)

    def draw(n):
        y = torch.randint(0, syn.num_classes, (n,), generator=g)
        return prototypes[y] + syn.noise * torch.randn(n, *syn.shape, generator=g), y

    (tx, ty), (vx, vy) = draw(syn.train_samples), draw(syn.test_samples)
    return tx, ty, vx, vy, [f"class_{i}" for i in range(syn.num_classes)]
