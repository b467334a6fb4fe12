"""`image_folder`: root/train/<class>/*.png|jpg|..., optional root/val/ and root/test/ with the same classes.

Images of any size and mode are decoded exactly as `dlcli predict` decodes them (dlcli.predict.load_image):
channels from data.channels, resized to data.image_size, uint8. Class names are the folder names, sorted.
"""

from __future__ import annotations

from pathlib import Path

from dlcli.errors import DlcliError

SPLITS = ("train", "val", "test")
STREAM_ABOVE_BYTES = 2 << 30  # data.stream: auto decodes into memory up to 2 GiB of uint8 pixels


def image_size(data_cfg) -> tuple[int, int]:
    size = data_cfg.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def folder_classes(root: Path) -> list[str]:
    train = root / "train"
    if not train.is_dir():
        raise DlcliError(f"image_folder: {train}/ is missing: put one folder of images per class in it "
                         f"(e.g. {train}/cat/1.png)")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DlcliError(f"image_folder: {train}/ needs at least two class folders, found {len(classes)}")
    return classes


def list_split(root: Path, split: str, classes: list[str]) -> tuple[list[Path], list[int]] | None:
    """(files, labels) of one split folder, or None when the folder does not exist."""
    from dlcli.predict import IMAGE_EXTENSIONS

    directory = root / split
    if not directory.is_dir():
        return None
    extra = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DlcliError(f"image_folder: {directory}/{extra[0]}/ is not a class of train/ ({', '.join(classes)})")
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = directory / name
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) \
            if folder.is_dir() else []
        if not found and split == "train":
            raise DlcliError(f"image_folder: class folder {folder}/ has no images "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
        files += found
        labels += [index] * len(found)
    return files, labels


def decode_one(path: Path, shape: tuple[int, int, int]):
    """One file as a uint8 tensor (C, H, W), decoded as predict decodes; a one-line error naming a bad file."""
    from dlcli.predict import ImageError, load_image

    try:
        return load_image(str(path), shape)
    except ImageError as err:
        raise DlcliError(f"image_folder: {path}: {err}") from None


def decode_all(files: list[Path], shape: tuple[int, int, int]):
    """Every file as one uint8 tensor (N, C, H, W)."""
    import torch

    out = torch.empty((len(files), *shape), dtype=torch.uint8)
    for i, path in enumerate(files):
        out[i] = decode_one(path, shape)
    return out


def load_image_folder(source, data_cfg, seed):
    """Raw splits; val and test are None where their folder does not exist (they are then cut from train)."""
    import torch

    from dlcli.data.loaders import Raw

    from dlcli.data.stream import FileList

    root = Path(data_cfg.root)
    classes = folder_classes(root)
    shape = (data_cfg.channels, *image_size(data_cfg))
    listed = {s: list_split(root, s, classes) for s in SPLITS}
    listed = {s: v for s, v in listed.items() if v is not None and v[0]}
    total = sum(len(files) for files, _ in listed.values()) * shape[0] * shape[1] * shape[2]
    stream = data_cfg.stream if isinstance(data_cfg.stream, bool) else total > STREAM_ABOVE_BYTES
    decoded = {}
    for split, (files, labels) in listed.items():
        x = FileList(files, shape, data_cfg.num_workers) if stream else decode_all(files, shape)
        decoded[split] = (x, torch.tensor(labels, dtype=torch.long))
    none = (None, None)
    return Raw(*decoded["train"], *decoded.get("test", none), classes, *decoded.get("val", none))
