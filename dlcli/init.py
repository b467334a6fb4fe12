"""`dlcli init` and `dlcli schema`: a starter config written from the user's data, and the config's JSON Schema.

`init` looks at an image folder, a table or a text table just enough to choose the settings a first run needs (the
dataset kind, channels and image size, the label and text columns, a model and a schedule sized to the data), then
writes a YAML file with a comment on every key, validated before it is written, that trains without edits. It reads
a sample (image headers, the first block of a table) and counts a CSV's lines, never decoding the whole data set.

`schema` is the config's JSON Schema for editors (the yaml-language-server modeline in configs/): pydantic's schema of
`Config`, with the registries (dataset kinds, optimizers, schedulers, layers, augmentations) spelt out as the YAML
writes them. Neither imports torch.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import RUNTIME, DlcliError

LABEL_NAMES = ("label", "target", "class", "y", "category")  # label column candidates, by priority (any case)
TEXT_MIN_WORDS = 4  # a string column whose values average this many words holds texts, not categories
FEW_VALUES = 50  # a column with at most this many distinct values in the sample could be a label
IMAGE_SAMPLE = 200  # image headers read to choose channels and size
MAX_IMAGE_SIZE = 64  # a small CNN's input: larger images are shrunk to this
GRAY_BANDS = {"1", "L", "I", "F"}  # PIL bands of grayscale modes (L, LA, I, I;16, F, 1), alpha aside
AUTO_EPOCHS = "auto: about 3,000 steps, stopping early"
SMALL_TABLE = 2_000  # fewer rows than this: init's table config cross-validates and bags the folds (#31 item 1)  # train.epochs: auto, the alternative named in comments


# ---------------------------------------------------------------- a config with a comment per key


@dataclass
class Key:
    """One YAML key: a value written in flow style, or a block section of Keys, and the comment that explains it."""

    name: str
    value: Any
    comment: str = ""


def _is_section(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(k, Key) for k in value)


def _plain(keys: list[Key]) -> dict:
    return {k.name: _plain(k.value) if _is_section(k.value) else k.value for k in keys}


def _flow(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()  # a lone scalar ends the document explicitly


def render(header: list[str], keys: list[Key]) -> str:
    """The YAML text: header comment lines, then every key with its comment aligned beside it."""
    rows: list[tuple[str, str]] = []

    def walk(section: list[Key], depth: int):
        for k in section:
            pad = "  " * depth
            if _is_section(k.value):
                rows.append((f"{pad}{k.name}:", k.comment))
                walk(k.value, depth + 1)
            else:
                rows.append((f"{pad}{k.name}: {_flow(k.value)}", k.comment))

    walk(keys, 0)
    column = min(max(len(text) for text, _ in rows) + 2, 36)
    lines = [f"# {line}" for text in header for line in textwrap.wrap(text, 116)]
    lines += [f"{text.ljust(column - 1)} # {comment}" if comment else text for text, comment in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- what a look at the data proposes


@dataclass
class Proposal:
    name: str  # the config's name (and the default file name)
    what: str  # one line about the data found
    header: list[str]
    data: list[Key]
    model: list[Key]
    optimizer: list[Key]
    train: list[Key]
    warnings: list[str] = field(default_factory=list)
    task: Key | None = None  # written only where the default, classification, does not fit
    scheduler: Key = field(default_factory=lambda: Key("name", "none", "a constant lr; cosine decays it to 0 over "
                                                                      "the run"))

    def keys(self) -> list[Key]:
        return [
            Key("name", self.name, "run ids are <name>-<YYYYmmdd-HHMMSS>"),
            Key("seed", 42, "seeds weights, data order, splits and augmentation"),
            *([self.task] if self.task else []),
            Key("data", self.data, "what to train on (paths are relative to where you run dlcli)"),
            Key("model", self.model, "the network; input and output sizes come from the data"),
            Key("optimizer", self.optimizer, "how weights are updated"),
            Key("scheduler", [self.scheduler], "the learning-rate schedule"),
            Key("train", self.train, "the training loop"),
        ]


def _name_of(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.is_file() else path.resolve().name)
    return name.lstrip("._-")[:80] or "run"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}{'es' if word.endswith('s') else 's'}"


def _shown(names, limit: int = 8) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _by_size(n: int, steps: list[tuple[int, int]], last: int) -> int:
    """The value for a data set of n samples: the first (bound, value) with n < bound, else `last`."""
    return next((value for bound, value in steps if n < bound), last)


# ---------------------------------------------------------------- image folders


def _images_in(folder: Path) -> list[Path]:
    from dlcli.data.images import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> list[Path]:
    """The sub-folders that hold images directly."""
    if not folder.is_dir():
        return []
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subs if _images_in(p)]


def _image_root(path: Path) -> Path | None:
    """The image_folder root for PATH (PATH itself, or its parent when PATH is a split folder); None when PATH holds
    no class folders of images; a DlcliError when it holds them without the train/ level."""
    if (path / "train").is_dir():
        return path
    if path.name in ("train", "val", "test") and (path.parent / "train").is_dir() and _class_folders(path):
        return path.parent
    classes = _class_folders(path)
    if len(classes) >= 2:
        names = " ".join(p.name for p in classes[:4]) + (" ..." if len(classes) > 4 else "")
        raise DlcliError(f"{path}/ holds class folders ({_shown([p.name for p in classes], 4)}) directly, but "
                         f"image_folder reads ROOT/train/<class>/: move them into {path}/train/ (cd {path} && mkdir "
                         f"train && mv {names} train/) and run `dlcli init {path}` again")
    return None


def _sample(files: list[Path], n: int) -> list[Path]:
    step = max(1, len(files) // n)
    return files[::step][:n]


def _is_gray(img) -> bool:
    bands = set(img.getbands()) - {"A", "a"}
    if bands <= GRAY_BANDS:
        return True
    if bands == {"P"}:  # a palette: gray when every colour in it is
        palette = img.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def propose_images(root: Path, given: Path) -> Proposal:
    from PIL import Image

    train = root / "train"
    class_dirs = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DlcliError(f"{train}/ needs at least two class folders (e.g. {train}/cat/, {train}/dog/), "
                         f"found {len(class_dirs)}")
    files = {p.name: _images_in(p) for p in class_dirs}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DlcliError(f"class folder {train / empty[0]}/ has no images (.png, .jpg, .bmp, .webp, ...)")
    total = sum(len(found) for found in files.values())
    per_class = max(1, IMAGE_SAMPLE // len(files))
    gray, sides, squares, unreadable = True, [], set(), []
    for path in (p for found in files.values() for p in _sample(found, per_class)):
        try:
            with Image.open(path) as img:  # reads the header only
                gray = gray and _is_gray(img)
                width, height = img.size
        except Exception:  # noqa: BLE001 - any file PIL cannot open; `dlcli data check` names each one
            unreadable.append(path)
            continue
        sides.append(min(width, height))
        squares.add((width, height) if width == height else None)
    if not sides:
        raise DlcliError(f"{train}/: none of the sampled images could be read (e.g. {unreadable[0]})")
    side = int(statistics.median(sides))
    if len(squares) == 1 and None not in squares and side <= MAX_IMAGE_SIZE:
        size = side  # every image is already side x side: train on the pixels as they are (28 stays 28)
    else:
        size = max(8, min(MAX_IMAGE_SIZE, int(side / 8 + 0.5) * 8))
    channels = 1 if gray else 3
    splits = [s for s in ("val", "test") if (root / s).is_dir()]
    n_sampled = len(sides) + len(unreadable)
    conv = [32, 64] if size <= 32 else [32, 64, 128]
    epochs = _by_size(total, [(2_000, 20), (20_000, 10)], 5)
    batch = 32 if total < 20_000 else 64
    name = _name_of(root)
    colour = "grayscale" if gray else "colour"
    warnings = [(f"{len(unreadable)} of {n_sampled} sampled images could not be read (e.g. {unreadable[0]}): "
                f"`dlcli data check` lists them")] if unreadable else []
    data = [
        Key("dataset", "image_folder", "the dataset kind: ROOT/train/<class>/ images, one folder per class"),
        Key("root", root.as_posix(), "holds train/" + (f" and {'/, '.join(splits)}/" if splits else
                                                       " (optional val/ and test/ with the same classes)")),
        Key("image_size", size, f"every image is resized to {size}x{size} (sampled images: median shorter side "
                                f"{side})"),
        Key("channels", channels, f"{channels}: the sampled images are {colour}" +
            (" (3 would read them as RGB)" if gray else " (1 would read them as grayscale)")),
        Key("val_split", 0.1, "validation share cut from train/" + (" (unused: val/ exists)" if "val" in splits
                                                                  else "")),
        Key("test_split", 0.1, "test share cut from train/" + (" (unused: test/ exists)" if "test" in splits
                                                             else "")),
        Key("augment", [] if gray else ["hflip"],
            "random left-right flips while training; [] where a mirror changes the class" if not gray
            else "none; [hflip, {random_crop: 2}] suits photos (not digits or text)"),
    ]
    model = [
        Key("type", "cnn", "conv blocks (conv2d, relu, maxpool2d) then dense layers"),
        Key("channels", conv, "filters per conv block; each block halves the image"),
        Key("padding", "same", "convolutions keep the size; only the pools shrink it"),
        Key("hidden", [128], "dense layers between the conv blocks and the classifier"),
        Key("dropout", 0.2, "share of the dense units dropped while training"),
    ]
    optimizer = [Key("name", "adam", "Adam: a robust default"), Key("lr", 0.001, "learning rate")]
    train_keys = [
        Key("epochs", epochs, f"passes over the {total:,} images of train/; {AUTO_EPOCHS}"),
        Key("batch_size", batch, "images per step"),
    ]
    header = [
        (f"Starter config written by `dlcli init {given.as_posix()}`: an image folder with "
        f"{_plural(len(files), 'class')} ({_shown(files)}) and {_plural(total, 'training image')}."),
        f"{n_sampled} sampled: {colour}, median shorter side {side} pixels.",
    ]
    what = f"image_folder, {_plural(len(files), 'class')}, {_plural(total, 'image')}, {channels}x{size}x{size}"
    return Proposal(name, what, header, data, model, optimizer, train_keys, warnings)


# ---------------------------------------------------------------- tables and texts


@dataclass
class Column:
    name: str
    numeric: bool
    distinct: int
    words: float  # mean words per present value (string columns)
    id_reason: str | None = None  # why it names rows rather than describing them (dlcli.data.tables.id_like)


def _table_files(path: Path) -> tuple[Path, Path | None]:
    """(train_file, test_file or None): a file, a directory of part files, or a directory with train.* / test.*."""
    from dlcli.data.tables import FORMATS

    if path.is_dir():
        for suffix in FORMATS:
            if (path / f"train{suffix}").is_file():
                test = path / f"test{suffix}"
                return path / f"train{suffix}", test if test.is_file() else None
    return path, None


def _row_count(source) -> int:
    """Rows of a table: Parquet's metadata, or the CSV lines (about: a quoted cell may span lines)."""
    import pyarrow.parquet as pq

    rows = 0
    for part in source.parts:
        if part.fmt == "parquet":
            rows += pq.ParquetFile(part.path).metadata.num_rows
            continue
        lines, last = 0, b"\n"
        with open(part.path, "rb") as f:
            while block := f.read(1 << 24):
                lines += block.count(b"\n")
                last = block[-1:]
        rows += lines + (last != b"\n") - 1  # less the header
    return rows


def _columns(chunk) -> list[Column]:
    import numpy as np
    import pyarrow.compute as pc

    from dlcli.data.columns import as_numbers, as_strings, is_numeric_type
    from dlcli.data.tables import NUMERIC_SHARE, id_like

    out = []
    for name in chunk.table.column_names:
        column = chunk.table.column(name)
        text = as_strings(column)
        present = len(text) - text.null_count
        numeric = is_numeric_type(column.type)
        words = 0.0
        if not numeric:
            values, _, _ = as_numbers(column)
            numeric = present > 0 and int((~np.isnan(values)).sum()) >= NUMERIC_SHARE * present
        if not numeric and present:
            words = float(pc.mean(pc.count_substring_regex(text, r"\S+")).as_py())
        out.append(Column(name, numeric, len(pc.unique(text).drop_null()), words, id_like(name, column, numeric)))
    return out


def _named_label(columns: list[Column], name: str, train_file: Path) -> tuple[Column, str]:
    """The label column `dlcli init --label NAME` names."""
    found = next((c for c in columns if c.name == name), None)
    if found is None:
        raise DlcliError(f"--label {name}: {train_file} has no such column{_column_hint(name, columns)}")
    return found, "named by --label"


def _column_hint(name: str, columns: list[Column]) -> str:
    """' (did you mean 'x'?)', else the table's columns in file order: the first and last ones where there are many
    (labels are usually last)."""
    import difflib

    names = [c.name for c in columns]
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if match:
        return f" (did you mean '{match[0]}'?)"
    shown = names if len(names) <= 24 else names[:10] + [f"... {len(names) - 20:,} more ..."] + names[-10:]
    return f" (its {len(names):,} columns: {', '.join(shown)})"


def _label_list(label_name: str | None) -> list[str] | None:
    """`--label a,b,c`: several 0/1 label columns (a multilabel task); None for one column."""
    if not label_name or "," not in label_name:
        return None
    names = [n.strip() for n in label_name.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise DlcliError(f"--label {label_name}: name each label column once, separated by commas (--label a,b,c)")
    return names


def _flags(chunk, column: Column) -> bool:
    """Whether a column holds only 0/1 (true/false, yes/no): a label of a multilabel task can be."""
    import pyarrow.compute as pc

    from dlcli.data.columns import as_strings
    from dlcli.tasks.multilabel import FALSE, TRUE

    values = pc.unique(as_strings(chunk.table.column(column.name))).drop_null().to_pylist()
    return bool(values) and all(str(v).strip().lower() in TRUE | FALSE for v in values)


def _flag_columns(look: "TableLook", names: list[str], given: str) -> list[Column]:
    """The columns `--label a,b,c` names, each checked to hold 0/1."""
    by_name = {c.name: c for c in look.columns}
    found = []
    for name in names:
        if name not in by_name:
            raise DlcliError(f"--label {given}: {look.train_file} has no column '{name}'"
                             f"{_column_hint(name, look.columns)}")
        if not _flags(look.chunk, by_name[name]):
            raise DlcliError(f"--label {given}: '{name}' holds values other than 0/1; several label columns make a "
                             f"multilabel task, each 0/1, true/false or yes/no")
        found.append(by_name[name])
    return found


def _trailing_flags(look: "TableLook") -> list[str]:
    """The 0/1 columns at the end of the table, ending with the guessed label: two or more look like a set of labels
    rather than one label and inputs."""
    names = []
    for c in reversed(look.columns):
        if c.id_reason or not _flags(look.chunk, c):
            break
        names.insert(0, c.name)
    return names if len(names) >= 2 and names[-1] == look.label.name else []


def _guess_label(columns: list[Column], text: Column | None) -> tuple[Column, str]:
    """The label column and why it was chosen."""
    candidates = [c for c in columns if c is not text and not c.id_reason] or [c for c in columns if c is not text]
    by_name = {c.name.lower(): c for c in candidates}
    for wanted in LABEL_NAMES:
        if wanted in by_name:
            return by_name[wanted], f"named '{by_name[wanted].name}'"
    last = candidates[-1] is not columns[-1]
    return candidates[-1], "the last column" + (" besides the texts and ids" if last else "")


def _regression(chunk, label: Column, sample_note: str) -> Key | None:
    """`task: regression` when the label holds numbers with many values (training refuses to read those as classes:
    the same rule), with why and what the run will be judged on; None for a label that looks like classes."""
    import pyarrow.compute as pc

    from dlcli.data.columns import as_strings
    from dlcli.tasks.classification import looks_like_measurement
    from dlcli.tasks.regression import Regression

    values = pc.unique(as_strings(chunk.table.column(label.name))).drop_null().to_pylist()
    if not looks_like_measurement(values):
        return None
    others = " and ".join(m for m in Regression.metrics if m != Regression.headline)
    return Key("task", "regression", f"'{label.name}' holds numbers with {len(values):,} distinct values"
                                     f"{sample_note}, not classes: predict the number; judged on "
                                     f"{Regression.headline} (1 is perfect, 0 no better than predicting the mean), "
                                     f"{others} reported too")


@dataclass
class TableLook:
    """What init reads of a table: its files and format, the first block of rows, the columns, and the label."""

    train_file: Path
    test_file: Path | None
    fmt: str
    chunk: Any  # the first block of rows (dlcli.data.tables.Chunk)
    rows: int
    columns: list[Column]
    text: Column | None  # a column of texts (text_csv), if any
    label: Column
    why: str  # why this label column

    @property
    def sample_note(self) -> str:
        sampled = self.chunk.table.num_rows
        return "" if sampled >= self.rows else f" in the first {sampled:,} rows"


def look_at_table(path: Path, label_name: str | None = None) -> TableLook:
    """Read enough of the table at `path` to choose its label column: `label_name`, else the guess (a column named
    label, target, class, y or category, else the last column that is neither texts nor an id)."""
    from dlcli.data.tables import FORMATS, TableSource

    train_file, test_file = _table_files(path)
    suffixes = [p.suffix.lower() for p in ([train_file] if train_file.is_file() else train_file.iterdir())]
    fmt = "parquet" if any(FORMATS.get(s) == "parquet" for s in suffixes) and \
        not any(FORMATS.get(s) == "csv" for s in suffixes) else "csv"
    source = TableSource(str(train_file), fmt, "dlcli init")
    if len(source.columns) < 2:
        raise DlcliError(f"{train_file}: {len(source.columns)} column found; a table needs a header row, a label "
                         f"column and at least one more (comma-separated CSV or Parquet)")
    chunk = next(iter(source.stream(None, ())), None)
    if chunk is None or not chunk.table.num_rows:
        raise DlcliError(f"{train_file}: no data rows under the header")
    columns = _columns(chunk)
    texts = [c for c in columns if not c.numeric and c.words >= TEXT_MIN_WORDS and c.name != label_name]
    text = max(texts, key=lambda c: c.words) if texts else None
    label, why = _named_label(columns, label_name, train_file) if label_name else _guess_label(columns, text)
    return TableLook(train_file, test_file, fmt, chunk, _row_count(source), columns, text, label, why)


def guess_label(path: Path) -> tuple[str, str, bool]:
    """(the label column init would write for the table at `path`, why, whether init would predict it as a number
    with task: regression): `dlcli data check TABLE` reads a bare table the way init would configure it."""
    look = look_at_table(path)
    return look.label.name, look.why, _regression(look.chunk, look.label, look.sample_note) is not None


def _time_column(look: TableLook) -> Column | None:
    """The column of dates or timestamps (Arrow's date/timestamp types, or ISO 8601 text such as 2024-01-31) of a
    table that also holds a numeric column; None for any other table."""
    import warnings

    import numpy as np
    import pyarrow as pa

    from dlcli.data.columns import as_strings

    if not any(c.numeric for c in look.columns):
        return None
    for c in look.columns:
        column = look.chunk.table.column(c.name)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            return c
        if c.numeric and look.label is not c and look.label.numeric and _years(column):  # a number to forecast
            return c
        if c.numeric or c.distinct < 3:
            continue
        sample = [v for v in as_strings(column).to_pylist()[:200] if v is not None]
        if not sample or not all("-" in v for v in sample):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                np.array(sample, dtype="datetime64[s]")
            except ValueError:
                continue
        return c
    return None


YEARS = (1000, 2200)  # whole numbers in this range that rise by one per row are years (not a row number)


def _years(column) -> bool:
    """A column of years: whole numbers in YEARS, every year between the first and the last present, and rows that
    rise by at most one (by one in one series; 0 where several series share a year, back where the next starts)."""
    import numpy as np

    from dlcli.data.columns import as_numbers

    values, _, _ = as_numbers(column)
    if len(values) < 3 or np.isnan(values).any() or not np.array_equal(values, np.round(values)):
        return False
    if values.min() < YEARS[0] or values.max() > YEARS[1]:
        return False
    distinct, steps = np.unique(values), np.diff(values)
    return len(distinct) >= 3 and bool(np.all(np.diff(distinct) == 1) and np.all(steps <= 1) and (steps == 1).any())


def propose_series(look: TableLook, given: Path, time: Column, label_name: str | None) -> Proposal:
    """A `series` config: the numeric label to forecast, a column of few names as id_column (many series), the
    frequency read from the times, horizon one season and lookback three (less where the series are short)."""
    import numpy as np

    from dlcli.data.series import infer_frequency, parse_times

    numeric = [c for c in look.columns if c.numeric and c is not time and not c.id_reason]
    label = look.label if label_name or (look.label.numeric and look.label is not time) else \
        (numeric[-1] if numeric else None)
    if label is None or not label.numeric:
        raise DlcliError(f"--label {label_name}: a series to forecast holds numbers; '{label_name}' does not")
    rows = look.chunk.table.num_rows
    ids = [c for c in look.columns if not c.numeric and c is not time and c is not label and 2 <= c.distinct
           <= max(2, rows // 10)]
    group = ids[0] if ids else None
    times, _ = parse_times(look.chunk.table.column(time.name), lambda i: look.chunk.where(i))
    numeric_time = times.dtype.kind != "M"
    if numeric_time:  # years: as the series reader reads a CSV's year cells (ISO 8601 text: 1700 is a year)
        times = np.array([str(int(v)) for v in times], dtype="datetime64[s]")
    names = (np.array(look.chunk.table.column(group.name).to_pylist(), dtype=object).astype(str) if group
             else np.zeros(rows, dtype=str))
    per = [np.sort(times[names == n]) for n in np.unique(names)]
    freq = infer_frequency(per, False, None)
    shortest = min(len(t) for t in per)
    horizon = freq.season if freq.season > 1 else 10
    lookback = 3 * horizon
    warnings = []
    if shortest < lookback + 3 * horizon:  # train, validation and test windows need lookback + 3 horizons
        lookback = max(horizon, shortest - 3 * horizon)
        if shortest < lookback + 3 * horizon:
            horizon = max(1, shortest // 5)
            lookback = 2 * horizon
        warnings.append(f"the shortest series has {shortest:,} steps: horizon {horizon} and lookback {lookback} "
                        "leave it training windows; longer series forecast better")
    covariates = [c.name for c in numeric if c is not label]
    data = [
        Key("dataset", "series", "one row per time step; windows of lookback steps -> the next horizon steps"),
        Key("train_file", look.train_file.as_posix(), "the table: a file, or a directory of part files"),
        Key("time_column", time.name, "years (whole numbers): yearly, no season" if numeric_time else
            f"dates or timestamps: {freq.name} (season {freq.season})"),
        Key("label_column", label.name, "the value to forecast" + ("" if label_name else " (guessed: the last "
                                                                                            "numeric column)")),
        Key("id_column", group.name if group else None, f"{group.distinct:,} series, one model for all" if group
            else "one series; a column naming each row's series makes many"),
        Key("covariates", [], "other numeric columns read as inputs" + (f" (here: {_shown(covariates, 5)})"
                                                                        if covariates else "")),
        Key("lookback", lookback, "steps of history each forecast reads"),
        Key("horizon", horizon, "steps forecast at once; the test split is each series' last horizon"),
        Key("normalize", "window", "each window's mean off its inputs, added back to its forecast"),
        Key("val_split", 1, "validation windows per series, the horizon before the test horizon"),
    ]
    model = [
        Key("type", "sequential", "a linear map from the window to the forecast, and a small network beside it"),
        Key("layers", ["flatten", {"residual": [{"dense": {"units": 64, "activation": "relu"}},
                                                {"dense": "outputs"}]}],
            f"the last dense is the task's width, outputs: the horizon ({horizon}) x targets"),
    ]
    optimizer = [Key("name", "adam", "Adam: a robust default"), Key("lr", 0.003, "learning rate")]
    train_keys = [Key("epochs", "auto", "about 3,000 steps, stopping early when val_loss stops falling"),
                  Key("batch_size", 32, "windows per step")]
    task = Key("task", [
        Key("type", "forecast", "judged on MASE against the seasonal naive forecast (below 1 beats it); mae, rmse and "
                                "smape reported too"),
        Key("quantiles", [0.1, 0.5, 0.9], "an 80% interval around each step's forecast (0.5: the point)"),
        Key("intervals", "conformal", "from the point's errors at each step over every training and validation "
                                      "window"),
    ], "what to forecast and how it is judged")
    header = [f"Starter config written by `dlcli init {given.as_posix()}`: {len(per):,} series of "
              f"{freq.name} '{label.name}' ({_plural(rows, 'row')}), forecast {horizon} steps ahead."]
    what = f"{len(per):,} {freq.name} series in a table, forecasting '{label.name}'"
    return Proposal(_name_of(given), what, header, data, model, optimizer, train_keys, warnings, task)


def propose_table(path: Path, given: Path, label_name: str | None = None) -> Proposal:
    from dlcli.data.tables import TableSource

    several = _label_list(label_name)
    look = look_at_table(path, several[0] if several else label_name)
    labels = _flag_columns(look, several, label_name) if several else [look.label]
    if not several:
        time_column = _time_column(look)
        if time_column is not None:  # a date (or year) column and numbers: series to forecast
            return propose_series(look, given, time_column, label_name)
        layout = sequence_layout(look)
        if layout is not None:  # one series a row, or one step a row: series to classify
            return _propose_table_sequences(look, given, layout)
    train_file, test_file, fmt, chunk, rows = look.train_file, look.test_file, look.fmt, look.chunk, look.rows
    columns, text, label, why = look.columns, look.text, look.label, look.why
    sampled = chunk.table.num_rows
    if test_file is not None and not {c.name for c in labels} <= set(TableSource(str(test_file), fmt,
                                                                               "dlcli init").columns):
        test_file = None  # a test file without labels (to predict, not to score)
    few = min(FEW_VALUES, sampled / 2)  # values that repeat: classes rather than measurements or ids
    others = [c.name for c in columns if c not in labels and c is not text and c.distinct <= few and not c.id_reason]
    alternatives = f"; other columns with few values: {_shown(others, 5)}" if others and not several else ""
    sample_note = look.sample_note
    task = Key("task", "multilabel", f"{len(labels)} label columns, any number of them on per row: one sigmoid "
               f"output each; judged on micro F1") if several else _regression(chunk, label, sample_note)
    warnings = []
    flags = [] if several or label_name else _trailing_flags(look)
    if flags:
        warnings.append(f"the last {len(flags)} columns ({_shown(flags, 6)}) hold only 0/1: if they are labels of "
                        f"one row (several may be on), `dlcli init {given.as_posix()} --label {','.join(flags)}` "
                        f"trains a multilabel model; as written, '{label.name}' is the label and the others inputs")
    if task is not None:
        if why.startswith("the last column"):  # picked for its place, not its name: say how to pick another
            warnings.append(f"label column '{label.name}' is a guess ({why}), predicted as a number: name the "
                            f"column to predict with `dlcli init {given.as_posix()} --label COLUMN`")
    elif label.distinct > min(100, max(2, rows // 2)):
        warnings.append(f"label column '{label.name}' has {label.distinct:,} distinct values{sample_note}: dlcli "
                        f"classifies, so set data.label_column to the column of classes")
    elif label.distinct < 2:
        warnings.append(f"label column '{label.name}' has one value{sample_note}: set data.label_column to the "
                        f"column of classes")
    files = [
        Key("train_file", train_file.as_posix(), "the table: a file, or a directory of part files read as one"),
        Key("test_file", test_file.as_posix() if test_file else None,
            "a file with the same columns scored as the test split; null: test_split of the rows is held out"),
    ]
    what_label = "the number to predict" if task else "the classes"
    label_key = Key("label_column", label.name, f"{what_label} ({_plural(label.distinct, 'value')}{sample_note}); "
                                                f"{'' if label_name else 'guessed: '}{why}{alternatives}")
    answer = "a number: regression" if task else _plural(label.distinct, "class")
    if several:
        label_key = Key("label_column", [c.name for c in labels], "the labels, one 0/1 column each (named by "
                                                                  "--label); a row may have any number on")
        answer = f"{len(labels)} labels: multilabel"
    splits = [
        Key("val_split", 0.1, "seeded share of the rows held out for validation" +
            (" (unused while train.cv's folds validate)" if rows < SMALL_TABLE and not several else "")),
        Key("test_split", 0.1, "share of the rows held out for the test" + (" (unused: test_file is set)"
                                                                           if test_file else "")),
    ]
    name = _name_of(given)
    if text is not None:
        return _propose_text(name, given, rows, files, label_key, splits, text, chunk, columns, labels, warnings,
                             task, answer)

    ids = [c for c in columns if c not in labels and c.id_reason]
    features = [c for c in columns if c not in labels and c not in ids]
    categorical = [c for c in features if not c.numeric]
    width = sum(1 if c.numeric else c.distinct + 1 for c in features)
    hidden = [64, 32] if width <= 64 else [128, 64] if width <= 512 else [256, 128]
    data = [
        Key("dataset", fmt, "the dataset kind: a " + ("Parquet table" if fmt == "parquet"
                                                      else "CSV table with a header row")),
        *files,
        label_key,
        Key("categorical", "auto", "auto: one-hot encode the columns that are not numbers (here: "
                                   f"{_shown([c.name for c in categorical], 5) if categorical else 'none'}); "
                                   "or a list of column names"),
        Key("missing", "fill", "an empty cell: fill (the training mean, or a category of its own) | drop the row "
                               "| error"),
        *([Key("drop_columns", [c.name for c in ids], "left out: they name rows rather than describe them (" +
               "; ".join(f"{c.name}: {c.id_reason}" for c in ids[:3]) + ("; ..." if len(ids) > 3 else "") +
               "), which teaches a model the rows it saw, nothing about new ones")] if ids else []),
        *splits,
    ]
    model = [
        Key("type", "mlp", "dense layers over the standardised and one-hot encoded columns"),
        Key("hidden", hidden, f"units per hidden layer ({_plural(width, 'input')} after encoding)"),
        Key("dropout", 0.1, "share of the hidden units dropped while training"),
    ]
    optimizer = [Key("name", "adam", "Adam: a robust default"),
                 Key("lr", 0.003, "learning rate (small networks on tables take a larger one)")]
    train_keys = [
        Key("epochs", "auto", "about 3,000 steps in 10 to 300 epochs, stopping early when val_loss stops falling "
            "(on small tables it beats a fixed count: benchmarks/small_tables.py)"),
        Key("batch_size", _by_size(rows, [(10_000, 32), (100_000, 128)], 256), "rows per step"),
    ]
    if rows < SMALL_TABLE and not several:  # the measured recipe for small tables: benchmarks/small_tables_linear.py
        train_keys += [
            Key("cv", 5, f"under {SMALL_TABLE:,} rows one validation cut is a few dozen rows: five folds each "
                         "validate on a fifth of the training rows (5 trainings)"),
            Key("cv_final", "bag", "the five fold models, each at its best epoch, averaged as the final model "
                                   "(no refit): a cross-validated linear model's score or better on small tables"),
        ]
    header = [
        (f"Starter config written by `dlcli init {given.as_posix()}`: a table of {_plural(rows, 'row')} and "
        f"{_plural(len(columns), 'column')}: {_plural(len(features) - len(categorical), 'numeric feature')}, "
        f"{_plural(len(categorical), 'categorical feature')}, {_named(labels, task)}"
        f"{', ' + _plural(len(ids), 'id column') + ' dropped' if ids else ''}."),
    ]
    what = f"{fmt} table, {_plural(rows, 'row')}, {_named(labels, None)} ({answer})" + \
        (f"; dropped id-like {_shown([c.name for c in ids], 3)}" if ids else "")
    return Proposal(name, what, header, data, model, optimizer, train_keys, warnings, task)


def _named(labels: list[Column], task: Key | None) -> str:
    """label 'price' (a number), or labels 'a', 'b', 'c'."""
    if len(labels) > 1:
        return "labels " + ", ".join(f"'{c.name}'" for c in labels)
    return f"label '{labels[0].name}'" + (" (a number)" if task else "")


def _propose_text(name, given, rows, files, label_key, splits, text: Column, chunk, columns, labels, warnings,
                  task: Key | None, answer: str):
    import numpy as np
    import pyarrow.compute as pc

    from dlcli.data.catalog import Tokenizer
    from dlcli.data.columns import as_strings

    tokenizer = Tokenizer()
    values = as_strings(chunk.table.column(text.name)).drop_null()
    if tokenizer.lowercase:
        values = pc.utf8_lower(values)
    tokens = pc.count_substring_regex(values, tokenizer.pattern).to_numpy(zero_copy_only=False)
    p95 = int(np.percentile(tokens, 95)) if len(tokens) else 1
    max_length = max(16, min(256, -(-p95 // 8) * 8))
    ignored = [c.name for c in columns if c is not text and c not in labels]
    data = [
        Key("dataset", "text_csv", "the dataset kind: texts and their labels in a CSV or Parquet file"),
        *files,
        Key("text_column", text.name, f"the texts (about {text.words:.0f} words each)" +
            (f"; ignored columns: {_shown(ignored, 5)}" if ignored else "")),
        label_key,
        Key("tokenizer", [Key("lowercase", tokenizer.lowercase, "compare words regardless of case"),
                          Key("pattern", tokenizer.pattern, "a regular expression matching one token")],
            "how texts become tokens"),
        Key("vocab", [Key("min_freq", 1, "keep words seen at least this often in the training split"),
                      Key("max_size", 20000, "the most frequent words kept; the rest are <unk>")],
            "the vocabulary, built on the training split"),
        Key("max_length", max_length, f"tokens kept per text (95% of the sampled texts have at most {p95})"),
        *splits,
    ]
    model = [
        Key("type", "lstm", "an embedding, then an LSTM reads the tokens; its last state " +
            ("gives the number" if task else "is classified")),
        Key("embedding_dim", 64, "size of each token's vector"),
        Key("hidden_size", 64, "the LSTM's state size"),
        Key("bidirectional", True, "read the texts both ways"),
    ]
    optimizer = [Key("name", "adam", "Adam: a robust default"), Key("lr", 0.003, "learning rate")]
    train_keys = [
        Key("epochs", _by_size(rows, [(2_000, 15), (20_000, 8)], 4), f"passes over the {rows:,} texts; "
                                                                      f"{AUTO_EPOCHS}"),
        Key("batch_size", 32 if rows < 20_000 else 64, "texts per step"),
        Key("grad_clip", 1.0, "cap the gradient norm: keeps the LSTM's updates stable"),
    ]
    header = [(f"Starter config written by `dlcli init {given.as_posix()}`: {_plural(rows, 'text')} in column "
              f"'{text.name}', {_named(labels, task)}.")]
    what = f"text_csv, {_plural(rows, 'text')}, {_named(labels, None)} ({answer})"
    return Proposal(name, what, header, data, model, optimizer, train_keys, warnings, task)


# ---------------------------------------------------------------- numeric sequences


def _numbered(names: list[str]) -> bool:
    """Column names of steps: one prefix and a number (t0, t1, ... or 1, 2, ...)."""
    found = [re.fullmatch(r"(\D*?)_?(\d+)", n) for n in names]
    return all(found) and len({m.group(1) for m in found}) == 1


TIME_NAMES = ("t", "time", "step", "timestep", "index", "timestamp", "tick")  # a long table's step column


def sequence_layout(look: TableLook) -> tuple[str, str | None, str | None] | None:
    """(layout, id column, time column) of a table of series, or None for an ordinary table. wide: 16 or more
    numeric columns besides the label, named as steps; long: a column whose values come in one run of 3 or more rows
    each, with one label per run (its time column: one named so, increasing within each run)."""
    import numpy as np

    from dlcli.data.columns import as_numbers, as_strings

    others = [c for c in look.columns if c is not look.label]
    if len(others) >= 16 and all(c.numeric for c in others) and _numbered([c.name for c in others]):
        return "wide", None, None
    table = look.chunk.table
    labels = np.asarray(as_strings(table.column(look.label.name)).to_pylist(), dtype=object)
    for c in others:
        values = np.asarray(as_strings(table.column(c.name)).to_pylist(), dtype=object)
        new_run = np.r_[True, values[1:] != values[:-1]]
        runs = int(new_run.sum())
        if c.distinct < 2 or runs != c.distinct or len(values) < 3 * runs:
            continue
        run = np.cumsum(new_run) - 1
        if (labels != labels[np.flatnonzero(new_run)][run]).any():
            continue
        time = None
        for t in others:
            if t is not c and t.numeric and t.name.lower() in TIME_NAMES:
                steps = as_numbers(table.column(t.name))[0]
                if (np.diff(steps)[run[1:] == run[:-1]] > 0).all():
                    time = t.name
        return "long", c.name, time
    return None


SMALL_SERIES = 1000  # fewer series than this: init's sequences config keeps no validation cut


def propose_sequences(given: Path, train_file: Path, test_file: Path | None, layout: str, n: int, lengths: tuple,
                      channels: int, label: str | None, classes: int, task: Key | None, ids=(None, None)) -> Proposal:
    """A `sequences` config (the recipe of configs/sequences_fcn.yaml: resnet1d) for a .npz, a wide or a long
    table."""
    shortest, longest = lengths
    same = shortest == longest
    data = [
        Key("dataset", "sequences", "numeric series: a .npz (x, y), a wide table (a row a series) or a long one "
                                    "(a row a step)"),
        Key("train_file", train_file.as_posix(), f"{n:,} series found ({layout})"),
        Key("test_file", test_file.as_posix() if test_file else None, "null: test_split of the series is held out"),
        *([Key("label_column", label, "the target of each series")] if label else []),
        *([Key("id_column", ids[0], "names each row's series"),
           Key("time_column", ids[1], "orders each series' steps" if ids[1] else "null: the file's order")]
          if layout == "long" else []),
        Key("normalize", "channel", "per-channel mean and std of the training split; series: each series "
                                    "z-normalised on its own (UCR)"),
        Key("max_length", None, f"series have {shortest} steps" if same else
            f"series have {shortest} to {longest} steps, padded to the longest; a number cuts longer ones"),
        Key("val_split", 0 if n < SMALL_SERIES else 0.2,
            f"under {SMALL_SERIES:,} series a validation cut costs more than best.pt gains: train on them all"
            if n < SMALL_SERIES else "seeded share of the series held out for validation"),
        Key("test_split", 0.2, "share held out for the test" + (" (unused: test_file is set)" if test_file else "")),
        Key("augment", [{"window_slice": 0.9}, {"scaling": 0.1}, {"jitter": 0.03}],
            "random changes to training batches only"),
    ]
    model = [Key("type", "resnet1d", "the residual network of Wang et al. (2017) over the steps (or fcn: about half "
                                     "the time a run)")]
    optimizer = [Key("name", "adam", "Adam: a robust default"), Key("lr", 0.001, "learning rate")]
    train_keys = [Key("epochs", 200, "passes over the training series (chosen on UCR holdouts: "
                                     "benchmarks/README.md; stopping at a plateau of the training loss lost accuracy)"),
                  Key("batch_size", 16, "series per step")]
    answer = "a number" if task else _plural(classes, "class")
    steps = str(shortest) if same else f"{shortest}-{longest}"
    header = [f"Starter config written by `dlcli init {given.as_posix()}`: {n:,} series of {steps} "
              f"steps and {_plural(channels, 'channel')} ({layout}), {answer}."]
    what = f"sequences ({layout}), {n:,} series, {answer}"
    return Proposal(_name_of(given), what, header, data, model, optimizer, train_keys, [], task,
                    Key("name", "cosine", "decays the lr to 0 over the run, as the recipe was chosen with"))


def propose_npz(path: Path) -> Proposal:
    from dlcli.data.sequences import check_steps, read_npz

    found = read_npz(str(path), ["label"], "dlcli init")
    lengths = check_steps(found.x, found.names, found.lengths)
    y = found.labels.column("label").to_pylist()
    distinct = len(set(y))
    measured = all(isinstance(v, float) for v in y) and distinct > 20 and any(v != int(v) for v in y)
    task = Key("task", "regression", f"y holds {distinct:,} distinct numbers: predicted as a number") \
        if measured else None
    test = path.with_name(path.name.replace("train", "test")) if "train" in path.name else None
    return propose_sequences(path, path, test if test and test.is_file() else None, "npz", len(found.x),
                             (int(lengths.min()), int(lengths.max())), found.x.shape[2], None, distinct, task)


def _propose_table_sequences(look: TableLook, given: Path, layout) -> Proposal:
    import numpy as np

    from dlcli.data.columns import as_numbers, as_strings

    kind, ident, time = layout
    table = look.chunk.table
    task = _regression(look.chunk, look.label, look.sample_note)
    if kind == "wide":
        present = np.stack([~np.isnan(as_numbers(table.column(c.name))[0]) for c in look.columns
                            if c is not look.label], 1)
        lengths = present.shape[1] - np.argmax(present[:, ::-1], axis=1)
        n, channels = look.rows, 1
    else:
        _, lengths = np.unique(np.asarray(as_strings(table.column(ident)).to_pylist(), dtype=object),
                               return_counts=True)
        n = len(lengths) if look.rows <= table.num_rows else int(round(look.rows / lengths.mean()))
        channels = len([c for c in look.columns if c.name not in (ident, time, look.label.name)])
    return propose_sequences(given, look.train_file, look.test_file, kind, n,
                             (int(lengths.min()), int(lengths.max())), channels, look.label.name,
                             look.label.distinct, task, (ident, time))


# ---------------------------------------------------------------- pictures with boxes or masks


SPATIAL_SIZES = (64, 512)  # a detection or segmentation input side: the pictures' median, rounded to 32, within these
LAYOUT_NAMES = {"coco": "COCO instances JSON", "yolo": "YOLO labels", "voc": "Pascal VOC XML"}


def _spatial_side(files: list[Path]) -> tuple[int, int, bool, list[Path]]:
    """(the input side for these pictures, their median longer side, whether all are gray, unreadable ones): a
    multiple of 32 (a detector halves the picture five times) within SPATIAL_SIZES."""
    from PIL import Image

    sides, gray, unreadable = [], True, []
    for path in _sample(files, IMAGE_SAMPLE):
        try:
            with Image.open(path) as img:  # the header only
                gray = gray and _is_gray(img)
                sides.append(max(img.size))
        except Exception:  # noqa: BLE001 - `dlcli data check` names each one
            unreadable.append(path)
    if not sides:
        raise DlcliError(f"none of the sampled pictures could be read (e.g. {unreadable[0]})")
    median = int(statistics.median(sides))
    side = max(SPATIAL_SIZES[0], min(SPATIAL_SIZES[1], int(median / 32 + 0.5) * 32))
    return side, median, gray, unreadable


def _spatial_schedule(n: int) -> list[Key]:
    epochs = _by_size(n, [(500, 60), (2_000, 30), (10_000, 15)], 8)
    return [Key("epochs", epochs, f"passes over the {n:,} training pictures; best.pt keeps the best val_map epoch"),
            Key("batch_size", 16 if n < 500 else 32, "pictures per step")]


def propose_detection(data: dict, given: Path) -> Proposal:
    """A `task: detection` config for a COCO, YOLO or VOC layout (dlcli.data.detection.recognise): its files as
    found, an input size from the pictures, the detector preset's from-scratch body."""
    from dlcli.data.catalog import parse_data
    from dlcli.data.detection import BOX_CHECKS, problems_for

    kind = data["dataset"]
    entry = parse_data(data)
    problems = problems_for(entry, collect=True)
    listing = entry.listing(problems)
    bad_boxes = [p for p in problems.found if p[0] in BOX_CHECKS]
    if bad_boxes:  # boxes a tool left outside the picture or flat: dropped, said in the config, rather than a stop
        problems.found = [p for p in problems.found if p[0] not in BOX_CHECKS]
        data = {**data, "bad_boxes": "drop"}
    train = listing.splits["train"]
    if not train:
        raise DlcliError(f"{given}: no training pictures found")
    side, median, gray, unreadable = _spatial_side([p.path for p in train])
    boxes = sum(len(p.classes) for p in train)
    empty = sum(not len(p.classes) for p in train)
    channels = 1 if gray else 3
    warnings = [f"{len(problems.found):,} problems in the labels (the first: {problems.found[0][1]}): training stops "
                f"at the first; `dlcli data check` lists them"] if problems.found else []
    warnings += [f"{len(unreadable)} sampled pictures could not be read (e.g. {unreadable[0]})"] if unreadable else []
    found = {"coco": "train_annotations", "yolo": "data_yaml" if "data_yaml" in data else "root", "voc": "root"}[kind]
    keys = [Key("dataset", kind, f"the dataset kind: {LAYOUT_NAMES[kind]}")]
    for key, value in data.items():
        if key == "bad_boxes":
            keys.append(Key(key, value, f"{len(bad_boxes):,} boxes lie outside their pictures or have no area (the "
                                        f"first: {bad_boxes[0][1]}): they are dropped; error stops at them"))
        elif key != "dataset":
            keys.append(Key(key, value, "where the layout was found" if key == found else "found beside it"))
    has = [s for s in ("val", "test") if s in listing.splits]
    keys += [
        Key("image_size", side, f"pictures are stretched to {side}x{side} and their boxes with them (median longer "
                                f"side {median}); larger finds smaller objects, slower"),
        Key("channels", channels, f"{channels}: the sampled pictures are {'grayscale' if gray else 'colour'}"),
        Key("val_split", 0.1, "validation share cut from train" + (" (unused: the layout has val)" if "val" in has
                                                                  else "")),
        Key("test_split", 0.1, "test share cut from train" + (" (unused: the layout has test)" if "test" in has
                                                             else "")),
        Key("augment", ["hflip"], "random left-right flips, boxes flipped with the pictures; [] where a mirror "
                                  "changes the class"),
    ]
    model = [Key("type", "detector", "an FCOS-style detector: a body, a feature pyramid, one head for every level"),
             Key("backbone", "tiny", "a small body trained from scratch; resnet18, mobilenet_v3_large, ... with "
                                     "weights (`dlcli backbones`)")]
    optimizer = [Key("name", "adamw", "AdamW"), Key("lr", 0.003, "learning rate (configs/detection.yaml's)"),
                 Key("weight_decay", 0.0005, "pulls weights towards 0")]
    names = listing.classes
    header = [f"Starter config written by `dlcli init {given.as_posix()}`: {LAYOUT_NAMES[kind]} with "
              f"{_plural(len(names), 'class')} ({_shown(names)}), {_plural(len(train), 'training picture')}, "
              f"{boxes:,} box{'es' if boxes != 1 else ''}" + (f"; {empty:,} of the pictures hold no object." if empty
                                                             else ".")]
    what = f"{kind}, detection, {_plural(len(names), 'class')}, {_plural(len(train), 'picture')}, {channels}x{side}x{side}"
    task = Key("task", "detection", "boxes around objects, each with a class and a score; judged on mAP@[.5:.95]"
               + (_outlined(Path(data["train_annotations"])) if kind == "coco" else ""))
    home = listing.home.parent if listing.home.name == "annotations" else listing.home
    return Proposal(_name_of(home), what, header, keys, model, optimizer,
                    _spatial_schedule(len(train)), warnings, task, Key("name", "cosine", "decays the lr to 0 over "
                                                                                      "the run"))


def _outlined(path: Path) -> str:
    """A note for a COCO file whose objects carry outlines (polygons or RLE): they can train a segmentation."""
    from dlcli.data.detection import _load_json

    annotations = _load_json(path, "train_annotations")["annotations"]
    if not any(isinstance(a, dict) and a.get("segmentation") for a in annotations):
        return ""
    return ("; the file outlines its objects too: `task: segmentation` with model `{type: unet}` trains a mask per "
            "picture from them")


def masks_root(path: Path) -> Path | None:
    """The `masks` root for PATH: PATH with images/ and masks/ in it, or PATH being such a root's masks/."""
    if path.name == "masks" and (path.parent / "images").is_dir():
        return path.parent
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return path
    return None


def propose_masks(root: Path, given: Path) -> Proposal:
    """A `task: segmentation` config for pictures beside index masks (dlcli.data.segmentation)."""
    import numpy as np
    from PIL import Image

    from dlcli.data.segmentation import pair_files, split_folders

    splits = split_folders(root)
    pictures, masks = pair_files(*splits["train"])
    side, median, gray, unreadable = _spatial_side(pictures)
    keys = [Key("dataset", "masks", "the dataset kind: images/<split>/ beside masks/<split>/ index PNGs"),
            Key("root", root.as_posix(), "holds images/ and masks/")]
    if not (root / "classes.txt").is_file():
        top = 0
        for path in _sample(masks, IMAGE_SAMPLE):
            with Image.open(path) as img:
                values = np.unique(np.asarray(img))
            top = max([top, *(int(v) for v in values if v != 255)])
        names = ["background", *(f"class_{i}" for i in range(1, max(top, 1) + 1))]
        keys.append(Key("classes", names, f"by mask value, 0 first (sampled masks hold 0..{top}): name them"))
        warnings = [f"no {root / 'classes.txt'}: the classes are named class_1..class_{max(top, 1)}; rename them in "
                    f"data.classes"]
    else:
        names = [line.strip() for line in (root / "classes.txt").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        warnings = []
    warnings += [f"{len(unreadable)} sampled pictures could not be read (e.g. {unreadable[0]})"] if unreadable else []
    has = [s for s in ("val", "test") if s in splits]
    channels = 1 if gray else 3
    keys += [
        Key("image_size", side, f"pictures are stretched to {side}x{side}, masks with them (nearest); median longer "
                                f"side {median}"),
        Key("channels", channels, f"{channels}: the sampled pictures are {'grayscale' if gray else 'colour'}"),
        Key("val_split", 0.1, "validation share cut from train" + (" (unused: val/ exists)" if "val" in has else "")),
        Key("test_split", 0.1, "test share cut from train" + (" (unused: test/ exists)" if "test" in has else "")),
        Key("augment", ["hflip"], "random left-right flips, masks flipped with the pictures"),
    ]
    model = [Key("type", "unet", "a U-Net: halvings down, skip connections up, a class per pixel"),
             Key("width", 16, "channels at full resolution, doubling per level down"),
             Key("depth", 3 if side <= 96 else 4, f"halvings of the resolution ({side} -> "
                                                  f"{side >> (3 if side <= 96 else 4)} at the bottom)")]
    optimizer = [Key("name", "adam", "Adam"), Key("lr", 0.003, "learning rate (configs/segmentation.yaml's)")]
    header = [f"Starter config written by `dlcli init {given.as_posix()}`: pictures with index masks, "
              f"{_plural(len(names), 'class')} ({_shown(names)}), {_plural(len(pictures), 'training picture')}."]
    what = f"masks, segmentation, {_plural(len(names), 'class')}, {_plural(len(pictures), 'picture')}"
    task = Key("task", "segmentation", "a class for every pixel; judged on mIoU")
    n = len(pictures)
    schedule = [Key("epochs", _by_size(n, [(500, 30), (2_000, 10), (10_000, 6)], 3),
                    f"passes over the {n:,} training pictures; best.pt keeps the best val_miou epoch"),
                Key("batch_size", 16, "pictures per step")]
    return Proposal(_name_of(root), what, header, keys, model, optimizer, schedule, warnings, task,
                    Key("name", "cosine", "decays the lr to 0 over the run"))


def propose_spatial(path: Path, label: str | None) -> Proposal | None:
    """A detection or segmentation proposal when PATH is such a layout, else None."""
    from dlcli.data.detection import recognise

    data = recognise(path)
    root = masks_root(path) if data is None and path.is_dir() else None
    if data is None and root is None:
        return None
    if label:
        raise DlcliError(f"--label {label}: names a table's label column, but {path} holds "
                         f"{'boxes' if data else 'masks'}: their classes come with them")
    return propose_detection(data, path) if data is not None else propose_masks(root, path)


# ---------------------------------------------------------------- the command


def propose(path: Path, label: str | None = None) -> Proposal:
    """What a look at the data at `path` proposes; `label`: the table's label column (else guessed)."""
    from dlcli.data.tables import FORMATS

    if not path.exists():
        raise DlcliError(f"{path}: no such file or directory")
    if path.suffix.lower() == ".npz":
        return propose_npz(path)
    if (spatial := propose_spatial(path, label)) is not None:  # COCO, YOLO, VOC, images + masks
        return spatial
    if path.is_dir():
        root = _image_root(path)
        if root is not None:
            if label:
                raise DlcliError(f"--label {label}: names a table's label column, but {path} is an image folder "
                                 f"(its classes are the folders in train/)")
            return propose_images(root, path)
        if any(p.suffix.lower() in FORMATS for p in path.iterdir() if p.is_file()):
            return propose_table(path, path, label)
        if _images_in(path):
            raise DlcliError(f"{path}/ holds images directly: image_folder needs one folder per class, "
                             f"ROOT/train/<class>/*.png|jpg|...")
        raise DlcliError(f"{path}/: found neither image class folders ({path}/train/<class>/*.png|jpg|...) nor "
                         f".csv/.parquet files")
    return propose_table(path, path, label)


def _exists(target: Path) -> DlcliError:
    return DlcliError(f"{target} exists; not overwriting it (delete it or choose another file with -o)")


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")  # the config's `name` (it starts every run id)


def write_starter(path: str, output: str | None = None, label: str | None = None,
                  name: str | None = None) -> tuple[Path, Proposal]:
    """Write the starter config for the data at `path` to `output` (default ./<name>.yaml); never overwrites.
    label: a table's label column (else guessed); name: the config's name (else the data's file or folder name)."""
    import yaml

    from dlcli.config import validate_config

    if name is not None and not RUN_NAME.fullmatch(name):
        raise DlcliError(f"--name {name!r}: a config name starts every run id: letters, digits, '_', '.', '-', "
                         f"starting with a letter or digit, at most 80 characters")
    if output and Path(output).exists():  # say so before looking at the data
        raise _exists(Path(output))
    proposal = propose(Path(path.rstrip("/") or "/"), label)
    if name is not None:
        proposal.name = name
    target = Path(output) if output else Path(f"{proposal.name}.yaml")
    if not target.parent.is_dir():
        raise DlcliError(f"{target.parent}/: no such directory for the config")
    header = [*proposal.header, (f"Check the data with `dlcli data check {target.as_posix()}`, then "
                                f"`dlcli train {target.as_posix()}`.")]
    text = render(header, proposal.keys())
    try:  # what is written must be a config dlcli accepts as it stands: a failure here is dlcli's bug
        validate_config(yaml.safe_load(text), source=f"dlcli init's config for {path}")
    except DlcliError as err:
        raise DlcliError(f"{err} (please report this)", RUNTIME) from None
    try:
        with open(target, "x", encoding="utf-8") as f:  # exclusive: refused if the file appeared meanwhile
            f.write(text)
    except FileExistsError:
        raise _exists(target) from None
    except OSError as err:
        raise DlcliError(f"{target}: cannot write ({err.strerror or err})", RUNTIME) from None
    return target, proposal
