"""What a Python user holds -> a run's model input, preprocessed exactly as in training and as `dlcli predict` reads
files: image_inputs, table_inputs and text_inputs (dlcli.api's Run.predict calls the one of the run's kind).

Images: file paths go through dlcli.data.images.load_image; PIL images, NumPy arrays and torch tensors become PIL
images of the same mode a file would decode to and take the same conversion (channels, 16-bit scaling, transparency,
resize, invert), so a PNG file, `Image.open(file)` and `np.asarray(Image.open(file))` give identical tensors.
Array shapes: (H, W) one grayscale image; (H, W, C) one image, C in 1-4; (N, H, W) a batch of grayscale images, but
(3, H, W) for an RGB run is one image with the channels first; (N, H, W, C), or (N, C, H, W) when C is 1, 3 or 4 and
the last axis is not. uint8 is taken as is, uint16 as a 16-bit image (scaled to 0-255, as 16-bit files are), other
integers like PIL's 32-bit mode I, floats only when they are whole numbers in 0-255 (0-1 or normalised floats are
refused: the run expects the pixels, and guessing the scale would be wrong silently).
Names: a path is its own name; an object in memory is named by how you would index what you passed: `array[0]`,
`tensor[3]`, `image[1]` (0-based), `array[1][4]` for image 4 of the batch at position 1 of a list.

Tables: a pandas DataFrame, a pyarrow Table (or RecordBatch), a list of dicts (one per row), or CSV / Parquet paths,
encoded with the run's stored fit by dlcli.data.tables (one code path with files): rows are `row N` (1-based).
Texts: strings (or, for a text_csv run, a table holding its text column).

Two things a file has that its pixels in an array do not: a palette (np.asarray of a P image holds indices) and
EXIF orientation; and a JPEG path is decoded at a reduced scale when much larger than the run's size (PIL's draft),
an image in memory at full size. torch is imported inside functions; pandas is never imported (a DataFrame is
one only when pandas is already loaded).
"""

from __future__ import annotations

import os

import numpy as np

from dlcli.errors import BAD_INPUT, DataError, DlcliError

IMAGE_TYPES = "file paths (str or pathlib.Path), PIL images, NumPy arrays or torch tensors"
TABLE_TYPES = "a pandas DataFrame, a pyarrow Table, a list of dicts (one per row) or CSV/Parquet file paths"
TEXT_TYPES = "strings (a text, or a list of texts)"
CHANNEL_SIZES = (1, 2, 3, 4)  # a last axis of this size holds channels (L, LA, RGB, RGBA)


def _kind(obj) -> str | None:
    """'path', 'pil', 'array', 'tensor', 'frame', 'arrow', 'dict' or None, without importing what is not loaded."""
    import sys

    if isinstance(obj, (str, os.PathLike)):
        return "path"
    if isinstance(obj, np.ndarray):
        return "array"
    if isinstance(obj, dict):
        return "dict"
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(obj, pil.Image):
        return "pil"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return "tensor"
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(obj, pandas.DataFrame):
        return "frame"
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(obj, (pa.Table, pa.RecordBatch)):
        return "arrow"
    return None


def _what(obj) -> str:
    """'an int', 'a numpy.ndarray': the type of something that is not accepted."""
    t = type(obj)
    name = t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _listed(items) -> tuple[list, bool]:
    """(the inputs as a list, whether the user passed a list or tuple of them)."""
    if isinstance(items, (list, tuple)):
        return list(items), True
    return [items], False


# ---------------------------------------------------------------- images


def image_inputs(items, input_shape, invert: bool = False, warn=None, sizes: list | None = None):
    """Images -> (uint8 tensor (N, C, H, W) in the run's input format, a name per image, [(name, reason)] for inputs
    that could not be read). A path or PIL image that fails is reported and the others go on; an object of another
    type, or an array of a shape or scale that is not pixels, is a DlcliError. warn(message): a decompression-bomb
    warning for a file. `sizes`: a list that receives each image's own (height, width), in the order of the names."""
    import torch

    from dlcli.data.images import ImageError, image_files, image_tensor, load_image

    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"this run takes inputs of shape {shape}, not images: images are read as grayscale "
                         f"(1, H, W) or RGB (3, H, W)", BAD_INPUT)
    listed, many = _listed(items)
    blocks, names, problems = [], [], []
    for i, item in enumerate(listed):
        kind, at = _kind(item), f"[{i}]" if many else ""
        if kind == "path":
            files, missing = image_files([item])
            problems += missing
            for path in files:
                try:
                    blocks.append(load_image(path, shape, invert, warn=warn, sizes=sizes)[None])
                    names.append(path)
                except ImageError as err:
                    problems.append((path, str(err)))
        elif kind == "pil":
            name = f"image[{i}]"
            try:
                blocks.append(image_tensor(item, shape, invert, sizes=sizes)[None])
                names.append(name)
            except ImageError as err:
                problems.append((name, str(err)))
        elif kind in ("array", "tensor"):
            label = f"{kind}{at}"
            batch, single = _pixels(item, kind, label, shape[0])
            if sizes is not None:
                sizes += [(int(batch.shape[1]), int(batch.shape[2]))] * len(batch)  # (N, H, W[, C])
            if single:
                name = label if many else f"{kind}[0]"
                blocks.append(_array_tensor(batch[0], shape, invert, name)[None])
                names.append(name)
                continue
            names += [f"{label}[{k}]" for k in range(len(batch))]
            fast = _as_is(batch, shape, invert)
            blocks += [fast] if fast is not None else \
                [_array_tensor(image, shape, invert, f"{label}[{k}]")[None] for k, image in enumerate(batch)]
        else:
            raise DataError(f"input{at}: {_what(item)} is not an image; a run trained on images takes {IMAGE_TYPES}",
                             BAD_INPUT)
    if not names and not problems:
        raise DataError(f"no images given: pass {IMAGE_TYPES}", BAD_INPUT)
    if not blocks:
        return torch.empty((0, *shape), dtype=torch.uint8), names, problems
    return (torch.cat(blocks) if len(blocks) > 1 else blocks[0]), names, problems


def _pixels(obj, kind: str, name: str, channels: int) -> tuple[np.ndarray, bool]:
    """An array or tensor as (a batch of images (N, H, W) or (N, H, W, C) in uint8, uint16, int32 or bool, as PIL
    gives a file's pixels; whether it was one image)."""
    if kind == "tensor":
        import torch

        t = obj.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        try:
            obj = t.numpy()
        except (TypeError, RuntimeError) as err:
            raise DataError(f"{name}: a {t.dtype} tensor is not pixels ({err}); pass torch.uint8 values 0-255",
                             BAD_INPUT) from None
    batch, single = _layout(obj, name, channels)
    return _depth(batch, name, kind), single


def _layout(arr: np.ndarray, name: str, channels: int) -> tuple[np.ndarray, bool]:
    """(the images as (N, H, W) or (N, H, W, C), whether arr was one image); see the module's table of shapes."""
    s = arr.shape
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 3:
        if s[-1] in CHANNEL_SIZES:  # (H, W, C)
            return arr[None], True
        if s[0] == 3 == channels:  # (C, H, W) for an RGB run
            return arr.transpose(1, 2, 0)[None], True
        return arr, False  # (N, H, W)
    if arr.ndim == 4:
        if s[-1] in CHANNEL_SIZES:  # (N, H, W, C)
            return arr, False
        if s[1] in (1, 3, 4):  # (N, C, H, W)
            return arr.transpose(0, 2, 3, 1), False
        raise DataError(f"{name}: cannot tell the channel axis of shape {tuple(s)}; pass (N, H, W, C) or "
                         f"(N, C, H, W) with C 1, 3 or 4", BAD_INPUT)
    raise DataError(f"{name}: shape {tuple(s)} is not an image or a batch of images; pass (H, W), (H, W, C), "
                     f"(N, H, W), (N, H, W, C) or (N, C, H, W)", BAD_INPUT)


def _depth(arr: np.ndarray, name: str, kind: str) -> np.ndarray:
    """uint8, uint16 (a 16-bit image) and bool (a 1-bit image) as they are; other integers as uint8 when they all fit
    0-255, else as int32 (PIL's mode I, scaled like a 32-bit file); floats only when whole numbers in 0-255."""
    if arr.dtype in (np.uint8, np.uint16, np.bool_) or arr.size == 0:
        return arr
    if arr.dtype.kind == "f":
        finite = bool(np.isfinite(arr).all())
        lo, hi = (float(arr.min()), float(arr.max())) if finite else (0.0, 0.0)
        whole = finite and bool(np.array_equal(arr, np.round(arr)))
        if whole and 0 <= lo and 1 < hi <= 255:
            return arr.astype(np.uint8)
        seen = "values that are not finite" if not finite else f"values {lo:.4g} to {hi:.4g}" + \
            ("" if whole or not (0 <= lo and hi <= 255) else ", not whole numbers")
        raise DataError(f"{name}: a {arr.dtype} {kind} with {seen}; pass uint8 pixels 0-255 (0-1 floats: "
                         f"(x * 255).round() as uint8; undo any normalisation first)", BAD_INPUT)
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"{name}: a {arr.dtype} {kind} with values {lo} to {hi}; pass uint8 pixels 0-255 "
                             f"(or uint16 for 16-bit images)", BAD_INPUT)
        return arr.astype(np.uint8 if hi <= 255 else np.int32)
    raise DataError(f"{name}: a {arr.dtype} {kind} is not pixels; pass uint8 values 0-255", BAD_INPUT)


def _array_tensor(image: np.ndarray, shape, invert: bool, name: str):
    """One image (H, W) or (H, W, C) -> the tensor of a file holding those pixels, by the same conversion."""
    from PIL import Image

    from dlcli.data.images import ImageError, image_tensor

    if 0 in image.shape:
        raise DataError(f"{name}: an empty image of shape {tuple(image.shape)}", BAD_INPUT)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.ndim == 3 and image.dtype != np.uint8:  # PIL has no 16- or 32-bit colour modes
        wide = image.astype(np.int64)
        scale = image.dtype == np.uint16 or wide.max(initial=0) > 255  # as dlcli.data.images scales grayscale ones
        image = ((wide + 128) // 257 if scale else wide).astype(np.uint8)
    try:
        return image_tensor(Image.fromarray(np.ascontiguousarray(image)), shape, invert)
    except ImageError as err:
        raise DataError(f"{name}: {err}", BAD_INPUT) from None


def _as_is(batch: np.ndarray, shape, invert: bool):
    """A uint8 batch already in the run's size and channels: the conversion would not change a pixel, so the tensor
    is made in one step (tests check it against the per-image path)."""
    import torch

    channels, height, width = shape
    if batch.dtype != np.uint8 or batch.shape[1:3] != (height, width):
        return None
    if batch.ndim == 3 and channels == 1:
        x = torch.tensor(batch).unsqueeze(1)  # a copy: the caller's array stays its own
    elif batch.ndim == 4 and batch.shape[-1] == channels:
        x = torch.tensor(batch).permute(0, 3, 1, 2).contiguous()
    else:
        return None
    return 255 - x if invert else x


# ---------------------------------------------------------------- tables


def table_inputs(items, state: dict, entry):
    """Table rows -> (float32 features (N, F) encoded with the run's stored fit, a name per row): `file:line` for a
    CSV file, a DataFrame's index label, `row N` for another table in memory, `table[i] row N` for one of a list of
    them."""
    from dlcli.data.tables import encode_rows, encode_table

    features = [*state["numeric"], *state["categories"]]
    if isinstance(items, (list, tuple)) and any(isinstance(row, dict) for row in items):
        at = next((i for i, row in enumerate(items) if not isinstance(row, dict)), None)
        if at is not None:
            raise DataError(f"input[{at}]: {_what(items[at])} among dicts; a list of rows holds one dict per row",
                             BAD_INPUT)
        return encode_table(_rows_table(items, features), state, entry)
    listed, many = _listed(items)
    if not listed:
        raise DataError(f"no rows given: pass {TABLE_TYPES}", BAD_INPUT)
    blocks, names = [], []
    for i, item in enumerate(listed):
        kind, label = _kind(item), f"table[{i}] " if many else ""
        if kind == "path":
            x, rows = encode_rows(str(item), state, entry)
        elif kind in ("frame", "arrow"):
            table = _frame_table(item, features, label) if kind == "frame" else _arrow_table(item)
            x, rows = encode_table(table, state, entry, label, _index_labels(item) if kind == "frame" else ())
        else:
            at = f"[{i}]" if many else ""
            raise DataError(f"input{at}: {_what(item)} is not a table; a run trained on a table takes {TABLE_TYPES}",
                             BAD_INPUT)
        blocks.append(x)
        names += rows
    return np.concatenate(blocks), names


def _index_labels(frame) -> tuple:
    """A DataFrame's index labels as plain Python values (numpy scalars unwrapped, a MultiIndex's tuples kept, dates
    as ISO text): what an answer's `row` holds, so answers line up with the frame."""
    def plain(v):
        if isinstance(v, tuple):
            return tuple(plain(p) for p in v)
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        if isinstance(v, np.generic):
            return v.item()
        return v.isoformat() if hasattr(v, "isoformat") else str(v)

    return tuple(plain(v) for v in frame.index)


def _arrow_table(table):
    import pyarrow as pa

    return pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table


def _frame_table(frame, features: list[str], label: str):
    """The DataFrame's columns that the run reads (by name; the others are never converted) as a pyarrow Table."""
    import pyarrow as pa

    names = [str(c) for c in frame.columns]
    columns = {}
    for c in features:
        where = [j for j, n in enumerate(names) if n == c]
        if len(where) > 1:
            raise DataError(f"{label.strip() or 'DataFrame'}: column '{c}' appears {len(where)} times (keep one)",
                             BAD_INPUT)
        if where:  # else dlcli.data.tables names the missing column
            series = frame.iloc[:, where[0]]
            try:
                columns[c] = pa.Array.from_pandas(series)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed types: as text, like a CSV's
                columns[c] = _text_column(series.tolist())
    return pa.table(columns)


def _rows_table(rows: list[dict], features: list[str]):
    """A list of dicts as a pyarrow Table of the run's columns; a key that a row lacks is a missing value there."""
    import pyarrow as pa

    columns = {}
    for c in features:
        if any(c in row for row in rows):  # else dlcli.data.tables names the missing column
            values = [row.get(c) for row in rows]
            try:
                columns[c] = pa.array(values, from_pandas=True)  # NaN is a missing value, as in pandas
            except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed types: as text, like a CSV's
                columns[c] = _text_column(values)
    return pa.table(columns)


def _text_column(values):
    """Cells of mixed types as the text a CSV file would hold; missing values (None, NaN, pandas' NA) stay missing."""
    import pyarrow as pa

    def cell(v):
        if v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType"):
            return None
        return str(v)

    return pa.array([cell(v) for v in values], pa.string())


# ---------------------------------------------------------------- numeric sequences


SEQUENCE_TYPES = ".npz, CSV or Parquet paths, NumPy arrays, torch tensors or lists of numbers"


def sequence_inputs(items, state: dict, entry):
    """Series -> (float32 (N, T, C) with the run's length and channels, a name per series). Paths are read as
    `dlcli predict` reads files. An array or tensor is one series when it is (T,) or, for a run of C > 1 channels,
    (T, C); several when (N, T) for a one-channel run or (N, T, C). A list of numbers is one series, a list of
    series several."""
    from dlcli.data.sequences import encode_series, encode_values

    listed, many = _listed(items)
    if many and listed and all(isinstance(v, (int, float)) for v in listed):
        listed, many = [list(items)], False  # one series given as a list of numbers
    channels = len(state["channels"])
    blocks, names = [], []
    for i, item in enumerate(listed):
        kind, at = _kind(item), f"[{i}]" if many else ""
        if kind == "path":
            x, found = encode_series(str(item), state, entry)
            blocks.append(x)
            names += found
            continue
        if kind == "tensor":
            item, kind = item.detach().cpu().float().numpy(), "tensor"
        elif kind is None and isinstance(item, (list, tuple)):
            item, kind = np.asarray(item, dtype=object), "list"
        if kind not in ("array", "tensor", "list"):
            raise DataError(f"input{at}: {_what(item)} is not a series; a sequence run takes {SEQUENCE_TYPES}",
                             BAD_INPUT)
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"input{at}: not numbers (a series is a list of numbers, or of [channel values] rows)",
                             BAD_INPUT) from None
        one = arr.ndim == 1 or (arr.ndim == 2 and channels > 1)
        series = [arr] if one else list(arr)
        label = f"{kind}{at}"
        names_here = [label if one else f"{label}[{k}]" for k in range(len(series))]
        blocks.append(encode_values(series, state, names_here))
        names += names_here
    if not blocks:
        raise DataError(f"no series given: pass {SEQUENCE_TYPES}", BAD_INPUT)
    return np.concatenate(blocks), names


# ---------------------------------------------------------------- texts


def text_inputs(items, cfg_data, state: dict):
    """Texts -> (int64 token ids (N, max_length) with the run's vocabulary, the texts, as names). A table
    (DataFrame, pyarrow Table, list of dicts) that holds the run's text column gives that column's texts."""
    import sys

    from dlcli.data.text import TextEncoder

    column, kind = getattr(cfg_data, "text_column", None), _kind(items)
    if kind in ("frame", "arrow") or isinstance(items, (list, tuple)) and items and \
            all(isinstance(row, dict) for row in items):
        table = _frame_table(items, [column], "") if kind == "frame" else \
            _arrow_table(items) if kind == "arrow" else _rows_table(items, [column])
        texts = _column_texts(table, column)
    else:
        pandas = sys.modules.get("pandas")
        if isinstance(items, np.ndarray) and items.ndim == 1 or pandas is not None and isinstance(items, pandas.Series):
            items = items.tolist()
        listed, many = _listed(items)
        for i, item in enumerate(listed):
            if not isinstance(item, str):
                at = f"[{i}]" if many else ""
                raise DataError(f"input{at}: {_what(item)} is not a text; a run trained on text takes {TEXT_TYPES}",
                                 BAD_INPUT)
        texts = listed
    if not texts:
        raise DataError(f"no text given: pass {TEXT_TYPES}", BAD_INPUT)
    ids = TextEncoder(cfg_data, state).ids(texts, lambda i: f"text[{i}]")
    return ids, texts


def _column_texts(table, column: str) -> list[str]:
    from dlcli.data.columns import as_strings

    if column not in table.column_names:
        raise DataError(f"input table: no column '{column}' (the run reads its texts from column '{column}')",
                         BAD_INPUT)
    return [t or "" for t in as_strings(table.column(column)).to_pylist()]
