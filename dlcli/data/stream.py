"""Image folders too large for memory: files decoded on the fly by DataLoader worker processes.

A StreamingSplit offers what the engine uses of an in-memory Split: len(), the labels `y`, and `batches()` over a
given order. The order is the engine's seeded permutation, so data order, resume and augmentation behave exactly
as in memory; only the decoding moves to workers.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from dlcli.errors import DlcliError


class FileList:
    """Image paths standing in for an (N, C, H, W) uint8 tensor: indexing selects files, nothing is decoded."""

    def __init__(self, files: list, image_shape: tuple[int, int, int], workers: int):
        self.files, self.image_shape, self.workers = list(files), tuple(image_shape), workers

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.image_shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx) -> "FileList":
        files = self.files[idx] if isinstance(idx, slice) else [self.files[i] for i in torch.as_tensor(idx).tolist()]
        return FileList(files, self.image_shape, self.workers)

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        """Decode these files here, in this process (evaluation walks a split in slices this way)."""
        from dlcli.data.folders import decode_all

        return decode_all(self.files, self.image_shape).to(device)


class _Decode(Dataset):
    """Worker side: (image, "") or (zeros, reason), so a bad file is reported by the main process in one line."""

    def __init__(self, files: FileList):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from dlcli.data.folders import decode_one

        try:
            return decode_one(self.files.files[i], self.files.image_shape), ""
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
                raise DlcliError(bad)
            y = self.y[chunk]
            if device is not None:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield x, y

    def sample(self, limit: int, seed: int) -> torch.Tensor:
        """Up to `limit` decoded images, a seeded sample, for the normalisation statistics."""
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        return torch.cat([x for x, _ in self.batches(pick.split(256))])
