"""Image files standing in for a uint8 tensor until a split is known, then decoded once (and cached) or streamed.

A FileList is what an image folder reads: paths, no pixels. Splitting indexes it like a tensor, so only the files of
each split are ever decoded, straight into that split's tensor (no second copy of the pixels). Folders too large for
memory become a StreamingSplit: it offers what the engine uses of an in-memory Split (len(), the labels `y`,
`batches()` over a given order) and decodes each batch in DataLoader worker processes, in the engine's seeded order,
so data order, resume and augmentation behave exactly as in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from dlcli.data.images import ImageError, decode_all, load_image
from dlcli.errors import DataError, DlcliError


CACHED_SPLITS = 6  # decoded splits kept per folder (train/val/test of the last two seeds or sizes, say)


def _named(path, err, origin=None) -> DlcliError:
    """A bad image in one line: where it was listed (origin.where(path), e.g. a table's file, line and column), or
    the image folder's file."""
    where = origin.where(path) if origin is not None else None
    return DlcliError(f"{where}: {path}: {err}" if where else f"image_folder: {path}: {err}")


def decode_one(path: Path, shape: tuple[int, int, int], origin=None) -> torch.Tensor:
    """One file as a uint8 tensor (C, H, W); a one-line error naming a bad file."""
    try:
        return load_image(str(path), shape)
    except ImageError as err:
        raise _named(path, err, origin) from None


class FileList:
    """Image paths standing in for an (N, C, H, W) uint8 tensor: indexing selects files, nothing is decoded.

    stream: whether a split of these files is decoded per batch by `workers` processes instead of into memory;
    cache_dir: where decoded splits are kept for the next run (None: no cache);
    origin: what names the place a file was listed in an error (`.where(path) -> str | None`; None: the file alone).
    """

    def __init__(self, files: list, image_shape: tuple[int, int, int], workers: int, stream: bool = False,
                 cache_dir: Path | None = None, origin=None):
        self.files, self.image_shape, self.workers = list(files), tuple(image_shape), workers
        self.stream, self.cache_dir, self.origin = stream, cache_dir, origin

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.image_shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx) -> "FileList":
        files = self.files[idx] if isinstance(idx, slice) else [self.files[i] for i in torch.as_tensor(idx).tolist()]
        return FileList(files, self.image_shape, self.workers, self.stream, self.cache_dir, self.origin)

    def _named(self, path, err) -> DlcliError:
        return _named(path, err, self.origin)

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        """Decode these files here, in this process (evaluation walks a streamed split in slices this way)."""
        return decode_all(self.files, self.image_shape, self._named).to(device)

    def decoded(self) -> tuple[torch.Tensor, tuple | None]:
        """(all of these files as one tensor, their per-channel (mean, std, image) or None when not cached), from
        the cache when the same files were decoded at this size before (memory-mapped: a second run starts at once,
        without reading every pixel again for the statistics)."""
        if self.cache_dir is None or not self.files:
            return decode_all(self.files, self.image_shape, self._named), None
        from dlcli.data.stats import statistics
        from dlcli.data.cache import cached_tensors, file_stamp

        def make():
            x = decode_all(self.files, self.image_shape, self._named)
            mean, std, _ = statistics(x)
            return {"x": x, "mean": torch.tensor(mean, dtype=torch.float64), "std": torch.tensor(std, dtype=torch.float64)}

        key = file_stamp(self.files, extra=f"decoded {self.image_shape}")
        found = cached_tensors(self.cache_dir / f"images-{key}.pt", make, mmap=True, keep=CACHED_SPLITS)
        stats = (found["mean"].tolist(), found["std"].tolist(), True) if "mean" in found else None
        return found["x"], stats


class _Decode(Dataset):
    """Worker side: (image, "") or (zeros, reason), so a bad file is reported by the main process in one line."""

    def __init__(self, files: FileList):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return decode_one(self.files.files[i], self.files.image_shape, self.files.origin), ""
        except DlcliError as err:
            return torch.zeros(self.files.image_shape, dtype=torch.uint8), str(err)


class StreamingSplit:
    def __init__(self, x: FileList, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "StreamingSplit":
        return self  # batches move to the device as they are decoded

    def batches(self, indices, device=None):
        """(uint8 images, labels) of each index tensor in `indices`, decoded by worker processes."""
        chunks = [idx.tolist() for idx in indices]
        # A private generator: the loader's worker seeds must not draw from the global one the augmentations use.
        loader = iter(DataLoader(_Decode(self.x), batch_sampler=[c for c in chunks if c], num_workers=self.x.workers,
                                 generator=torch.Generator().manual_seed(0),
                                 pin_memory=device is not None and torch.device(device).type == "cuda"))
        for chunk in chunks:
            # A DDP rank's share of a last batch smaller than the world is empty: it still takes its step.
            x, problems = next(loader) if chunk else (torch.zeros((0, *self.x.image_shape), dtype=torch.uint8), [])
            bad = next((p for p in problems if p), None)
            if bad:
                raise DataError(bad)
            y = self.y[chunk]
            if device is not None:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield x, y

    def sample(self, limit: int, seed: int) -> torch.Tensor:
        """Up to `limit` decoded images, a seeded sample, for the normalisation statistics."""
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        return torch.cat([x for x, _ in self.batches(pick.split(256))])
