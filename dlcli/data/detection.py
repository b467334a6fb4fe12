"""Detection data as users have it: COCO (`dataset: coco`), YOLO (`dataset: yolo`) and Pascal VOC (`dataset: voc`).

Each layout is read into one list of pictures per split (a picture: its file, its boxes and their classes), then into
the targets every detection model of dlcli trains on (the spatial contract): Split.y float32 (N, M, 5), rows
[class, x1, y1, x2, y2] in the model's input pixels (the picture stretched to image_size, boxes moved with it by
dlcli.data.spatial.scale_boxes), class -1 on padding rows, M the most boxes of any picture (at least 1). Pictures are
decoded, cached and streamed exactly as an image folder's (dlcli.data.stream.FileList); val and test are cut from
train, seeded, where the layout has none (stratified on each picture's rarest class, so a rare class lands in every
split where it can).

  COCO  an instances JSON per split (`bbox` [x, y, w, h] in pixels, `category_id`, `categories` with names) and a
        folder of its pictures; classes: the categories by id. Crowd boxes (`iscrowd: 1`) are left out of the
        targets (COCO's evaluation ignores them; a box around many objects would teach a wrong box).
  YOLO  Ultralytics' data.yaml (`path`, `train`/`val`/`test`: folders of pictures or .txt lists, `names` as a list or
        {index: name}), or a root with images/<split>/ (or <split>/images/); each picture's labels in the same path
        with `labels` for the last `images` and .txt: one line `class cx cy w h`, normalised to 0..1 (a segment's
        line `class x1 y1 x2 y2 x3 y3 ...` is read as its box, as Ultralytics does). A picture without a label file
        holds no object.
  VOC   root/Annotations/*.xml (one <object> with <name> and <bndbox> per box, pixels from 1), root/JPEGImages/,
        splits from root/ImageSets/Main/{train,val,test}.txt (else every annotation is train); `difficult` objects
        are left out unless data.difficult is true.

Refused, each in one line naming the file and the line or annotation id, before anything is decoded or cached: a
box outside its picture (beyond BOX_TOLERANCE pixels, or NORM_TOLERANCE of a normalised side; within it, the box is
clipped) or of zero area, an unknown category or class, a label file without its picture, a picture named that does
not exist, a JSON that is not COCO (what is missing said), a YOLO line of the wrong field count (not 5, nor a polygon's odd
count of at least 7) or with values outside 0..1. `dlcli data check` reads with the same code, listing every problem instead of stopping at the first
(`survey`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlcli.data.images import IMAGE_EXTENSIONS
from dlcli.errors import DataError

SPLITS = ("train", "val", "test")
BOX_TOLERANCE = 1.0  # pixels a COCO/VOC box may reach past its picture's edge (rounding in tools); clipped
NORM_TOLERANCE = 0.01  # the same for YOLO, as a share of the picture's side
VALUE_SLACK = 1e-6  # YOLO: rounding slack around 0..1 before a value is "not normalised"
SIZES = (("small", 32 ** 2), ("medium", 96 ** 2), ("large", float("inf")))  # COCO's box areas, in picture pixels


@dataclass
class Picture:
    path: Path
    boxes: np.ndarray  # float64 (k, 4) [x1, y1, x2, y2] in `frame` units: pixels (COCO, VOC) or shares (YOLO)
    classes: np.ndarray  # int64 (k,)
    frame: tuple[float, float]  # (height, width) the boxes are measured against: the picture's pixels, or (1, 1)
    where: str  # where it was listed, for errors (a JSON and image id, a label file)
    size: tuple[int, int] | None = None  # (height, width) the annotation states, where it states one


@dataclass
class Listing:
    """A layout as read: the class names and each split's pictures (train always; val and test where present)."""

    classes: list[str]
    splits: dict[str, list[Picture]]
    notes: list[str] = field(default_factory=list)
    home: Path = Path(".")  # where the decoded cache goes (home/.cache)
    skipped: dict[str, int] = field(default_factory=dict)  # boxes left out on purpose per split (crowd, difficult)


BOX_CHECKS = ("zero-area", "box-outside")  # what data.bad_boxes: drop skips instead of refusing


class Problems:
    """Bad data met while reading: raised at once (training), or collected to list them all (`dlcli data check`).
    Checks in `drop` (data.bad_boxes: drop) are counted and skipped instead, and listed as warnings when collecting."""

    def __init__(self, collect: bool = False, drop=()):
        self.collect, self.drop = collect, frozenset(drop)
        self.found: list[tuple[str, str, str]] = []  # (check, message, path): what blocks training
        self.dropped: list[tuple[str, str, str]] = []  # the same, of the checks skipped under `drop`

    def bad(self, check: str, message: str, path="") -> None:
        if check in self.drop:
            self.dropped.append((check, message, str(path)))
            return
        if not self.collect:
            raise DataError(f"{message} (data.bad_boxes: drop skips such boxes)" if check in BOX_CHECKS else message)
        self.found.append((check, message, str(path)))

    def note(self) -> list[str]:
        n = len(self.dropped)
        return [f"{n:,} box{'es' if n != 1 else ''} outside {'their pictures' if n != 1 else 'its picture'} or of "
                f"zero area dropped (data.bad_boxes: drop; the first: {self.dropped[0][1]})"] if n else []


def problems_for(entry, collect: bool = False) -> Problems:
    """The Problems an entry reads with: its bad_boxes rule."""
    return Problems(collect, BOX_CHECKS if entry.bad_boxes == "drop" else ())


def _fmt(v: float) -> str:
    return f"{v:g}"


def check_box(box, frame, problems: Problems, where: str, path, tolerance: float) -> np.ndarray | None:
    """A box [x1, y1, x2, y2] inside its frame (height, width) within `tolerance` (clipped to it), or None after
    reporting one of zero area or outside."""
    x1, y1, x2, y2 = box
    h, w = frame
    if not (x2 > x1 and y2 > y1):
        problems.bad("zero-area", f"{where}: box of zero area (x {_fmt(x1)}..{_fmt(x2)}, y {_fmt(y1)}..{_fmt(y2)})",
                     path)
        return None
    if x1 < -tolerance or y1 < -tolerance or x2 > w + tolerance or y2 > h + tolerance:
        unit = "" if (h, w) == (1.0, 1.0) else f" of the {_fmt(w)}x{_fmt(h)} picture"
        problems.bad("box-outside", f"{where}: box x {_fmt(x1)}..{_fmt(x2)}, y {_fmt(y1)}..{_fmt(y2)} lies outside "
                     f"the picture (x 0..{_fmt(w)}, y 0..{_fmt(h)}{unit})", path)
        return None
    out = np.array([min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)])
    if not (out[2] > out[0] and out[3] > out[1]):  # nothing left inside after clipping
        problems.bad("box-outside", f"{where}: box x {_fmt(x1)}..{_fmt(x2)}, y {_fmt(y1)}..{_fmt(y2)} lies outside "
                     f"the picture", path)
        return None
    return out


def _picture(path, boxes: list, classes: list, frame, where: str, size=None) -> Picture:
    return Picture(Path(path), np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=np.int64),
                   frame, where, size)


# ---------------------------------------------------------------- COCO


def _load_json(path: Path, role: str) -> dict:
    if not path.is_file():
        raise DataError(f"data.{role}: {path}: no such file")
    try:
        with open(path, "rb") as f:
            book = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}, column {err.colno}: not JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if not isinstance(book, dict):
        raise DataError(f"{path}: not a COCO instances file: the top level is a {type(book).__name__}, not an object "
                        f"with images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(book.get(k), list)]
    if missing:
        what = " and ".join(f"'{k}'" for k in missing)
        raise DataError(f"{path}: not a COCO instances file: no {what} list{'s' if len(missing) > 1 else ''} (a COCO "
                        f"detection JSON holds images, annotations and categories)")
    return book


def _field(record, key: str, kind, path: Path, what: str):
    """record[key] of the right type, or a one-line error naming the record."""
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a COCO instances file: {what} is a {type(record).__name__}, not an object")
    value = record.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        found = "missing" if value is None else f"{value!r:.40}"
        raise DataError(f"{path}: not a COCO instances file: {what} has no {key} ({found})")
    return value


def coco_categories(path: Path, book: dict | None = None) -> tuple[list[int], list[str]]:
    """(category ids in increasing order, their names): the classes a COCO file defines."""
    book = book if book is not None else _load_json(path, "train_annotations")
    found = {}
    for i, cat in enumerate(book["categories"]):
        cid = _field(cat, "id", int, path, f"category #{i + 1}")
        name = _field(cat, "name", str, path, f"category id {cid}")
        if cid in found:
            raise DataError(f"{path}: category id {cid} is defined twice ('{found[cid]}' and '{name}')")
        found[cid] = name
    if not found:
        raise DataError(f"{path}: not a COCO instances file: its categories list is empty (detection needs at least "
                        f"one category with an id and a name)")
    names = [found[c] for c in sorted(found)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: category name '{twice[0]}' is used by two ids: the classes would be ambiguous")
    return sorted(found), names


def _image_folder(path: Path, split: str, given: str | None, first: str | None) -> Path:
    """Where a COCO file's pictures are: `given`, else the first folder holding its first picture among the JSON's
    folder, its parent, their images/, <split>*/ and images/<split>*/ sub-folders."""
    if given:
        folder = Path(given)
        if not folder.is_dir():
            raise DataError(f"data.{split}_images: {folder}/: no such directory")
        return folder
    candidates = []
    for base in (path.parent, path.parent.parent):
        candidates.append(base)
        subs = sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(split)) if base.is_dir() else []
        candidates += subs + [base / "images"]
        images = base / "images"
        if images.is_dir():
            candidates += sorted(p for p in images.iterdir() if p.is_dir() and p.name.startswith(split))
    if first is None:
        return path.parent
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    raise DataError(f"{path}: its first picture '{first}' is in none of {', '.join(f'{c}/' for c in candidates[:6])}: "
                    f"set data.{split}_images to its folder")


CACHED_LISTINGS = 4  # parsed COCO files kept per annotations folder


def read_coco(entry, problems: Problems) -> Listing:
    """The COCO files as a Listing; when training, parsed once and kept in .cache/ beside the train JSON (keyed by
    the JSON files' paths, sizes and times and by what else shapes the listing), since a large JSON takes longer to
    parse than its pictures take to load from the decoded cache."""
    files = [Path(f) for f in (entry.train_annotations, entry.val_annotations, entry.test_annotations) if f]
    if problems.collect or not entry.cache or not all(f.is_file() for f in files):
        return _read_coco(entry, problems)
    from dlcli.data.cache import cached_tensors, file_stamp

    folders = [os.path.abspath(f) if f else None for f in (entry.train_images, entry.val_images, entry.test_images)]
    extra = json.dumps(["coco listing 1", [str(f) for f in files], folders, entry.bad_boxes, BOX_TOLERANCE])
    path = files[0].parent / ".cache" / f"coco-{file_stamp(files, extra)}.pt"
    return _unpack(cached_tensors(path, lambda: _pack(_read_coco(entry, problems)), keep=CACHED_LISTINGS))


def _pack(listing: Listing) -> dict:
    """A Listing as tensors, lists and strings (what torch.load reads back with weights_only)."""
    import torch

    splits = {}
    for split, pictures in listing.splits.items():
        splits[split] = {
            "paths": [str(p.path) for p in pictures], "where": [p.where for p in pictures],
            "boxes": torch.from_numpy(np.concatenate([p.boxes for p in pictures] + [np.zeros((0, 4))])),
            "classes": torch.from_numpy(np.concatenate([p.classes for p in pictures] + [np.zeros(0, np.int64)])),
            "counts": torch.tensor([len(p.classes) for p in pictures], dtype=torch.int64),
            "frames": torch.tensor([list(p.frame) for p in pictures], dtype=torch.float64).reshape(-1, 2),
            "sizes": torch.tensor([list(p.size or (-1, -1)) for p in pictures], dtype=torch.int64).reshape(-1, 2)}
    return {"classes": list(listing.classes), "splits": splits, "notes": list(listing.notes),
            "home": str(listing.home), "skipped": dict(listing.skipped)}


def _unpack(stored: dict) -> Listing:
    splits = {}
    for split, found in stored["splits"].items():
        ends = np.cumsum(found["counts"].numpy())
        boxes, classes = np.split(found["boxes"].numpy(), ends[:-1]), np.split(found["classes"].numpy(), ends[:-1])
        splits[split] = [
            Picture(Path(path), b, c, (float(frame[0]), float(frame[1])), where,
                    None if size[0] < 0 else (int(size[0]), int(size[1])))
            for path, where, b, c, frame, size in zip(found["paths"], found["where"], boxes, classes,
                                                      found["frames"].tolist(), found["sizes"].tolist())]
    return Listing(stored["classes"], splits, stored["notes"], Path(stored["home"]), stored["skipped"])


def _read_coco(entry, problems: Problems) -> Listing:
    files = {s: getattr(entry, f"{s}_annotations") for s in SPLITS}
    train_path = Path(files["train"])
    book = _load_json(train_path, "train_annotations")
    ids, classes = coco_categories(train_path, book)
    index = {cid: i for i, cid in enumerate(ids)}
    splits, skipped = {}, {}
    for split in SPLITS:
        if not files[split]:
            continue
        path = Path(files[split])
        if split != "train":
            book = _load_json(path, f"{split}_annotations")
        splits[split], skipped[split] = _coco_split(path, book, index, split, getattr(entry, f"{split}_images"),
                                                    problems)
    crowd = sum(skipped.values())
    notes = [f"{crowd:,} crowd box{'es' if crowd != 1 else ''} (iscrowd: 1) left out of the targets: each marks a "
             f"group of objects, which COCO's evaluation ignores"] if crowd else []
    return Listing(classes, splits, notes + problems.note(), train_path.parent, skipped)


def _coco_split(path: Path, book: dict, index: dict[int, int], split: str, given_images, problems: Problems):
    images = {}
    for i, img in enumerate(book["images"]):
        iid = _field(img, "id", int, path, f"image #{i + 1}")
        what = f"image id {iid}"
        name = _field(img, "file_name", str, path, what)
        stated = [img.get(k) for k in ("width", "height")]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in stated):
            width, height = (float(v) for v in stated)
        else:  # some exporters leave the size out: the picture's header says it (below)
            width = height = None
        if iid in images:
            raise DataError(f"{path}: image id {iid} is listed twice ('{images[iid][0]}' and '{name}')")
        images[iid] = (name, height, width)
    folder = _image_folder(path, split, given_images, next(iter(images.values()))[0] if images else None)
    unsized = set()  # pictures whose size is neither stated nor readable: their boxes cannot be placed
    for iid, (name, height, width) in images.items():
        if height is None:
            found = _header_size(folder / name)
            if found is None:
                unsized.add(iid)
                if (folder / name).is_file():  # a missing file is reported below, with the others
                    problems.bad("unreadable-image", f"{path}: image id {iid}: {folder / name}: no width and "
                                 f"height stated, and the picture cannot be read", path)
            images[iid] = (name, *(found or (1.0, 1.0)))
    boxes: dict[int, list] = {iid: [] for iid in images}
    labels: dict[int, list] = {iid: [] for iid in images}
    crowd = 0
    for i, ann in enumerate(book["annotations"]):
        aid = ann.get("id", f"#{i + 1}") if isinstance(ann, dict) else f"#{i + 1}"
        what = f"annotation id {aid}"
        iid = _field(ann, "image_id", int, path, what)
        cid = _field(ann, "category_id", int, path, what)
        bbox = _field(ann, "bbox", list, path, what)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DataError(f"{path}: not a COCO instances file: {what} has bbox {bbox!r:.60}, not [x, y, width, "
                            f"height]")
        if iid not in images:
            problems.bad("unknown-image", f"{path}: {what}: image_id {iid} is not in the file's images", path)
            continue
        if cid not in index:
            problems.bad("unknown-class", f"{path}: {what}: unknown category id {cid} (the categories of "
                         f"{'this file' if split == 'train' else 'the train file'} are {_ids(index)})", path)
            continue
        if ann.get("iscrowd"):
            crowd += 1
            continue
        if iid in unsized:
            continue
        x, y, w, h = (float(v) for v in bbox)
        name, height, width = images[iid]
        box = check_box((x, y, x + w, y + h), (height, width), problems, f"{path}: {what} (image id {iid}, {name})",
                        path, BOX_TOLERANCE)
        if box is not None:
            boxes[iid].append(box)
            labels[iid].append(index[cid])
    pictures = []
    for iid, (name, height, width) in sorted(images.items(), key=lambda item: item[1][0]):
        file = folder / name
        if not file.is_file():
            problems.bad("missing-picture", f"{path}: image id {iid}: {file}: no such picture", path)
            continue
        pictures.append(_picture(file, boxes[iid], labels[iid], (height, width), f"{path}: image id {iid}",
                                 (int(height), int(width))))
    return pictures, crowd


def _header_size(path: Path) -> tuple[float, float] | None:
    """(height, width) of a picture as decoded (EXIF orientation applied), from its header; None if unreadable."""
    from dlcli.data.segmentation import picture_size

    try:
        width, height = picture_size(path)
    except DataError:
        return None
    return float(height), float(width)


def _ids(index: dict[int, int]) -> str:
    ids = sorted(index)
    return ", ".join(map(str, ids[:12])) + (", ..." if len(ids) > 12 else "")


# ---------------------------------------------------------------- YOLO


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def label_path(picture: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix .txt."""
    parts = list(picture.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    else:
        return picture.with_suffix(".txt")
    return Path(*parts).with_suffix(".txt")


def read_data_yaml(path: Path) -> dict:
    """Ultralytics' data.yaml: its root folder and the split sources resolved, and the class names by index."""
    import yaml

    if not path.is_file():
        raise DataError(f"data.data_yaml: {path}: no such file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read as YAML ({reason})") from None
    if not isinstance(spec, dict) or "train" not in spec:
        raise DataError(f"{path}: not a YOLO data.yaml: no 'train' key (it names the training pictures, with val, "
                        f"test and names)")
    names = spec.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if not all(isinstance(k, int) for k in keys) or keys != list(range(len(keys))):
            raise DataError(f"{path}: names: the keys must be the class indices 0..{len(keys) - 1}, found "
                            f"{', '.join(map(str, keys[:8]))}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: not a YOLO data.yaml: no 'names' (a list of class names, or {{0: name, ...}})")
    names = [str(n) for n in names]
    if "nc" in spec and spec["nc"] != len(names):
        raise DataError(f"{path}: nc is {spec['nc']} but names lists {len(names)} classes")
    given = Path(str(spec["path"])).expanduser() if spec.get("path") else None
    first = Path(str(spec["train"][0] if isinstance(spec["train"], list) and spec["train"] else spec["train"]))
    # Ultralytics looks for a relative `path` in its datasets folder; here: beside the yaml, then from the current
    # folder, then the yaml's own folder (a dataset copied with its yaml), whichever holds the training pictures
    if given is None:
        roots = [path.parent]
    elif given.is_absolute():
        roots = [given]
    else:
        roots = [path.parent / given, given, path.parent]
    root = next((r for r in roots if (first if first.is_absolute() else r / first).exists()), roots[0])
    sources = {}
    for split in SPLITS:
        value = spec.get(split)
        if not value:
            continue
        listed = value if isinstance(value, list) else [value]
        sources[split] = [p if p.is_absolute() else root / p for p in (Path(str(v)) for v in listed)]
    return {"names": names, "root": root, "sources": sources}


def _yolo_sources(entry) -> tuple[list[str], dict[str, list[Path]], Path]:
    if entry.data_yaml:
        spec = read_data_yaml(Path(entry.data_yaml))
        names = list(entry.names) if entry.names else spec["names"]
        return names, spec["sources"], Path(entry.data_yaml).parent
    root = Path(entry.root)
    if not root.is_dir():
        raise DataError(f"data.root: {root}/: no such directory")
    sources = {}
    for split in SPLITS:
        for name in (split, "valid") if split == "val" else (split,):
            for folder in (root / "images" / name, root / name / "images"):
                if folder.is_dir() and split not in sources:
                    sources[split] = [folder]
    if "train" not in sources:
        raise DataError(f"data.root: {root}/ has neither images/train/ nor train/images/ (YOLO pictures, their labels "
                        f"in labels/train/)")
    if not entry.names:
        found = root / "data.yaml"
        hint = f" (or use data.data_yaml: {found})" if found.is_file() else ""
        raise DataError(f"yolo: no class names: give data.names: [name0, name1, ...]{hint}")
    return list(entry.names), sources, root


def read_yolo(entry, problems: Problems) -> Listing:
    names, sources, home = _yolo_sources(entry)
    if "train" not in sources:
        raise DataError(f"{entry.data_yaml}: train is empty")
    splits = {}
    for split, listed in sources.items():
        files: list[Path] = []
        for source in listed:
            if source.is_dir():
                found = _images_under(source)
                files += found
                labels = label_path(source / "x").parent
                if labels != source and labels.is_dir():
                    _labels_without_pictures(source, found, labels, problems)
            elif source.suffix == ".txt" and source.is_file():
                files += _listed_pictures(source, problems)
            else:
                raise DataError(f"{entry.data_yaml or entry.root}: {split}: {source}: no such folder of pictures "
                                f"(or .txt list of them)")
        if not files and split == "train":
            raise DataError(f"yolo: {', '.join(map(str, listed))}: no pictures for train "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...)")
        splits[split] = [_yolo_picture(p, len(names), problems) for p in sorted(set(files))]
    return Listing(names, splits, problems.note(), home)


def _labels_without_pictures(pictures: Path, found: list[Path], labels: Path, problems: Problems) -> None:
    """Each label file under `labels` whose picture is not among those `found` under `pictures`."""
    have = {p.relative_to(pictures).with_suffix("") for p in found}
    for label in sorted(labels.rglob("*.txt")):
        if label.name == "classes.txt" or label.relative_to(labels).with_suffix("") in have:
            continue
        problems.bad("label-without-picture", f"{label}: a label file without its picture (no "
                     f"{pictures / label.relative_to(labels).with_suffix('')}.png|jpg|... )", label)


def _listed_pictures(listing: Path, problems: Problems) -> list[Path]:
    out = []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        path = Path(line) if os.path.isabs(line) else listing.parent / line
        if not path.is_file():
            problems.bad("missing-picture", f"{listing}: line {n}: {path}: no such picture", listing)
            continue
        out.append(path)
    return out


def _yolo_picture(picture: Path, classes: int, problems: Problems) -> Picture:
    label = label_path(picture)
    boxes, labels = [], []
    if label.is_file():
        try:
            text = label.read_text(encoding="utf-8-sig")  # a byte-order mark from Windows tools is not a field
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{label}: cannot read ({err})") from None
        for n, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{label}: line {n}"
            polygon = len(fields) >= 7 and len(fields) % 2 == 1  # YOLO segments: class x1 y1 x2 y2 x3 y3 ...
            if len(fields) != 5 and not polygon:
                problems.bad("bad-line", f"{where}: {len(fields)} fields, expected 5 (class cx cy w h) or a polygon "
                             f"(class x1 y1 x2 y2 x3 y3 ...)", label)
                continue
            try:
                values = [float(v) for v in fields]
            except ValueError:
                problems.bad("bad-line", f"{where}: '{line.strip()[:60]}' is not {'five ' if not polygon else ''}"
                             f"numbers ({'class x1 y1 x2 y2 ...' if polygon else 'class cx cy w h'})", label)
                continue
            cls = values[0]
            if cls != int(cls) or not 0 <= cls < classes:
                problems.bad("unknown-class", f"{where}: class {fields[0]} is not one of the {classes} classes "
                             f"(0..{classes - 1})", label)
                continue
            if not all(-VALUE_SLACK <= v <= 1 + VALUE_SLACK for v in values[1:]):
                shown = " ".join(fields[1:9]) + (" ..." if len(fields) > 9 else "")
                problems.bad("not-normalised", f"{where}: {'the points' if polygon else 'cx cy w h'} must be shares "
                             f"of the picture in 0..1, found {shown} (pixels? divide by the picture's width and "
                             f"height)", label)
                continue
            if polygon:  # read as its box, the way Ultralytics trains detection on segment labels
                xs, ys = values[1::2], values[2::2]
                cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
            else:
                cx, cy, w, h = values[1:]
            box = check_box((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), (1.0, 1.0), problems, where, label,
                            NORM_TOLERANCE)
            if box is not None:
                boxes.append(box)
                labels.append(int(cls))
    return _picture(picture, boxes, labels, (1.0, 1.0), str(label) if label.is_file() else str(picture))


# ---------------------------------------------------------------- Pascal VOC


def _xml_text(node, tag: str):
    found = node.find(tag)
    return found.text.strip() if found is not None and found.text else None


def read_voc(entry, problems: Problems) -> Listing:
    import xml.etree.ElementTree as ET

    root = Path(entry.root)
    annotations, pictures = root / "Annotations", root / "JPEGImages"
    if not annotations.is_dir():
        raise DataError(f"data.root: {root}/ has no Annotations/ folder (Pascal VOC: Annotations/*.xml, "
                        f"JPEGImages/, ImageSets/Main/<split>.txt)")
    sets = root / "ImageSets" / "Main"
    ids = {}
    for split in SPLITS:
        listed = sets / f"{split}.txt"
        if split == "train" and not listed.is_file() and (sets / "trainval.txt").is_file() and \
                not (sets / "val.txt").is_file():
            listed = sets / "trainval.txt"
        if listed.is_file():
            ids[split] = [line.split()[0] for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
    if "train" not in ids:
        ids = {"train": sorted(p.stem for p in annotations.glob("*.xml"))}
        if not ids["train"]:
            raise DataError(f"{annotations}/: no .xml annotations")
    parsed = {}
    for split, stems in ids.items():
        for stem in stems:
            xml = annotations / f"{stem}.xml"
            if not xml.is_file():
                problems.bad("missing-annotation", f"{sets / (split + '.txt')}: {stem}: no {xml}", xml)
                continue
            try:
                parsed[stem] = ET.parse(xml).getroot()
            except ET.ParseError as err:
                line, col = err.position
                raise DataError(f"{xml}: line {line}, column {col}: not XML ({err.msg if hasattr(err, 'msg') else err})"
                                ) from None
    names = list(entry.classes) if entry.classes else sorted(
        {_xml_text(obj, "name") for stem in ids["train"] if stem in parsed for obj in parsed[stem].iter("object")}
        - {None})
    if not names:
        raise DataError(f"{annotations}/: no <object> with a <name> in the training annotations")
    index = {n: i for i, n in enumerate(names)}
    splits, skipped = {}, {}
    for split, stems in ids.items():
        splits[split], skipped[split] = [], 0
        for stem in stems:
            if stem not in parsed:
                continue
            picture, dropped = _voc_picture(annotations / f"{stem}.xml", parsed[stem], pictures, index,
                                            entry.difficult, problems)
            skipped[split] += dropped
            if picture is not None:
                splits[split].append(picture)
        splits[split].sort(key=lambda p: str(p.path))
    hard = sum(skipped.values())
    notes = [f"{hard:,} difficult object{'s' if hard != 1 else ''} left out of the targets (as VOC's evaluation "
             f"ignores them; data.difficult: true keeps them)"] if hard else []
    return Listing(names, splits, notes + problems.note(), root, skipped)


def _voc_picture(xml: Path, node, pictures: Path, index: dict[str, int], difficult: bool, problems: Problems):
    name = _xml_text(node, "filename") or f"{xml.stem}.jpg"
    file = pictures / name
    if not file.is_file():
        alternatives = [p for p in (pictures / f"{xml.stem}{s}" for s in (".jpg", ".png", ".jpeg")) if p.is_file()]
        if not alternatives:
            problems.bad("missing-picture", f"{xml}: its picture {file} does not exist", xml)
            return None, 0
        file = alternatives[0]
    size = node.find("size")
    try:
        width, height = float(_xml_text(size, "width")), float(_xml_text(size, "height"))
    except (TypeError, ValueError, AttributeError):
        problems.bad("bad-xml", f"{xml}: no <size> with <width> and <height>", xml)
        return None, 0
    boxes, labels, dropped = [], [], 0
    for n, obj in enumerate(node.iter("object"), 1):
        label = _xml_text(obj, "name")
        where = f"{xml}: object {n} ({label})"
        if label not in index:
            problems.bad("unknown-class", f"{where}: unknown class '{label}' (data.classes: {', '.join(index)})", xml)
            continue
        if _xml_text(obj, "difficult") == "1" and not difficult:
            dropped += 1
            continue
        bnd = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(_xml_text(bnd, k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError, AttributeError):
            problems.bad("bad-xml", f"{where}: no <bndbox> with xmin, ymin, xmax, ymax", xml)
            continue
        # VOC counts pixels from 1 and includes the last: pixel edges are x1 - 1 .. x2
        box = check_box((x1 - 1, y1 - 1, x2, y2), (height, width), problems, where, xml, BOX_TOLERANCE)
        if box is not None:
            boxes.append(box)
            labels.append(index[label])
    return _picture(file, boxes, labels, (height, width), str(xml), (int(height), int(width))), dropped


# ---------------------------------------------------------------- into tensors


def targets(pictures: list[Picture], rows: int, hw: tuple[int, int]):
    """float32 (N, rows, 5) [class, x1, y1, x2, y2] in the model's input pixels (hw: its height and width)."""
    import torch

    from dlcli.data.spatial import scale_boxes

    y = np.zeros((len(pictures), rows, 5), dtype=np.float64)
    y[..., 0] = -1
    for i, p in enumerate(pictures):
        k = len(p.classes)
        if k:
            y[i, :k, 0] = p.classes
            y[i, :k, 1:] = scale_boxes(p.boxes, p.frame, hw)
    return torch.from_numpy(y.astype(np.float32))


def strata(pictures: list[Picture], classes: int) -> np.ndarray:
    """Each picture's rarest class in the split (by box count), or `classes` for a picture without objects: what a
    stratified cut keeps in proportion."""
    counts = np.bincount(np.concatenate([p.classes for p in pictures] + [np.zeros(0, np.int64)]),
                         minlength=classes)
    out = np.full(len(pictures), classes, dtype=np.int64)
    for i, p in enumerate(pictures):
        if len(p.classes):
            out[i] = min(p.classes.tolist(), key=lambda c: (counts[c], c))
    return out


class _Origin:
    """Names where a picture was listed when its file cannot be decoded (dlcli.data.stream's `origin`)."""

    def __init__(self, pictures):
        self.places = {str(p.path): p.where for p in pictures}

    def where(self, path) -> str | None:
        return self.places.get(str(path))


def read_detection(entry, seed: int, task=None):
    """The DataBundle of a detection entry (coco, yolo, voc)."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, Splitter, image_split, train_statistics
    from dlcli.data.folders import STREAM_ABOVE_BYTES
    from dlcli.data.stream import FileList

    listing = entry.listing(problems_for(entry))
    hw = entry.size()
    shape = (entry.channels, *hw)
    everything = [p for pictures in listing.splits.values() for p in pictures]
    rows = max([1] + [len(p.classes) for p in everything])
    train = listing.splits["train"]
    cut = Splitter(torch.from_numpy(strata(train, len(listing.classes))), seed, entry.split,
                   [*listing.classes, "(no objects)"])
    test_idx = cut.cut(entry.test_split, "test") if "test" not in listing.splits else None
    if "val" in listing.splits and entry.cv_fold:
        raise DataError(f"train.cv: this {entry.dataset} dataset has its own validation split; cross-validation "
                        f"cuts its folds from the training pictures: move them into train, or train without --cv")
    val_idx = cut.cut_val(entry) if "val" not in listing.splits else None
    train_idx = cut.train(entry.max_train_samples, entry.val_split)
    chosen = {"train": [train[i] for i in train_idx.tolist()]}
    chosen["val"] = [train[i] for i in val_idx.tolist()] if val_idx is not None else listing.splits["val"]
    chosen["test"] = [train[i] for i in test_idx.tolist()] if test_idx is not None else listing.splits["test"]

    total = len(everything) * shape[0] * shape[1] * shape[2]
    stream = entry.stream if isinstance(entry.stream, bool) else total > STREAM_ABOVE_BYTES
    cache_dir = listing.home / ".cache" if entry.cache and not stream else None
    origin = _Origin(everything)
    known = {}  # a cached split's statistics, stored beside its pixels
    made = {name: image_split(FileList([p.path for p in chosen[name]], shape, entry.num_workers, stream, cache_dir,
                                       origin), targets(chosen[name], rows, hw), known, name) for name in SPLITS}
    fit_on = made["train"]
    mean, std, image = train_statistics(fit_on, known, seed)
    fitted = task.fit(fit_on.y, listing.classes) if task is not None else {}
    return DataBundle(fit_on, made["val"] if len(made["val"]) else None, made["test"], list(listing.classes), shape,
                      Normalizer(mean, std, image), notes=[*listing.notes, *cut.notes], target=fitted)


# ---------------------------------------------------------------- dlcli data check

TINY_SIDE = 4.0  # a box under this many input pixels wide or high after the resize is hard to find


def _decode_size(path: Path, shape) -> tuple[tuple[int, int] | None, str | None]:
    """(the picture's own (height, width), upright; or None and why it cannot be decoded), as training decodes it."""
    from dlcli.data.images import ImageError, load_image

    sizes: list = []
    try:
        load_image(str(path), shape, sizes=sizes)
    except ImageError as err:
        return None, str(err)
    return tuple(sizes[0]), None


def survey_detection(entry, report) -> None:
    """`dlcli data check` of a detection entry into `report` (dlcli.doctor.Report): every problem training would
    stop at, the boxes per class and per size (COCO's small < 32², medium < 96², large, in the picture's own
    pixels), pictures without objects, boxes too small to find at image_size, pictures whose stated size is not
    their decoded size, and pictures that cannot be decoded."""
    from concurrent.futures import ThreadPoolExecutor

    from dlcli.data.spatial import scale_boxes
    from dlcli.tasks import ERROR, INFO, WARNING
    from dlcli.tasks.classification import class_findings

    problems = problems_for(entry, collect=True)
    try:
        listing = entry.listing(problems)
    except DataError as err:  # the layout itself cannot be read: nothing more to count
        report.add(ERROR, "layout", str(err))
        return
    for check, message, path in problems.found:
        report.add(ERROR, check, message, [path] if path else [])
    for check, message, path in problems.dropped:
        report.add(WARNING, check, f"{message}: dropped (data.bad_boxes: drop)", [path] if path else [])
    for split in ("val", "test"):
        if split not in listing.splits:
            share = entry.val_split if split == "val" else entry.test_split
            report.add(INFO, "layout", f"no {split} split: {share:.0%} of the training pictures are held out as "
                       f"{split} (seeded)")
    for note in listing.notes:
        report.add(INFO, "left-out", note)
    seen: dict[str, str] = {}
    for split, pictures in listing.splits.items():
        shared = [p.path for p in pictures if seen.setdefault(str(p.path.resolve()), split) != split]
        if shared:
            first = seen[str(shared[0].resolve())]
            report.add(ERROR, "leakage", f"{len(shared):,} pictures of {split} are also in {first} (e.g. "
                       f"{shared[0]}): {split} scores would not say how the model does on new pictures", shared[:1])

    shape = (entry.channels, *entry.size())
    hw = entry.size()
    everything = [(split, p) for split, pictures in listing.splits.items() for p in pictures]
    import torch  # noqa: F401  (load_image's; imported once here rather than racing in the worker threads)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda item: _decode_size(item[1].path, shape), everything))

    counts = {split: {name: 0 for name in listing.classes} for split in listing.splits}
    section = {}
    tiny, mismatched = 0, 0
    for split in listing.splits:
        section[split] = {"pictures": 0, "without_objects": 0, "boxes": 0, "most_boxes": 0,
                          **{name: 0 for name, _ in SIZES}, "left_out": listing.skipped.get(split, 0)}
    for (split, p), (size, why) in zip(everything, decoded):
        row = section[split]
        row["pictures"] += 1
        if why is not None:
            report.add(ERROR, "unreadable-image", f"{p.where}: {p.path}: {why}", [p.path])
        elif p.size is not None and tuple(p.size) != size:
            mismatched += 1
            report.add(ERROR, "size-mismatch", f"{p.where}: {p.path} is {size[1]}x{size[0]} when decoded, but its "
                       f"annotation says {p.size[1]}x{p.size[0]}: its boxes would land in the wrong place", [p.path])
        k = len(p.classes)
        row["boxes"] += k
        row["most_boxes"] = max(row["most_boxes"], k)
        if not k:
            row["without_objects"] += 1
            continue
        for c in p.classes.tolist():
            counts[split][listing.classes[c]] += 1
        own = size if size is not None else p.size
        if own is not None:
            pixels = scale_boxes(p.boxes, p.frame, own)
            areas = (pixels[:, 2] - pixels[:, 0]) * (pixels[:, 3] - pixels[:, 1])
            for name, bound in SIZES:
                hit = areas < bound
                row[name] += int(hit.sum())
                areas = np.where(hit, np.inf, areas)
        model = scale_boxes(p.boxes, p.frame, hw)
        tiny += int(((model[:, 2] - model[:, 0] < TINY_SIDE) | (model[:, 3] - model[:, 1] < TINY_SIDE)).sum())
    findings, classes = class_findings(counts, "class")
    for severity, check, message, *paths in findings:
        if check == "too-few-classes":  # one kind of object is a detector's whole job, unlike a classifier's
            continue
        if check == "empty-class":  # a category without boxes costs an unused output, not a broken run
            severity, message = WARNING, (f"{message}: no boxes, so the detector never learns it (an exporter's "
                                          f"placeholder category, such as Roboflow's id 0, is one)")
        report.add(severity, check, message, *paths)
    report.sections["classes"] = {**classes, "unit": "boxes"}
    report.sections["boxes"] = {"input_size": list(hw), **section}
    for split, row in section.items():
        if row["pictures"] and row["without_objects"]:
            share = row["without_objects"] / row["pictures"]
            report.add(WARNING if share > 0.5 else INFO, "no-objects", f"{split}: {row['without_objects']:,} of "
                       f"{row['pictures']:,} pictures hold no object ({share:.0%}; they teach what is background)")
    if tiny:
        report.add(WARNING, "tiny-boxes", f"{tiny:,} boxes are under {TINY_SIDE:g} pixels wide or high at "
                   f"image_size {hw[1]}x{hw[0]}: too small to find; a larger image_size keeps them")


# ---------------------------------------------------------------- recognising a layout from a path


def looks_like_data_yaml(path: Path) -> bool:
    """An Ultralytics data.yaml (train and names, none of a dlcli config's sections) rather than a dlcli config."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(spec, dict) and "train" in spec and "names" in spec and not {"data", "model"} & set(spec)


def _sibling_jsons(path: Path) -> dict[str, Path]:
    """COCO files of the other splits beside a train file: instances_train2017.json -> instances_val2017.json, or
    train/_annotations.coco.json -> valid/_annotations.coco.json (Roboflow's export, pictures beside each JSON)."""
    out = {}
    for split, names in (("val", ("val", "valid")), ("test", ("test",))):
        for name in names:
            if "train" in path.name:
                other = path.with_name(path.name.replace("train", name))
            elif path.parent.name.startswith("train"):
                other = path.parent.parent / path.parent.name.replace("train", name) / path.name
            else:
                continue
            if other.is_file() and split not in out:
                out[split] = other
    return out


def recognise(path: Path) -> dict | None:
    """The `data:` mapping of the detection layout at `path` (a COCO JSON, a data.yaml, a folder holding either, a
    YOLO images/+labels/ root or a VOC root), or None when it is none of them. What `dlcli init` writes and what
    `dlcli data check PATH` reads."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            data = {"dataset": "coco", "train_annotations": path.as_posix()}
            data |= {f"{s}_annotations": p.as_posix() for s, p in _sibling_jsons(path).items()}
            return data
        if path.suffix.lower() in (".yaml", ".yml") and looks_like_data_yaml(path):
            return {"dataset": "yolo", "data_yaml": path.as_posix()}
        return None
    if not path.is_dir():
        return None
    for name in ("data.yaml", "data.yml", *sorted(p.name for p in path.glob("*.yaml"))):
        if (path / name).is_file() and looks_like_data_yaml(path / name):
            return {"dataset": "yolo", "data_yaml": (path / name).as_posix()}
    annotations = path / "annotations"
    found = sorted(annotations.glob("*train*.json")) if annotations.is_dir() else []
    found = found or sorted(path.glob("*train*.json")) or sorted(path.glob("train*/*.json"))
    if found:
        return recognise(next((p for p in found if p.name.startswith("instances")), found[0]))
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return {"dataset": "voc", "root": path.as_posix()}
    if ((path / "labels").is_dir() and (path / "images" / "train").is_dir()) or \
            ((path / "train" / "labels").is_dir() and (path / "train" / "images").is_dir()):
        return {"dataset": "yolo", "root": path.as_posix()}
    return None
