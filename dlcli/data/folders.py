"""`image_folder`: root/train/<class>/*.png|jpg|..., optional root/val/ and root/test/ with the same classes.

Images of any size and mode are decoded by dlcli.data.images, exactly as `dlcli predict` decodes them: channels
from the config, resized to its image_size, uint8. Class names are the folder names, sorted. Reading lists files
only; each split's files are decoded once the split is cut (dlcli.data.stream), into memory and the cache, or per
batch when the folder is too large for memory.
"""

from __future__ import annotations

from pathlib import Path

from dlcli.data.images import IMAGE_EXTENSIONS
from dlcli.data.loaders import Raw
from dlcli.errors import DataError

SPLITS = ("train", "val", "test")
STREAM_ABOVE_BYTES = 2 << 30  # stream: auto decodes into memory up to 2 GiB of uint8 pixels


def folder_classes(root: Path) -> list[str]:
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"image_folder: {train}/ is missing: put one folder of images per class in it "
                         f"(e.g. {train}/cat/1.png)")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image_folder: {train}/ needs at least two class folders, found {len(classes)}")
    return classes


def list_split(root: Path, split: str, classes: list[str]) -> tuple[list[Path], list[int]] | None:
    """(files, labels) of one split folder, or None when the folder does not exist."""
    directory = root / split
    if not directory.is_dir():
        return None
    extra = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DataError(f"image_folder: {directory}/{extra[0]}/ is not a class of train/ ({', '.join(classes)})")
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = directory / name
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) \
            if folder.is_dir() else []
        if not found and split == "train":
            raise DataError(f"image_folder: class folder {folder}/ has no images "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
        files += found
        labels += [index] * len(found)
    return files, labels


def load_image_folder(entry) -> Raw:
    """Raw splits as FileLists; val and test are None where their folder does not exist (then cut from train)."""
    import torch

    from dlcli.data.stream import FileList

    root = Path(entry.root)
    classes = folder_classes(root)
    shape = (entry.channels, *entry.size())
    listed = {s: list_split(root, s, classes) for s in SPLITS}
    listed = {s: v for s, v in listed.items() if v is not None and v[0]}
    total = sum(len(files) for files, _ in listed.values()) * shape[0] * shape[1] * shape[2]
    stream = entry.stream if isinstance(entry.stream, bool) else total > STREAM_ABOVE_BYTES
    cache_dir = root / ".cache" if entry.cache and not stream else None
    decoded = {split: (FileList(files, shape, entry.num_workers, stream, cache_dir), torch.tensor(labels))
               for split, (files, labels) in listed.items()}
    none = (None, None)
    return Raw(*decoded["train"], *decoded.get("test", none), classes, *decoded.get("val", none))
