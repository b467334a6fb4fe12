"""`dataset: coco` with `task: segmentation`: the masks a COCO instances file draws, one class index per pixel.

COCO tools (CVAT, Roboflow, Label Studio, labelme's converters) save segmentation as each object's `segmentation`:
polygons ([[x1, y1, x2, y2, ...], ...] in pixels) or run-length encoding (RLE: {size: [height, width], counts},
counts a list, or COCO's compressed string). Here every picture's objects are painted into one mask at the size the
file states for the picture: 0 is background, category k (by increasing id) is k + 1, and crowd regions
(`iscrowd: 1`) are IGNORE, scored nowhere, as COCO's evaluation ignores them. Crowds are painted first, then the
objects from the largest to the smallest, so an object lying on another keeps its pixels. The masks are then resized
to image_size with NEAREST, as a mask file's are (dlcli.data.segmentation), and cached beside the JSON.

The pictures, their splits and sizes come from the detection reader (dlcli.data.detection.read_coco), so the same
files give the same pictures under both tasks, and a bad box is refused the same way. Refused, each in one line
naming the JSON and the annotation id: an object with no segmentation, a polygon of an odd count or fewer than three
points, an RLE whose size is not its picture's, more categories than a byte's mask can hold.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dlcli.errors import DataError

IGNORE = 255  # crowd pixels: the mask value segmentation's loss and metrics skip
BACKGROUND = "background"
CACHED_SPLITS = 6


def class_names(categories: list[str], path) -> list[str]:
    """The segmentation classes of a COCO file's categories: background first."""
    if len(categories) + 1 > IGNORE:
        raise DataError(f"{path}: {len(categories)} categories: a segmentation mask holds at most {IGNORE - 1} "
                        f"(one byte a pixel, {IGNORE} marks crowds)")
    if BACKGROUND in categories:
        raise DataError(f"{path}: a category is named '{BACKGROUND}', the name of mask value 0 (pixels of no object): "
                        f"rename it")
    return [BACKGROUND, *categories]


def _object_mask(segm, height: int, width: int, where: str):
    """One object's pixels (H, W) bool from its polygons or RLE."""
    from pycocotools import mask as coco_mask

    if isinstance(segm, list):
        if not segm or not all(isinstance(p, list) for p in segm):
            raise DataError(f"{where}: segmentation is {segm!r:.60}, not a list of polygons [[x1, y1, x2, y2, ...]]")
        for polygon in segm:
            if len(polygon) % 2 or len(polygon) < 6 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
                raise DataError(f"{where}: a polygon of {len(polygon)} values: one is x1, y1, x2, y2, ... with at "
                                f"least three points (numbers, an even count)")
        rle = coco_mask.merge(coco_mask.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if list(size) != [height, width]:
            raise DataError(f"{where}: an RLE of size {size} on a picture of {height}x{width} (height x width): "
                            f"RLE sizes are [height, width] of the picture")
        counts = segm["counts"]
        try:
            if isinstance(counts, list):  # uncompressed: run lengths, column by column, starting with background
                rle = coco_mask.frPyObjects(segm, height, width)
            elif isinstance(counts, (str, bytes)):
                rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
            else:
                raise TypeError
            pixels = coco_mask.decode(rle)
        except (TypeError, ValueError) as err:
            why = str(err)[:80] or "counts is neither a list nor a string"
            raise DataError(f"{where}: an RLE that does not decode ({why})") from None
        if isinstance(counts, list) and sum(counts) != height * width:
            raise DataError(f"{where}: the RLE's counts add up to {sum(counts)} pixels, not {height}x{width}")
        return pixels.astype(bool)
    else:
        found = "missing" if segm is None else f"{segm!r:.60}"
        raise DataError(f"{where}: no segmentation ({found}): task segmentation paints each object's polygons or RLE "
                        f"(a detection-only file trains with task: detection)")
    return coco_mask.decode(rle).astype(bool)


def paint(objects: list, height: int, width: int) -> np.ndarray:
    """The mask (H, W) uint8 of one picture's objects: (class index from 1, segmentation, crowd, where) each."""
    with warnings.catch_warnings():  # pycocotools' decode warns under NumPy 2 (its own array copy)
        warnings.simplefilter("ignore", DeprecationWarning)
        shapes = [(cls, _object_mask(segm, height, width, where), crowd) for cls, segm, crowd, where in objects]
    out = np.zeros((height, width), np.uint8)
    order = sorted(range(len(shapes)), key=lambda i: (not shapes[i][2], -int(shapes[i][1].sum()), i))
    for i in order:
        cls, pixels, crowd = shapes[i]
        out[pixels] = IGNORE if crowd else cls
    return out


def coco_objects(path: Path, book: dict, folder: Path) -> dict[Path, list]:
    """{picture path: [(category id, segmentation, crowd, where), ...]} of one COCO file."""
    images = {img.get("id"): img.get("file_name") for img in book["images"] if isinstance(img, dict)}
    found: dict[Path, list] = {}
    for i, ann in enumerate(book["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            continue  # the detection reader has refused (or dropped) what is malformed here
        name = images[ann["image_id"]]
        where = f"{path}: annotation id {ann.get('id', f'#{i + 1}')} (image id {ann['image_id']}, {name})"
        found.setdefault(folder / name, []).append((ann.get("category_id"), ann.get("segmentation"),
                                                     bool(ann.get("iscrowd")), where))
    return found


def _split_file(entry, split: str) -> tuple[Path, dict, Path]:
    """A split's COCO file: its path, its contents and its pictures' folder (found as the detection reader finds it)."""
    from dlcli.data.detection import _image_folder, _load_json

    path = Path(getattr(entry, f"{split}_annotations"))
    book = _load_json(path, f"{split}_annotations")
    first = next((img.get("file_name") for img in book["images"] if isinstance(img, dict)), None)
    return path, book, _image_folder(path, split, getattr(entry, f"{split}_images"), first)


def read_coco_masks(entry, seed: int):
    """The DataBundle of a COCO entry under task segmentation: uint8 pictures (N, C, H, W) and uint8 masks (N, H, W)
    per split, val and test cut from train (seeded, at random) where the layout has none."""
    from dlcli.data.detection import coco_categories, problems_for, read_coco
    from dlcli.data.segmentation import mask_bundle

    if entry.cv_fold:
        raise DataError("train.cv: cross-validation of a coco dataset under task segmentation is not supported: "
                        "train without --cv")
    listing = read_coco(entry, problems_for(entry))
    train_path = Path(entry.train_annotations)
    ids, categories = coco_categories(train_path)
    names = class_names(categories, train_path)
    index = {cid: i + 1 for i, cid in enumerate(ids)}
    objects: dict[Path, list] = {}
    for split in listing.splits:
        path, book, folder = _split_file(entry, split)
        for picture, found in coco_objects(path, book, folder).items():
            objects[picture] = [(index.get(cid, 0), segm, crowd, where) for cid, segm, crowd, where in found]
    cache_dir = listing.home / ".cache" if entry.cache else None
    jsons = [Path(f) for f in (entry.train_annotations, entry.val_annotations, entry.test_annotations) if f]

    def decode(pictures):
        return _masks(pictures, objects, entry.size(), cache_dir, jsons), [p.path for p in pictures]

    return mask_bundle(entry, seed, names, listing.splits, decode, IGNORE, cache_dir, listing.notes)


def _masks(pictures, objects: dict, size: tuple[int, int], cache_dir: Path | None, jsons: list[Path]):
    """The masks (N, H, W) uint8 of these pictures at `size`, from the cache when the JSONs are unchanged."""
    import torch

    from dlcli.data.spatial import resize_mask

    def make():
        out = torch.empty((len(pictures), *size), dtype=torch.uint8)
        for i, p in enumerate(pictures):
            height, width = (int(round(v)) for v in p.frame)
            mask = paint(objects.get(p.path, []), height, width)
            out[i] = resize_mask(torch.from_numpy(mask), size)
        return {"y": out}

    if cache_dir is None:
        return make()["y"]
    from dlcli.data.cache import cached_tensors, file_stamp

    key = file_stamp([*jsons, *(p.path for p in pictures)], extra=f"coco masks 1 {size}")  # a size may be a header's
    return cached_tensors(cache_dir / f"coco-masks-{key}.pt", make, keep=CACHED_SPLITS)["y"]


def survey_coco_masks(entry, report) -> None:
    """`dlcli data check` of a COCO entry under task segmentation, after the detection survey: every object whose
    outline cannot be painted (an error each, as training would stop at the first) and each class's share of the
    training pictures' pixels at their own size."""
    from dlcli.data.detection import _header_size, coco_categories
    from dlcli.tasks import ERROR, INFO

    train_path = Path(entry.train_annotations)
    try:
        ids, categories = coco_categories(train_path)
        names = class_names(categories, train_path)
    except DataError as err:
        report.add(ERROR, "layout", str(err))
        return
    index = {cid: i + 1 for i, cid in enumerate(ids)}
    for split in ("train", "val", "test"):
        given = getattr(entry, f"{split}_annotations")
        if not given:
            continue
        try:
            path, book, folder = _split_file(entry, split)
        except DataError:
            continue  # the detection survey has reported it
        sizes = {folder / img["file_name"]: (img.get("height"), img.get("width")) for img in book["images"]
                 if isinstance(img, dict) and isinstance(img.get("file_name"), str)}
        pixels = np.zeros(256, np.int64)
        for picture, found in coco_objects(path, book, folder).items():
            height, width = sizes.get(picture, (None, None))
            if not (isinstance(height, int) and isinstance(width, int)):
                stated = _header_size(picture)
                if stated is None:
                    continue  # an unreadable picture: the detection survey has reported it
                height, width = (int(v) for v in stated)
            objects = [(index.get(cid, 0), segm, crowd, where) for cid, segm, crowd, where in found]
            good = []
            for one in objects:  # each bad outline on its own line
                try:
                    paint([one], height, width)
                    good.append(one)
                except DataError as err:
                    report.add(ERROR, "bad-segmentation", str(err), [path])
            if split == "train":
                pixels += np.bincount(paint(good, height, width).ravel(), minlength=256)
        total = pixels[:len(names)].sum()
        if split == "train" and total:
            shares = ", ".join(f"{n} {c / total:.1%}" for n, c in zip(names, pixels[:len(names)]))
            report.add(INFO, "pixel-share", f"train pixels by class (painted from the outlines; pictures with objects, "
                       f"at their own sizes): {shares}")
