"""`masks`: pictures with a class index per pixel, for `task: segmentation`.

Layout: root/images/<split>/NAME.png|jpg|... beside root/masks/<split>/NAME.png (the same file stem), split being
train and optionally val and test (cut from train, seeded, when absent). A mask is a single-channel PNG (mode L, P
or 16-bit) whose values are class indices: 0 is background, `ignore_index` (255 by default) marks pixels scored
nowhere. Class names come from the config (`classes: [...]`) or a classes file, one name a line.

Pictures are decoded as image folders' are (dlcli.data.images: stretched to image_size, bilinear); masks are resized
to the same size with NEAREST, so a pixel keeps a class that exists (the contract of dlcli.data.spatial). Both are
kept in root/.cache/ keyed by the files' sizes and times, so the next run starts at once.

Refused, each in one line naming the file: a picture without its mask, a mask without its picture, a mask of
another size than its picture, a mask that is not single-channel, and a mask value outside the classes that is not
ignore_index.
"""

from __future__ import annotations

from pathlib import Path

from dlcli.data.images import IMAGE_EXTENSIONS
from dlcli.errors import DataError

SPLITS = ("train", "val", "test")
MASK_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I", "1")  # single-channel modes whose values are indices
CACHED_SPLITS = 6


def class_names(entry) -> list[str]:
    """The class names by index: the config's `classes`, or the lines of `classes_file` (relative to root), or
    root/classes.txt when it exists."""
    if entry.classes:
        return list(entry.classes)
    root = Path(entry.root)
    path = Path(entry.classes_file) if entry.classes_file else root / "classes.txt"
    if entry.classes_file and not path.is_absolute() and not path.is_file():
        path = root / entry.classes_file
    if not path.is_file():
        raise DataError(f"masks: no class names: give data.classes: [background, ...] (index 0 first) or "
                        f"data.classes_file (one name a line; {path} does not exist)")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"masks: {path}: cannot read the class names ({err})") from None
    if len(names) < 2:
        raise DataError(f"masks: {path}: needs at least two class names (background and one more), found "
                        f"{len(names)}")
    if len(set(names)) != len(names):
        raise DataError(f"masks: {path}: class names repeat ({', '.join(sorted(n for n in set(names) if names.count(n) > 1))})")
    return names


def _listing(folder: Path) -> dict[str, Path]:
    """stem -> file of the images in a folder (not recursive); two files of one stem are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                raise DataError(f"masks: {p} and {found[p.stem]} share the name '{p.stem}': which one is the picture "
                                "of its mask is unclear; rename one")
            found[p.stem] = p
    return found


def split_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images folder, masks folder)} for the splits present; root/images/ and root/masks/ holding files
    directly are the train split."""
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        if not folder.is_dir():
            raise DataError(f"masks: {folder}/ is missing: the layout is {images}/train/NAME.png beside "
                            f"{masks}/train/NAME.png (and optionally val/ and test/)")
    found = {s: (images / s, masks / s) for s in SPLITS if (images / s).is_dir() or (masks / s).is_dir()}
    if "train" not in found:
        if any(p.is_file() for p in images.iterdir()):
            found["train"] = (images, masks)
        else:
            raise DataError(f"masks: {images}/train/ is missing: put the training pictures there and their masks "
                            f"in {masks}/train/")
    return found


def pair_files(images: Path, masks: Path) -> tuple[list[Path], list[Path]]:
    """(pictures, masks) matched by file stem; an orphan on either side is an error naming it."""
    if not images.is_dir():
        raise DataError(f"masks: {masks}/ has no picture folder beside it ({images}/ is missing)")
    if not masks.is_dir():
        raise DataError(f"masks: {images}/ has no mask folder beside it ({masks}/ is missing)")
    pictures, labels = _listing(images), _listing(masks)
    for stem, path in pictures.items():
        if stem not in labels:
            raise DataError(f"masks: {path}: picture without a mask (expected {masks / (stem + '.png')})")
    for stem, path in labels.items():
        if stem not in pictures:
            raise DataError(f"masks: {path}: mask without a picture (no {stem}.* in {images}/)")
    stems = sorted(pictures)
    if not stems:
        raise DataError(f"masks: {images}/ holds no pictures ({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
    return [pictures[s] for s in stems], [labels[s] for s in stems]


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) of a picture as decoded (EXIF orientation applied), from its header."""
    from PIL import Image

    from dlcli.data.images import upright_size

    try:
        with Image.open(path) as img:
            h, w = upright_size(img.size, img)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"masks: {path}: not an image PIL can read ({str(err).splitlines()[0][:120]})") from None
    return w, h


def read_mask(path: Path, picture: Path, size: tuple[int, int], classes: int, ignore_index: int):
    """One mask as a uint8 tensor (H, W) of class indices at `size` (height, width), resized with NEAREST; a
    DataError naming the file for a mask of another size than its picture, of several channels, or holding a value
    that is neither a class index nor ignore_index."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode, mask_size = img.mode, img.size
            if mode not in MASK_MODES:
                raise DataError(f"masks: {path}: a {mode} image; a mask is single-channel (mode L, P or 16-bit) "
                                "with a class index per pixel")
            values = np.asarray(img).astype(np.int64)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"masks: {path}: not an image PIL can read ({str(err).splitlines()[0][:120]})") from None
    expected = picture_size(picture)
    if mask_size != expected:
        raise DataError(f"masks: {path}: mask is {mask_size[0]}x{mask_size[1]} but its picture {picture.name} is "
                        f"{expected[0]}x{expected[1]} (width x height)")
    bad = (values >= classes) & (values != ignore_index) | (values < 0)
    if bad.any():
        y, x = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(f"masks: {path}: value {values[y, x]} at x={x}, y={y} is not a class (0-{classes - 1}) nor "
                        f"the ignore_index {ignore_index}")
    from dlcli.data.spatial import resize_mask

    return resize_mask(torch.from_numpy(values.astype(np.uint8)), size)


def decode_masks(pictures: list[Path], masks: list[Path], size: tuple[int, int], classes: int, ignore_index: int,
                 cache_dir: Path | None):
    """Every mask as one uint8 tensor (N, H, W), from the cache when these files were read at this size before."""
    import torch

    def make():
        out = torch.empty((len(masks), *size), dtype=torch.uint8)
        for i, (mask, picture) in enumerate(zip(masks, pictures)):
            out[i] = read_mask(mask, picture, size, classes, ignore_index)
        return {"y": out}

    if cache_dir is None or not masks:
        return make()["y"]
    from dlcli.data.cache import cached_tensors, file_stamp

    key = file_stamp([*masks, *pictures], extra=f"masks {size} {classes} {ignore_index}")
    return cached_tensors(cache_dir / f"masks-{key}.pt", make, keep=CACHED_SPLITS)["y"]


def read_masks(entry, seed: int):
    """The DataBundle of a masks entry: uint8 pictures (N, C, H, W) and uint8 masks (N, H, W) per split; val and test
    cut from train (seeded, at random) where their folders are absent."""
    root = Path(entry.root)
    names = class_names(entry)
    if entry.ignore_index < len(names):
        raise DataError(f"data.ignore_index {entry.ignore_index} is the index of class '{names[entry.ignore_index]}'"
                        f": choose a value of no class (255 by default)")
    folders = split_folders(root)
    size = entry.size()
    cache_dir = root / ".cache" if entry.cache else None
    listed = {split: list(zip(*pair_files(*folders[split]))) for split in folders}

    def decode(pairs):  # masks first: a bad mask is named before any picture is decoded
        pictures, masks = [p for p, _ in pairs], [m for _, m in pairs]
        return decode_masks(pictures, masks, size, len(names), entry.ignore_index, cache_dir), pictures

    return mask_bundle(entry, seed, names, listed, decode, entry.ignore_index, cache_dir)


def mask_bundle(entry, seed: int, names: list[str], listed: dict, decode, ignore_index: int, cache_dir, notes=()):
    """The DataBundle of a segmentation layout: `listed` holds each split's items as the layout lists them (train
    always), `decode(items)` gives their masks (N, H, W) at image_size and their pictures' paths; val and test are
    cut from train (seeded, at random) where the layout has none."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, Split, Splitter, statistics
    from dlcli.data.stream import FileList

    shape = (entry.channels, *entry.size())
    train = listed["train"]
    cut = Splitter(None, seed, "random", names, n=len(train))
    picked = {}
    if "test" not in listed:
        picked["test"] = cut.cut(entry.test_split, "test")
    if "val" not in listed:
        picked["val"] = cut.cut(entry.val_split, "val")
    picked["train"] = cut.train(entry.max_train_samples, entry.val_split)
    known, splits = {}, {}
    for split in SPLITS:
        if split in picked:
            items = [train[i] for i in picked[split].tolist()]
        elif split in listed:
            items = listed[split]
        else:
            continue
        if not items:  # a cut of none: no validation split, an empty test split
            empty = Split(torch.empty((0, *shape), dtype=torch.uint8), torch.empty((0, *shape[1:]), dtype=torch.uint8))
            splits[split] = None if split == "val" else empty
            continue
        y, pictures = decode(items)
        x, known[split] = FileList(pictures, shape, 0, False, cache_dir).decoded()
        splits[split] = Split(x, y)
    fit_on = splits["train"]
    mean, std, image = known["train"] if known.get("train") else statistics(fit_on.x)
    counts = torch.bincount(fit_on.y.flatten().long(), minlength=256)[: len(names)]
    target = {"ignore_index": ignore_index, "pixels": counts.tolist()}
    return DataBundle(fit_on, splits.get("val"), splits["test"], names, shape, Normalizer(mean, std, image), None, None,
                      [*notes, *cut.notes], target)


def survey_masks(entry, report) -> None:
    """`dlcli data check` of a masks entry into `report` (dlcli.doctor.Report): every problem training would stop
    at (orphans on either side, masks of another size, of several channels, with values outside the classes), the
    pixels of each class per split at image_size, each class's share of train's pixels, pictures with nothing but
    background, ignored pixels, and classes training never sees."""
    import torch

    from dlcli.tasks import ERROR, INFO, WARNING

    root = Path(entry.root)
    try:
        names = class_names(entry)
        folders = split_folders(root)
    except DataError as err:
        report.add(ERROR, "layout", str(err))
        return
    k, size = len(names), entry.size()
    for split in ("val", "test"):
        if split not in folders:
            share = entry.val_split if split == "val" else entry.test_split
            report.add(INFO, "layout", f"no {split} split: {share:.0%} of the training pictures are held out as "
                       f"{split} (seeded)")
    counts, section = {}, {}
    for split, (images, masks) in folders.items():
        try:
            pictures = _listing(images) if images.is_dir() else {}
            labels = _listing(masks) if masks.is_dir() else {}
        except DataError as err:
            report.add(ERROR, "layout", str(err))
            continue
        for stem in sorted(set(pictures) - set(labels)):
            report.add(ERROR, "picture-without-mask", f"masks: {pictures[stem]}: picture without a mask (expected "
                       f"{masks / (stem + '.png')})", [pictures[stem]])
        for stem in sorted(set(labels) - set(pictures)):
            report.add(ERROR, "mask-without-picture", f"masks: {labels[stem]}: mask without a picture (no "
                       f"{stem}.* in {images}/)", [labels[stem]])
        total = torch.zeros(256, dtype=torch.long)
        background_only = 0
        for stem in sorted(set(pictures) & set(labels)):
            try:
                mask = read_mask(labels[stem], pictures[stem], size, k, entry.ignore_index)
            except DataError as err:
                report.add(ERROR, "bad-mask", str(err), [labels[stem]])
                continue
            found = torch.bincount(mask.flatten().long(), minlength=256)
            background_only += int(found[1:k].sum() == 0)
            total += found
        counts[split] = dict(zip(names, total[:k].tolist()))
        section[split] = {"pictures": len(set(pictures) & set(labels)), "background_only": background_only,
                          "ignored_pixels": int(total[entry.ignore_index])}
        if background_only:
            report.add(INFO, "background-only", f"{split}: {background_only:,} of {section[split]['pictures']:,} "
                       "pictures hold nothing but background")
    train = counts.get("train")
    if train is None:
        return
    scored = sum(train.values())
    if scored:
        shares = ", ".join(f"{name} {n / scored:.1%}" for name, n in train.items())
        report.add(INFO, "pixel-share", f"train pixels by class (at {size[1]}x{size[0]}): {shares}")
    for name, n in train.items():
        elsewhere = [s for s, c in counts.items() if s != "train" and c.get(name)]
        if not n and elsewhere:
            report.add(ERROR, "class-not-in-train", f"class '{name}' has pixels in {', '.join(elsewhere)} but none "
                       "in train: a model cannot learn it")
        elif not n:
            report.add(WARNING, "empty-class", f"class '{name}' has no pixels in any mask: drop it from the classes?")
    present = [n for n in train.values() if n]
    report.sections["classes"] = {"names": names, "counts": counts, "unit": f"pixels at {size[1]}x{size[0]}",
                                  "imbalance_ratio": round(max(present) / min(present), 3) if present else None}
    report.sections["masks"] = section
