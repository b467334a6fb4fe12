"""`dlcli predict`: image files -> the model's input, the way training saw it -> top-k labels and probabilities.

Preprocessing, in order (the run's data.json gives C, H, W and the normalisation):
  1. decode with PIL (any format it reads; the first frame of animations), EXIF orientation applied;
     PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) stays in force;
  2. 16-bit and 32-bit images (I;16, I, F) are scaled to 0-255 (65535 -> 255; float images in 0-1 -> 0-255);
  3. transparency (RGBA, LA, P or L/RGB with a transparent colour) is composited onto the background the model
     knows: black, or white with --invert (so transparent pixels end up black after inversion either way);
  4. C = 1: grayscale (ITU-R 601 luma); C = 3: RGB;
  5. resized to W x H (stretched, no crop or padding; bilinear with antialiasing; an image already W x H is
     untouched, so a PNG written from the dataset gives exactly the training tensor);
  6. with --invert, 255 - value (for dark strokes on a light background: MNIST-style models learnt white on black);
  7. uint8 0-255, then the run's normalisation, as in training.

Images are decoded and sent through the model in batches. Nothing here imports torchvision or matplotlib.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from dlcli.errors import BAD_INPUT, DlcliError

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .bmp .dib .gif .webp .tif .tiff .ppm .pgm .pbm .pnm .tga .ico .jp2 .j2k".split()
)
BATCH = 256


class ImageError(Exception):
    """One input that cannot become a model input; reported on its own line, the others go on."""


@dataclass
class Prediction:
    image: str
    top: list[dict]


def expand_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, directories expanded to their image files (by extension, sorted by name, not recursive).

    Returns (files, [(path, problem)]) so one missing path does not stop the others.
    """
    files, problems = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                (p for p in path.iterdir()
                 if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
                key=lambda p: p.name,
            )
            if not found:
                problems.append((raw, f"no image files in this directory ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
            files += [str(p) for p in found]
        elif path.exists():
            files.append(raw)
        else:
            problems.append((raw, "no such file or directory"))
    return files, problems


def _to_8bit(img):
    """16/32-bit integer and float images -> mode L, scaled to 0-255 (PIL's own convert('L') would clip)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = (arr.astype(np.uint32) + 128) // 257
    elif img.mode == "I":
        arr = arr.astype(np.int64)
        arr = (arr.clip(0, 65535) + 128) // 257 if arr.max(initial=0) > 255 else arr.clip(0, 255)
    else:  # F
        arr = np.nan_to_num(arr.astype(np.float64))
        arr = (arr * 255 if arr.max(initial=0) <= 1.0 else arr).round().clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def load_image(path: str, input_shape: tuple[int, ...], invert: bool = False, warn=None):
    """One image file -> a uint8 tensor (C, H, W) in the run's input format; ImageError with a one-line reason."""
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels, height, width = input_shape
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":  # decode big JPEGs at a reduced scale, still at least W x H
                    img.draft("L" if channels == 1 else "RGB", (width, height))
                img.load()
                try:
                    img = ImageOps.exif_transpose(img)
                except Exception:  # a malformed EXIF block: keep the image as stored
                    pass
                try:
                    img = _convert(img, channels, invert)
                except ValueError as err:  # e.g. LAB or HSV, which PIL cannot turn into RGB or grayscale
                    raise ImageError(f"cannot convert a mode {img.mode} image to "
                                     f"{'grayscale' if channels == 1 else 'RGB'} ({err})") from None
        for w in caught:
            if warn is not None and issubclass(w.category, Image.DecompressionBombWarning):
                warn(f"{path}: {w.message}")
    except Image.DecompressionBombError as err:
        raise ImageError(f"refused: {err}") from None
    except UnidentifiedImageError:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        raise ImageError("empty file, not an image" if size == 0 else "not an image PIL can read") from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImageError(f"damaged or truncated image ({reason[:160]})") from None
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if invert:
        img = ImageOps.invert(img)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(height, width, channels).permute(2, 0, 1).contiguous()


def _convert(img, channels: int, invert: bool):
    from PIL import Image

    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if invert else (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def check_image_run(info: dict, run_name: str) -> tuple[int, int, int]:
    shape = tuple(info["input_shape"])
    if len(shape) != 3 or not info["normalization"]["image"]:
        raise DlcliError(f"run {run_name} was trained on non-image data of shape {shape}: predict takes images")
    if shape[0] not in (1, 3):
        raise DlcliError(f"run {run_name} takes {shape[0]}-channel images: predict reads grayscale (1) or RGB (3)")
    return shape


def predict_files(run: Path, inputs: list[str], top_k: int = 5, invert: bool = False, checkpoint: str = "best",
                  device: str = "cpu", on_result=None, on_problem=None, batch_size: int = BATCH) -> tuple[list, int]:
    """Predict every readable image; returns (predictions in input order, number of inputs that failed).

    on_result(Prediction) is called as each batch finishes; on_problem(path, reason) for each failure and
    on_problem(None, message) for warnings.
    """
    import torch

    from dlcli.evaluate import load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
    shape = check_image_run(info, run.name)
    files, problems = expand_inputs(inputs)
    if not files and not problems:
        raise DlcliError("no images given", BAD_INPUT)
    loaded = load_run(run, checkpoint, device, info=info)
    report = on_problem or (lambda path, reason: None)
    for path, reason in problems:
        report(path, reason)
    failed = len(problems)
    k = min(top_k, len(loaded.classes))
    results = []
    for start in range(0, len(files), batch_size):
        names, tensors = [], []
        for path in files[start : start + batch_size]:
            try:
                tensors.append(load_image(path, shape, invert, warn=lambda msg: report(None, msg)))
                names.append(path)
            except ImageError as err:
                report(path, str(err))
                failed += 1
        if not tensors:
            continue
        probs = torch.softmax(loaded.logits(torch.stack(tensors), batch_size), dim=1)
        values, indices = probs.topk(k, dim=1)
        for name, vals, idxs in zip(names, values.tolist(), indices.tolist()):
            pred = Prediction(name, [{"index": i, "label": loaded.classes[i], "probability": p}
                                     for i, p in zip(idxs, vals)])
            results.append(pred)
            if on_result is not None:
                on_result(pred)
    return results, failed


def render(pred: Prediction, console) -> None:
    from rich.table import Table

    table = Table(title=pred.image, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rank, entry in enumerate(pred.top, 1):
        table.add_row(str(rank), entry["label"], f"{entry['probability']:.4f}")
    console.print(table)


def predict_records(run: Path, inputs: list[str], top_k: int = 5, checkpoint: str = "best", device: str = "cpu",
                    text_file: str | None = None) -> list[Prediction]:
    """Predictions for a run trained on CSV rows (inputs are CSV files) or text (inputs are the texts themselves,
    plus one per line of text_file), preprocessed with the run's stored columns, categories or vocabulary."""
    import torch

    from dlcli.data.tables import preprocessor_for, read_csv
    from dlcli.evaluate import load_run, read_data_info

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    info = read_data_info(run)
    state = {k: v for k, v in (info["preprocessing"] or {}).items() if k != "kind"}
    loaded = load_run(run, checkpoint, device, info=info)
    pre = preprocessor_for(loaded.cfg.data, None, state)
    if pre.kind == "text":
        texts = list(inputs)
        if text_file:
            try:
                texts += [line for line in Path(text_file).read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise DlcliError(f"--text-file {text_file}: cannot read it ({err})") from None
        if not texts:
            raise DlcliError("no text given: pass texts as arguments or --text-file FILE")
        x, names = pre.ids(texts, "input"), texts
    else:
        if text_file:
            raise DlcliError(f"run {run.name} was trained on a table: pass CSV files, not --text-file")
        if not inputs:
            raise DlcliError("no CSV file given")
        blocks, names = [], []
        for path in inputs:
            header, rows = read_csv(path, [])
            missing = [c for c in pre.features if c not in header]
            if missing:
                raise DlcliError(f"{path}: no column '{missing[0]}' (the run trained on {', '.join(pre.features)})")
            x_part, kept = pre.encode(rows, path)
            blocks.append(x_part)
            names += [f"{path}:{i + 2}" for i in kept]
        x = torch.cat(blocks)
    probs = torch.softmax(loaded.logits(x), dim=1)
    values, indices = probs.topk(min(top_k, len(loaded.classes)), dim=1)
    return [Prediction(name, [{"index": i, "label": loaded.classes[i], "probability": p} for i, p in zip(ii, vv)])
            for name, vv, ii in zip(names, values.tolist(), indices.tolist())]
