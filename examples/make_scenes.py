"""Example scenes for detection and segmentation, written offline in the layouts users bring: COCO, YOLO and
images + masks, all three over the same pictures.

    python examples/make_scenes.py data/shapes                      # 1,000 scenes of coloured shapes, 96 px
    python examples/make_scenes.py data/glyphs --kind glyphs -n 2000 --size 128

Two kinds of scene, each seeded (the same seed writes the same files):
  shapes  circles, squares and triangles of random colours and sizes on textured, noisy backgrounds (3 classes);
  glyphs  the digits 0-9 in random colours, sizes and shades over clutter: lines, arcs, dots and letters that are
          not classes (10 classes; a harder, denser kind of scene).
Objects never overlap, so a picture's boxes and its mask tell the same story; some pictures hold no object.

What is written under OUT (one folder of pictures, three ways of annotating them):
  images/<split>/NNNNNN.png                       the pictures (split: train, val, test)
  annotations/instances_<split>.json              COCO: bbox [x, y, w, h] in pixels, category ids from 1, each
                                                  object's pixels as an uncompressed RLE (its segmentation)
  labels/<split>/NNNNNN.txt, data.yaml            YOLO: `class cx cy w h` normalised, Ultralytics' data.yaml
  masks/<split>/NNNNNN.png, classes.txt           masks: one byte per pixel, 0 background, 1.. the classes
  voc/Annotations/NNNNNN.xml, voc/JPEGImages/     Pascal VOC (pixels from 1), splits in voc/ImageSets/Main/
                                                  (the pictures hard-linked, or copied, from images/)
Then: `dlcli init OUT/data.yaml` (YOLO), `dlcli init OUT/annotations/instances_train.json` (COCO) or
`dlcli init OUT/masks` (segmentation) writes a config that trains.

Importable (tests and benchmarks): `write_scenes(out, n, ...)` writes the layouts; `scenes(n, ...)` yields the
pictures and their objects without writing anything.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")
DIGITS = tuple("0123456789")
KINDS = {"shapes": SHAPES, "glyphs": DIGITS}
LAYOUTS = ("coco", "yolo", "masks", "voc")


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    boxes: list[tuple[int, int, int, int, int]]  # (class, x1, y1, x2, y2): pixels, x2/y2 exclusive (x2 - x1 = width)
    mask: np.ndarray  # (H, W) uint8: 0 background, class + 1 where an object is
    areas: list[int]  # pixels of each object


# ---------------------------------------------------------------- backgrounds


def _smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    """A random field of `cells` x `cells` values bilinearly spread over h x w, in 0..1."""
    grid = rng.random((cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _background(rng, h: int, w: int, grain: np.ndarray) -> np.ndarray:
    """A textured, noisy background (float32 0..255, (H, W, 3)): two colours mixed by smooth noise, stripes or a
    checker of random period, and pixel noise (a random window of `grain`, unit Gaussian noise drawn once)."""
    low, high = rng.uniform(20, 200, 3).astype(np.float32), rng.uniform(40, 230, 3).astype(np.float32)
    mix = _smooth_noise(rng, h, w, int(rng.integers(2, 6))).astype(np.float32)[..., None]
    img = low + (high - low) * mix
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    period = rng.uniform(4, 16)
    texture = rng.integers(3)
    if texture == 0:  # stripes at an angle
        angle = rng.uniform(0, np.pi)
        img += (18 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)))[..., None]
    elif texture == 1:  # a soft checker
        img += (14 * (((xx // period) + (yy // period)) % 2 * 2 - 1))[..., None]
    y0, x0 = int(rng.integers(grain.shape[0] - h + 1)), int(rng.integers(grain.shape[1] - w + 1))
    img += grain[y0:y0 + h, x0:x0 + w] * np.float32(rng.uniform(4, 14))
    return img


# ---------------------------------------------------------------- objects


def _free(boxes, x1: int, y1: int, x2: int, y2: int, gap: int = 1) -> bool:
    return all(x1 >= b[3] + gap or x2 + gap <= b[1] or y1 >= b[4] + gap or y2 + gap <= b[2] for b in boxes)


def _colour(rng, under: np.ndarray) -> np.ndarray:
    """A saturated colour that stands out from the pixels it covers (mean distance at least 90)."""
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        colour[rng.integers(3)] = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])
        if np.abs(colour - mean).sum() >= 90 * 3 / 2:
            return colour
    return 255 - mean


def _shape_mask(rng, kind: int, side: int) -> np.ndarray:
    """A (side, side) bool mask of a circle, square or triangle (random orientation) filling most of it."""
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    c = side / 2
    if kind == 0:
        return (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    if kind == 1:
        return np.ones((side, side), dtype=bool)
    turn = rng.uniform(0, 2 * np.pi)
    corners = [(c + c * np.cos(turn + k * 2 * np.pi / 3), c + c * np.sin(turn + k * 2 * np.pi / 3)) for k in range(3)]
    inside = np.ones((side, side), dtype=bool)
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        inside &= (bx - ax) * (yy - ay) - (by - ay) * (xx - ax) >= 0
    return inside


def _glyph_mask(rng, text: str, side: int):
    """A bool mask of `text` drawn with PIL's built-in font about `side` pixels high, cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(6, side))
    canvas = Image.new("L", (side * 2 + 4, side * 2 + 4))
    ImageDraw.Draw(canvas).text((2, 2), text, fill=255, font=font,
                                stroke_width=int(rng.integers(0, 2)) if side >= 14 else 0)
    if rng.random() < 0.5:
        canvas = canvas.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR, expand=False)
    ink = np.asarray(canvas) >= 128
    if not ink.any():
        return None
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _clutter(rng, img: np.ndarray) -> None:
    """Lines, arcs, dots and letters (not classes) drawn onto img in place."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = img.shape[:2]
    layer = Image.new("L", (w, h))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(3, 9))):
        what = rng.integers(4)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if what == 0:
            draw.line([(x, y), (rng.uniform(0, w), rng.uniform(0, h))], fill=255, width=int(rng.integers(1, 3)))
        elif what == 1:
            r = rng.uniform(4, w / 4)
            draw.arc([x - r, y - r, x + r, y + r], rng.uniform(0, 360), rng.uniform(0, 360), fill=255, width=1)
        elif what == 2:
            r = rng.uniform(1, 3)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        else:
            font = ImageFont.load_default(size=int(rng.integers(8, max(9, h // 4))))
            draw.text((x, y), chr(ord("A") + int(rng.integers(26))), fill=255, font=font)
    ink = np.asarray(layer) > 0
    img[ink] = rng.uniform(0, 255, 3) * 0.5 + img[ink] * 0.5


def scene(rng, kind: str = "shapes", size: tuple[int, int] = (96, 96), max_objects: int = 4,
          empty: float = 0.08, grain: np.ndarray | None = None) -> Scene:
    """One picture (height, width = size) and its objects; grain: pixel noise to cut the background's from."""
    h, w = size
    if grain is None or grain.shape[0] < h or grain.shape[1] < w:
        grain = rng.standard_normal((h, w, 3), dtype=np.float32)
    img = _background(rng, h, w, grain)
    if kind == "glyphs":
        _clutter(rng, img)
    mask = np.zeros((h, w), dtype=np.uint8)
    boxes, areas = [], []
    count = 0 if rng.random() < empty else int(rng.integers(1, max_objects + 1))
    small, large = max(6, min(h, w) // 8), max(8, min(h, w) // 2)
    for _ in range(count):
        cls = int(rng.integers(len(KINDS[kind])))
        for _ in range(20):  # a few tries for a free place; a crowded picture keeps fewer objects
            side = int(rng.integers(small, large + 1))
            shape = _shape_mask(rng, cls, side) if kind == "shapes" else _glyph_mask(rng, DIGITS[cls], side)
            if shape is None or shape.shape[0] > h or shape.shape[1] > w:
                continue
            sh, sw = shape.shape
            x, y = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
            rows, cols = np.flatnonzero(shape.any(1)), np.flatnonzero(shape.any(0))
            box = (cls, x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)
            if not _free(boxes, *box[1:]):
                continue
            window = img[y:y + sh, x:x + sw]
            colour = _colour(rng, window[shape])
            shade = 1 + rng.normal(0, 0.06, (sh, sw, 1))  # the object is not one flat colour
            window[shape] = (colour * shade)[shape]
            mask[y:y + sh, x:x + sw][shape] = cls + 1
            boxes.append(box)
            areas.append(int(shape.sum()))
            break
    return Scene(np.clip(img, 0, 255).astype(np.uint8), boxes, mask, areas)


def scenes(n: int, kind: str = "shapes", size: int | tuple[int, int] = 96, seed: int = 0, max_objects: int = 4,
           sizes: tuple[int, int] | None = None):
    """n scenes, seeded. size: every picture's side (or (height, width)); sizes (low, high): each picture's height
    and width drawn from that range instead (pictures of different shapes)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    fixed = (size, size) if isinstance(size, int) else tuple(size)
    side = max(fixed) if sizes is None else sizes[1]
    grain = rng.standard_normal((side * 3, side * 3, 3), dtype=np.float32)
    for _ in range(n):
        hw = fixed if sizes is None else (int(rng.integers(sizes[0], sizes[1] + 1)),
                                          int(rng.integers(sizes[0], sizes[1] + 1)))
        yield scene(rng, kind, hw, max_objects, grain=grain)


# ---------------------------------------------------------------- writing the layouts


def _split_names(n: int, val: float, test: float, rng) -> list[str]:
    order = rng.permutation(n)
    n_val, n_test = int(round(n * val)), int(round(n * test))
    names = np.array(["train"] * n, dtype=object)
    names[order[:n_val]] = "val"
    names[order[n_val:n_val + n_test]] = "test"
    return list(names)


def write_scenes(out, n: int = 1000, kind: str = "shapes", size: int | tuple[int, int] = 96, seed: int = 0,
                 val: float = 0.1, test: float = 0.1, layouts=LAYOUTS, max_objects: int = 4,
                 sizes: tuple[int, int] | None = None) -> dict:
    """Write n scenes under `out` in the given layouts (see the module's doc); returns a summary: classes, the
    pictures and boxes per split, and the files of each layout. val/test 0 writes no such split."""
    from PIL import Image

    out = Path(out)
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"layouts {sorted(unknown)}: one of {', '.join(LAYOUTS)}")
    classes = list(KINDS[kind])
    split_of = _split_names(n, val, test, np.random.default_rng(seed + 1))
    splits = [s for s in ("train", "val", "test") if s in split_of]
    for split in splits:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        if "yolo" in layouts:
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        if "masks" in layouts:
            (out / "masks" / split).mkdir(parents=True, exist_ok=True)
    coco = {s: {"info": {"description": f"dlcli example scenes ({kind}, seed {seed})"},
                "images": [], "annotations": [],
                "categories": [{"id": i + 1, "name": c, "supercategory": kind} for i, c in enumerate(classes)]}
            for s in splits}
    counts = {s: {"pictures": 0, "boxes": 0} for s in splits}
    voc_sets: dict[str, list[str]] = {}
    if "voc" in layouts:
        for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (out / "voc" / folder).mkdir(parents=True, exist_ok=True)
    for i, (found, split) in enumerate(zip(scenes(n, kind, size, seed, max_objects, sizes), split_of)):
        stem = f"{i:06d}"
        h, w = found.image.shape[:2]
        Image.fromarray(found.image).save(out / "images" / split / f"{stem}.png", compress_level=1)
        counts[split]["pictures"] += 1
        counts[split]["boxes"] += len(found.boxes)
        if "coco" in layouts:
            book = coco[split]
            book["images"].append({"id": i + 1, "file_name": f"{stem}.png", "width": w, "height": h})
            for (cls, x1, y1, x2, y2), area in zip(found.boxes, found.areas):
                book["annotations"].append({"id": len(book["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                            "area": area, "iscrowd": 0,
                                            "segmentation": _rle(found.mask, cls + 1, (x1, y1, x2, y2))})
        if "yolo" in layouts:
            # repr: the shortest text that reads back as the same float, so YOLO and COCO give the same boxes
            lines = [f"{cls} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} {(x2 - x1) / w!r} {(y2 - y1) / h!r}"
                     for cls, x1, y1, x2, y2 in found.boxes]
            (out / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        if "masks" in layouts:
            Image.fromarray(found.mask, "L").save(out / "masks" / split / f"{stem}.png", compress_level=1)
        if "voc" in layouts:
            _write_voc(out / "voc", stem, out / "images" / split / f"{stem}.png", found, classes)
            voc_sets.setdefault(split, []).append(stem)
    files = {}
    if "coco" in layouts:
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        files["coco"] = []
        for split in splits:
            path = out / "annotations" / f"instances_{split}.json"
            path.write_text(json.dumps(coco[split]))
            files["coco"].append(str(path))
    if "yolo" in layouts:
        lines = [f"# dlcli example scenes ({kind}, seed {seed}): YOLO labels beside images/",
                 f"path: {json.dumps(str(out.resolve()))}"]
        lines += [f"{s}: images/{s}" for s in splits]
        lines += ["names:"] + [f"  {i}: {json.dumps(c)}" for i, c in enumerate(classes)]
        (out / "data.yaml").write_text("\n".join(lines) + "\n")
        files["yolo"] = [str(out / "data.yaml")]
    if "voc" in layouts:
        for split, stems in voc_sets.items():
            (out / "voc" / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        files["voc"] = [str(out / "voc")]
    if "masks" in layouts:
        (out / "classes.txt").write_text("\n".join(["background", *classes]) + "\n")
        files["masks"] = [str(out / "masks")]
    return {"kind": kind, "classes": classes, "splits": counts, "files": files}


def _rle(mask: np.ndarray, value: int, box) -> dict:
    """COCO's uncompressed RLE of one object: its pixels (`value` inside its box; boxes never overlap) as run
    lengths down the columns, starting with a run of background."""
    x1, y1, x2, y2 = box
    pixels = np.zeros(mask.shape, bool)
    pixels[y1:y2, x1:x2] = mask[y1:y2, x1:x2] == value
    flat = pixels.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = runs.tolist() if not flat[0] else [0, *runs.tolist()]
    return {"size": list(mask.shape), "counts": counts}


def _write_voc(root: Path, stem: str, picture: Path, found: Scene, classes: list[str]) -> None:
    """One picture's Pascal VOC annotation (pixels counted from 1, both ends included) and the picture itself."""
    import os
    import shutil
    from xml.sax.saxutils import escape

    target = root / "JPEGImages" / picture.name
    try:
        os.link(picture, target)
    except OSError:  # another file system, or no hard links: a copy
        shutil.copyfile(picture, target)
    h, w = found.image.shape[:2]
    objects = "".join(
        f"<object><name>{escape(classes[cls])}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
        f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for cls, x1, y1, x2, y2 in found.boxes)
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{picture.name}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objects}</annotation>\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the folder to write (created)")
    parser.add_argument("--kind", choices=sorted(KINDS), default="shapes")
    parser.add_argument("-n", type=int, default=1000, help="pictures (default 1000)")
    parser.add_argument("--size", type=int, default=96, help="each picture's side in pixels (default 96)")
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("LOW", "HIGH"),
                        help="each picture's height and width drawn from LOW..HIGH instead of --size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=float, default=0.1, help="share of the pictures in val/ (0: none)")
    parser.add_argument("--test", type=float, default=0.1, help="share of the pictures in test/ (0: none)")
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        parser.error(f"{args.out} exists and is not empty; choose a new folder")
    start = time.perf_counter()
    summary = write_scenes(args.out, args.n, args.kind, args.size, args.seed, args.val, args.test,
                           [s.strip() for s in args.layouts.split(",") if s.strip()], args.max_objects,
                           tuple(args.sizes) if args.sizes else None)
    took = time.perf_counter() - start
    parts = ", ".join(f"{s} {v['pictures']:,} pictures / {v['boxes']:,} boxes" for s, v in summary["splits"].items())
    print(f"{args.out}: {args.kind} ({', '.join(summary['classes'])}): {parts} in {took:.1f} s")
    for layout, found in summary["files"].items():
        print(f"  {layout}: {', '.join(found)}")


if __name__ == "__main__":
    main()
