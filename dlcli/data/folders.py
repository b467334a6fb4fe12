"""`image_folder`: root/train/<class>/*.png|jpg|..., optional root/val/ and root/test/ with the same classes.

Images of any size and mode are decoded exactly as `dlcli predict` decodes them (dlcli.predict.load_image):
channels from data.channels, resized to data.image_size, uint8. Class names are the folder names, sorted.
"""

from __future__ import annotations

from pathlib import Path

from dlcli.errors import DlcliError

SPLITS = ("train", "val", "test")


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


def decode_all(files: list[Path], shape: tuple[int, int, int]):
    """Every file as one uint8 tensor (N, C, H, W); a file that cannot be read is a one-line error naming it."""
    import torch

    from dlcli.predict import ImageError, load_image

    out = torch.empty((len(files), *shape), dtype=torch.uint8)
    for i, path in enumerate(files):
        try:
            out[i] = load_image(str(path), shape)
        except ImageError as err:
            raise DlcliError(f"image_folder: {path}: {err}") from None
    return out


def load_image_folder(source, data_cfg, seed):
    """Raw splits; val and test are None where their folder does not exist (they are then cut from train)."""
    import torch

    from dlcli.data.loaders import Raw

    root = Path(data_cfg.root)
    classes = folder_classes(root)
    shape = (data_cfg.channels, *image_size(data_cfg))
    decoded = {}
    for split in SPLITS:
        listed = list_split(root, split, classes)
        if listed is not None and listed[0]:
            decoded[split] = (decode_all(listed[0], shape), torch.tensor(listed[1], dtype=torch.long))
    none = (None, None)
    return Raw(*decoded["train"], *decoded.get("test", none), classes, *decoded.get("val", none))
