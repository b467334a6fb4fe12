"""`dlcli data check`: one report, before any training, of what in a dataset would hurt a run.

Each finding has a severity: `error` blocks training (a run would fail, or its test score would mean nothing: a
corrupt file, an empty class, a test class unknown to train, the same sample in train and test), `warning` hurts a
run without stopping it (imbalance, near-empty classes, gaps, constant columns, duplicates inside a split), `info`
is worth knowing. The report is a plain dict (the JSON of `--json`); `render` draws it as rich tables.

Data is read with the modules training uses (dlcli.data.images, tables, columns, text), so what this reports is what a
run meets. A table's targets are read and judged by the config's task (dlcli.tasks: `survey`, `check_targets`): class
balance, a regression's range and outliers, how often each label is on. torch is imported only where a reader needs it
(image decoding, the built-in sets).
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import struct
from collections import Counter, defaultdict
from pathlib import Path

from dlcli.errors import DlcliError
from dlcli.tasks import ERROR, INFO, WARNING

SEVERITIES = (ERROR, WARNING, INFO)
PER_CHECK = 50  # findings kept per check; the rest are counted in one more line
CLASS_ROWS = 20  # render: a label with more classes shows this many (the rarest in train) and the rest's totals
CUT_SHARE = 0.1  # text_csv: a warning when more than this share of texts is cut by max_length
COVERAGE = 0.8  # text_csv: a warning when the train vocabulary covers less of the test tokens than this
CONFIG_SUFFIXES = (".yaml", ".yml")


class Report:
    """The findings and the sections (classes, images, columns, texts) of one check."""

    def __init__(self, source: str, dataset: str):
        self.source, self.dataset = source, dataset
        self.findings: list[dict] = []
        self.sections: dict = {}
        self._kept: Counter = Counter()
        self._dropped: Counter = Counter()
        self._severity: dict[str, str] = {}

    def add(self, severity: str, check: str, message: str, paths=()) -> None:
        if self._kept[check] >= PER_CHECK:
            self._dropped[check] += 1
            self._severity[check] = min(self._severity.get(check, severity), severity, key=SEVERITIES.index)
            return
        self._kept[check] += 1
        self.findings.append({"severity": severity, "check": check, "message": message,
                              "paths": [str(p) for p in paths]})

    def more(self, severity: str, check: str, n: int) -> None:
        """n more findings of a check, counted without being spelt out (found past the ones listed)."""
        if n > 0:
            self._dropped[check] += n
            self._severity[check] = min(self._severity.get(check, severity), severity, key=SEVERITIES.index)

    def to_dict(self) -> dict:
        findings = self.findings + [
            {"severity": self._severity[check], "check": check, "message": f"... and {n} more like these", "paths": []}
            for check, n in self._dropped.items()]
        findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))  # stable: each check's lines stay in order
        counts = Counter(f["severity"] for f in self.findings)
        for check, n in self._dropped.items():
            counts[self._severity[check]] += n
        return {"source": self.source, "dataset": self.dataset, "ok": not counts[ERROR],
                "errors": counts[ERROR], "warnings": counts[WARNING], **self.sections, "findings": findings}


# ---------------------------------------------------------------- what to check


def is_config(target: str) -> bool:
    """A dlcli config: a .yaml file, unless it is Ultralytics' data.yaml (a YOLO dataset, checked as one)."""
    if Path(target).suffix.lower() not in CONFIG_SUFFIXES:
        return False
    from dlcli.data.detection import looks_like_data_yaml

    return not looks_like_data_yaml(Path(target))


def entry_for_path(target: str, overrides: list[str] | None = None):
    """(dataset entry, task, notes) for a path given instead of a config: an image folder root (with train/), a
    .csv/.parquet file or a directory of part files, with the kind's default keys; `overrides` set data keys
    (label_column=y) or the task (task=regression, task.loss=huber). A table's label column, unless set, is the one
    `dlcli init` would write (and a label of numbers with many values is checked as init's task: regression); the
    notes say so."""
    from dlcli.config import apply_override
    from dlcli.data.catalog import parse_data
    from dlcli.data.detection import recognise
    from dlcli.init import masks_root
    from dlcli.data.tables import FORMATS
    from dlcli.tasks import TaskError, parse_task

    path = Path(target)
    if not path.exists():
        raise DlcliError(f"{target}: no such file or directory")
    if (found := recognise(path)) is not None:  # a detection layout: COCO, YOLO, VOC
        data = found
    elif (root := masks_root(path)) is not None:  # pictures beside index masks, as init reads them
        data = {"dataset": "masks", "root": str(root)}
    elif path.is_dir():
        parts = [f for f in path.iterdir() if f.is_file() and f.suffix.lower() in FORMATS]
        if (path / "train").is_dir():
            data = {"dataset": "image_folder", "root": str(path)}
        elif parts:
            fmt = "parquet" if all(FORMATS[f.suffix.lower()] == "parquet" for f in parts) else "csv"
            data = {"dataset": fmt, "train_file": str(path)}
        else:
            raise DlcliError(f"{target}/: neither an image folder (no train/ in it) nor a directory of .csv/.parquet "
                             f"part files")
    elif path.suffix.lower() == ".npz":  # numeric series: x, y (and lengths)
        data = {"dataset": "sequences", "train_file": str(path)}
    elif path.suffix.lower() in FORMATS:
        data = {"dataset": FORMATS[path.suffix.lower()], "train_file": str(path)}
    else:
        raise DlcliError(f"{target}: not a config (.yaml), an image folder (with train/) or a table (.csv, .parquet)")
    wrapper = {"data": data, "task": None}
    for override in overrides or []:
        spelled = override.startswith(("data.", "task=", "task."))
        apply_override(wrapper, override if spelled else f"data.{override}")
    notes = _guessed_label(wrapper, path) if "train_file" in data and "label_column" not in wrapper["data"] else []
    try:
        task = parse_task(wrapper["task"])
    except TaskError as err:
        message = str(err)
        raise DlcliError(f"task{message[1:]}" if message.startswith("@") else f"task: {message}") from None
    try:
        entry = parse_data(wrapper["data"])
    except ValueError as err:
        message = str(err)
        raise DlcliError(f"data{message[1:]}" if message.startswith("@") else f"data: {message}") from None
    if not task._spelled and task.entry_name not in entry.tasks:  # the kind's own task, as a config takes it
        task = parse_task(entry.tasks[0])
    if task.entry_name not in entry.tasks:  # as a config's validation says it
        raise DlcliError(f"task: {task.entry_name} needs targets the {entry.dataset} dataset cannot give (it gives "
                         f"{' or '.join(entry.tasks)} targets)")
    return entry, task, notes


def _guessed_label(wrapper: dict, path: Path) -> list[str]:
    """Set the label column (and, for numbers with many values, the task) as `dlcli init` chooses them for this
    table; returns what was guessed, to say so. A table init cannot read is left to the check to report."""
    from dlcli.init import guess_label

    try:
        label, why, regression = guess_label(path)
    except DlcliError:
        return []
    if label == "label" and not regression:  # the kind's default: nothing to say
        return []
    wrapper["data"]["label_column"] = label
    notes = [f"label column '{label}' guessed as `dlcli init` guesses it ({why}); --set label_column=COLUMN checks "
             f"another"]
    if regression and wrapper["task"] is None:
        wrapper["task"] = "regression"
        notes.append(f"'{label}' holds numbers with many values: checked as task: regression, as init writes it "
                     f"(--set task=classification checks them as classes)")
    return notes


def check(entry, seed: int, source: str, task=None, notes=()) -> dict:
    """The report (a JSON-ready dict) of one dataset entry; report['ok'] is False when something blocks training.
    task: the config's (dlcli.tasks), which reads and judges a table's targets; default classification, not spelled
    out (so a numeric label with many values is refused, as training refuses it). notes: info lines to lead with
    (what entry_for_path guessed)."""
    from dlcli.tasks import parse_task

    report = Report(source, entry.dataset)
    for note in notes:
        report.add(INFO, "guessed", note)
    if hasattr(entry, "survey"):  # a kind that checks itself (detection and segmentation layouts)
        entry.survey(report, seed, task)
    elif entry.dataset == "image_folder":
        _check_image_folder(entry, report)
    elif entry.dataset == "image_table":
        _check_image_table(entry, seed, task if task is not None else parse_task(None), report)
    elif entry.dataset == "sequences":  # series to classify: gaps, constant series, lengths, classes
        from dlcli.data.sequences import survey_sequences

        counts = survey_sequences(entry, task if task is not None else parse_task(None), report, seed)
        if counts:
            _check_classes(report, counts)
    elif entry.dataset == "series":  # time steps, not rows: gaps, duplicate times, short and constant series
        from dlcli.data.series import survey_series

        survey_series(entry, report)
    elif hasattr(entry, "train_file"):
        _check_table(entry, task if task is not None else parse_task(None), report)
    else:
        _check_tensors(entry, seed, report)
    return report.to_dict()


# ---------------------------------------------------------------- classes (every kind)


def _check_classes(report: Report, counts: dict[str, dict[str, int]], noun: str = "class") -> None:
    """Per-class counts of each split ({split: {class: n}}, train's classes first), as the classification task
    judges them: empty, near-empty, seen-once and unknown classes, and the imbalance of train."""
    from dlcli.tasks.classification import class_findings

    findings, report.sections["classes"] = class_findings(counts, noun)
    for finding in findings:
        report.add(*finding)


# ---------------------------------------------------------------- image folders


def _inspect_image(path: Path, shape: tuple[int, int, int]):
    """(sha1 of the bytes, (width, height), PIL mode, problem or None, warnings) of one image file."""
    from PIL import Image

    from dlcli.data.images import ImageError, load_image

    try:
        data = path.read_bytes()
    except OSError as err:
        return None, None, None, f"unreadable ({err.strerror or err})", []
    if not data:
        return None, None, None, "zero-byte file", []
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, mode = img.size, img.mode
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):  # load_image says why, as training would
        size = mode = None
    warnings: list[str] = []
    try:
        load_image(str(path), shape, warn=warnings.append)
    except ImageError as err:
        return hashlib.sha1(data).hexdigest(), size, mode, str(err), warnings
    return hashlib.sha1(data).hexdigest(), size, mode, None, warnings


def _check_image_folder(entry, report: Report) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from dlcli.data.folders import SPLITS, folder_classes
    from dlcli.data.images import IMAGE_EXTENSIONS

    root = Path(entry.root)
    if not root.is_dir():
        raise DlcliError(f"data.root: {root}/: no such directory")
    try:
        classes = folder_classes(root)
    except DlcliError as err:
        report.add(ERROR, "layout", str(err))
        return
    pil_reads = set(Image.registered_extensions())
    files: list[tuple[str, str, Path]] = []  # (split, class, path) of every image dlcli would read
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        directory = root / split
        if not directory.is_dir():
            if split != "train":
                share = entry.val_split if split == "val" else entry.test_split
                report.add(INFO, "layout", f"no {split}/ folder: {share:.0%} of train/ is held out as {split}")
            continue
        found = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        counts[split] = {}
        for name in classes + [n for n in found if n not in classes]:
            folder = directory / name
            listed = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            images = [p for p in listed if p.suffix.lower() in IMAGE_EXTENSIONS]
            for p in listed:
                if p.suffix.lower() not in IMAGE_EXTENSIONS and not p.name.startswith("."):
                    why = ("PIL reads it, dlcli's image_folder does not: convert it" if p.suffix.lower() in pil_reads
                           else "not an image extension PIL reads")
                    report.add(WARNING, "ignored-file", f"{p}: skipped ({why})", [p])
            counts[split][name] = len(images)
            files += [(split, name, p) for p in images]
        for p in sorted(directory.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                report.add(WARNING, "ignored-file", f"{p}: skipped (not inside a class folder)", [p])
    _check_classes(report, counts)

    shape = (entry.channels, *entry.size())
    import torch  # noqa: F401  (load_image's; imported once here rather than racing in the worker threads)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        inspected = list(pool.map(lambda f: _inspect_image(f[2], shape), files))

    by_hash: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
    sizes: dict[str, Counter] = defaultdict(Counter)
    modes: dict[str, Counter] = defaultdict(Counter)
    for (split, name, path), (digest, size, mode, problem, warnings) in zip(files, inspected):
        if problem == "zero-byte file":
            report.add(ERROR, "zero-byte", f"{path}: zero-byte file", [path])
        elif problem:
            report.add(ERROR, "unreadable-image", f"{path}: {problem}", [path])
        for w in warnings:
            report.add(WARNING, "huge-image", w, [path])
        if digest is not None:
            by_hash[digest].append((split, name, path))
        if size is not None:
            sizes[split][size] += 1
            modes[split][mode] += 1
    _report_image_duplicates(report, by_hash, held_out=not (root / "test").is_dir())

    section = {"decoded_as": list(shape)}
    for split, found in counts.items():
        n = sum(found.values())
        seen = sizes[split]
        by_area = sorted(seen, key=lambda s: (s[0] * s[1], s))
        section[split] = {"files": n, "min_size": list(by_area[0]) if seen else None,
                          "max_size": list(by_area[-1]) if seen else None,
                          "most_common_size": list(seen.most_common(1)[0][0]) if seen else None,
                          "modes": dict(modes[split].most_common())}
    report.sections["images"] = section
    height, width = shape[1:]
    small = sum(n for split in sizes for (w, h), n in sizes[split].items() if w < width or h < height)
    if small:
        report.add(INFO, "upscaled", f"{small} images are smaller than image_size {width}x{height} and are upscaled")
    colour = sum(n for split in modes for m, n in modes[split].items() if m not in ("L", "LA", "1", "I", "I;16", "F"))
    if shape[0] == 1 and colour:
        report.add(INFO, "grayscale", f"{colour} images have colour; channels: 1 reads them as grayscale")


def _report_image_duplicates(report: Report, by_hash: dict, held_out: bool) -> None:
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        splits = sorted({s for s, _, _ in copies}, key=("train", "val", "test").index)
        paths = [p for _, _, p in copies]
        if len(splits) > 1:
            first = {s: next(p for t, _, p in copies if t == s) for s in splits}
            n = len(copies) - len(first)
            more = f" (+{n} more {'copy' if n == 1 else 'copies'})" if n else ""
            report.add(ERROR, "leakage", f"the same image is in {' and '.join(splits)}: "
                       f"{' = '.join(str(p) for p in first.values())}{more}", paths)
            continue
        labels = sorted({c for _, c, _ in copies})
        same = " = ".join(str(p) for p in paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
        if len(labels) > 1:
            report.add(WARNING, "conflicting-duplicate", f"the same image is labelled {' and '.join(labels)} in "
                       f"{splits[0]}: {same}", paths)
        else:
            cut = " (val/test are cut from train: copies may land on both sides)" if held_out else ""
            report.add(WARNING, "duplicate", f"the same image {len(paths)} times in {splits[0]}: {same}{cut}", paths)


# ---------------------------------------------------------------- built-in and synthetic sets


def _check_tensors(entry, seed: int, report: Report) -> None:
    """mnist, fashion_mnist, kmnist, cifar, synthetic: class counts and duplicate samples by hashing their bytes."""
    import numpy as np

    raw = entry.read_raw(seed)
    splits = {"train": (raw.train_x, raw.train_y), "val": (raw.val_x, raw.val_y), "test": (raw.test_x, raw.test_y)}
    splits = {s: v for s, v in splits.items() if v[1] is not None}
    counts = {s: dict(zip(raw.classes, np.bincount(y.numpy(), minlength=len(raw.classes)).tolist()))
              for s, (_, y) in splits.items()}
    _check_classes(report, counts)
    first_seen: dict[bytes, tuple[str, int]] = {}
    duplicates = Counter()
    for split, (x, _) in splits.items():
        rows = np.ascontiguousarray(x.reshape(len(x), -1).numpy())
        for i, row in enumerate(rows):
            digest = hashlib.sha1(row.tobytes()).digest()
            seen = first_seen.setdefault(digest, (split, i))
            if seen == (split, i):
                continue
            if seen[0] != split:
                report.add(ERROR, "leakage", f"{split} sample #{i} is the same as {seen[0]} sample #{seen[1]}")
            else:
                duplicates[split] += 1
    for split, n in duplicates.items():
        report.add(WARNING, "duplicate", f"{n} samples of {split} repeat an earlier one")
    report.sections["images"] = {"decoded_as": list(raw.train_x.shape[1:]), "dtype": str(raw.train_x.dtype).replace(
        "torch.", ""), **{s: {"files": len(y)} for s, (_, y) in splits.items()}}


def _check_image_table(entry, seed: int, task, report: Report) -> None:
    """image_table: the table's rows and every listed image read as training reads them (a missing or unreadable
    file, a bad target, is the blocker training would meet); the splits' sizes and, for classes, their counts."""
    import numpy as np

    try:
        bundle = entry.read(seed, task=task)
    except DlcliError as err:
        report.add(ERROR, "unreadable", str(err))
        return
    splits = {s: split for s, split in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))
              if split is not None}
    if not bundle.train.y.dtype.is_floating_point:  # class indices (not numbers or label sets): count them
        counts = {s: dict(zip(bundle.classes, np.bincount(split.y.numpy(), minlength=len(bundle.classes)).tolist()))
                  for s, split in splits.items()}
        _check_classes(report, counts)
    report.sections["images"] = {"decoded_as": list(bundle.input_shape),
                                 **{s: {"files": len(split)} for s, split in splits.items()}}


# ---------------------------------------------------------------- tables and texts


def _where(chunks, row: int) -> str:
    """A global row index as a user finds it (file: line N)."""
    import bisect

    at = bisect.bisect_right([c.start for c in chunks], row) - 1
    return chunks[at].where(row - chunks[at].start)


def _strings(chunks, column: str):
    """A column of every chunk as one trimmed string ChunkedArray, missing markers as nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dlcli.data.columns import as_strings

    return pa.chunked_array([pc.cast(as_strings(c.table.column(column)), pa.string()) for c in chunks], pa.string())


def _row_keys(chunks, columns: list[str]):
    """One string per row: its cells' text joined (vectorised), so equal rows have equal keys."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dlcli.data.columns import as_strings

    out = []
    for c in chunks:
        cells = [pc.fill_null(pc.cast(as_strings(c.table.column(name)), pa.string()), "\x00") for name in columns]
        out.append(pc.binary_join_element_wise(*cells, "\x1f"))
    return pa.chunked_array(out, pa.string())


def _read(path: str, role: str, default_fmt: str, strings: tuple, report: Report):
    from dlcli.data.tables import TableSource

    if not Path(path).exists():
        raise DlcliError(f"data.{role}: {path}: no such file or directory")
    try:
        source = TableSource(path, default_fmt, f"data.{role}")
        chunks = source.read_all(strings)
    except DlcliError as err:
        report.add(ERROR, "unreadable-table", str(err), [path])
        return None
    if not chunks:
        report.add(ERROR, "empty-table", f"{path}: no data rows under the header", [path])
        return None
    return source, chunks


def _check_table(entry, task, report: Report) -> None:
    text_column = getattr(entry, "text_column", None)
    labels = task.label_columns(entry)
    default_fmt = "parquet" if entry.dataset == "parquet" else "csv"
    strings = tuple(labels) + ((text_column,) if text_column else ()) + \
        (tuple(entry.categorical) if not text_column and entry.categorical != "auto" else ())
    files = {"train": entry.train_file, **({"test": entry.test_file} if entry.test_file else {})}
    read = {split: _read(path, f"{split}_file", default_fmt, strings, report) for split, path in files.items()}
    if read["train"] is None:
        return
    source, chunks = read["train"]
    columns = source.columns
    missing_label = False
    for split, found in read.items():
        if found is None:
            continue
        for needed in labels + ([text_column] if text_column else []):
            if needed not in found[0].columns:
                role = "label" if needed in labels else "text"
                report.add(ERROR, f"{role}-column-missing", f"{files[split]}: no {role} column '{needed}' (columns: "
                           f"{', '.join(found[0].columns)}; set data.{role}_column)", [files[split]])
                missing_label = True
        if split == "test":
            for c in columns:
                if c not in found[0].columns:
                    report.add(ERROR, "column-missing", f"{files[split]}: no column '{c}' (the train file has it)",
                               [files[split]])
    n_rows = sum(c.table.num_rows for c in chunks)
    report.sections["rows"] = {split: sum(c.table.num_rows for c in found[1])
                               for split, found in read.items() if found is not None}
    _check_columns(entry, report, chunks, columns, n_rows, text_column, labels)

    usable = {s: f for s, f in read.items() if f is not None}
    if not missing_label:
        _check_targets(entry, task, labels, report, {split: (files[split], chunks)
                                                     for split, (_, chunks) in usable.items()})
    if not missing_label and all(c in f[0].columns for f in usable.values() for c in columns):
        keyed = [text_column, *labels] if text_column else \
            [c for c in columns if c not in getattr(entry, "drop_columns", [])]  # an id would make every row unique
        _check_duplicate_rows(report, usable, keyed, has_test="test" in files)
    if text_column and not missing_label:
        _check_texts(entry, report, usable)


def _check_targets(entry, task, labels: list[str], report: Report, read: dict) -> None:
    """The task reads every file's targets ({split: (path, chunks)}) with its survey, which reads on past a bad row,
    and says what in them would hurt a run."""
    from types import SimpleNamespace

    from dlcli.data.tables import scan_targets
    from dlcli.tasks import TargetFile

    surveying = SimpleNamespace(reader=task.survey)  # scan_targets asks its task for a reader: the survey's
    files = {}
    for split, (path, chunks) in read.items():
        try:
            targets = scan_targets(chunks, entry, surveying, labels, [], None, path)
        except DlcliError as err:  # what even the survey cannot read (no labels at all) stops training too
            report.add(ERROR, "targets", str(err), [path])
            return
        files[split] = TargetFile(path, targets, lambda row, chunks=chunks: _where(chunks, row))
    findings, sections = task.check_targets(files, entry)
    for finding in findings:
        report.add(*finding)
    report.sections.update(sections)


def _arrow_type(chunk, column: str) -> str:
    """Arrow's type of a column as the file holds it. A CSV's label (and text, and listed categorical) columns are
    read as strings, so that `007` stays a class; for those, the type Arrow infers from the cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = chunk.table.schema.field(column).type
    values = chunk.table.column(column).drop_null()
    if chunk.part.fmt != "csv" or not pa.types.is_string(found) or not len(values):
        return str(found)
    for target in (pa.int64(), pa.float64()):
        try:
            pc.cast(values, target)
            return str(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    if set(pc.unique(pc.utf8_lower(values)).to_pylist()) <= {"true", "false"}:
        return "bool"
    return str(found)


def _check_columns(entry, report: Report, chunks, columns: list[str], n_rows: int, text_column,
                   labels: list[str]) -> None:
    """Arrow's types, gaps, distinct values and each column's role (numeric / categorical) under the dataset's rules."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from dlcli.data.columns import as_numbers, missing_mask
    from dlcli.data.tables import NUMERIC_SHARE, feature_columns, id_like

    configured = getattr(entry, "categorical", "auto")
    dropped = getattr(entry, "drop_columns", [])
    if configured != "auto":
        for c in configured:
            if c not in columns or c in labels or c in dropped:
                report.add(ERROR, "unknown-column", f"data.categorical: '{c}' is not a feature column of "
                           f"{entry.train_file}")
    try:
        # data.drop_columns names columns of the table, not the label; training needs a column left to read
        if not text_column and not feature_columns(entry, columns, labels):
            report.add(ERROR, "no-features", f"{entry.train_file}: no feature columns besides the label "
                       f"({', '.join(map(repr, labels))}) and data.drop_columns: training reads nothing")
    except DlcliError as err:
        report.add(ERROR, "unknown-column", str(err))
    missing_rule = getattr(entry, "missing", "fill")
    rows = []
    for c in columns:
        types = sorted({_arrow_type(chunk, c) for chunk in chunks})
        gaps = int(sum(missing_mask(chunk.table.column(c)).sum() for chunk in chunks))
        distinct = pc.count_distinct(_strings(chunks, c), mode="only_valid").as_py()
        if c in labels:
            role = "label"
        elif c in dropped:
            role = "dropped"
        elif text_column:
            role = "text" if c == text_column else "ignored"
        elif configured != "auto":
            role = "categorical" if c in configured else "numeric"
        else:
            present = numbers = 0
            for chunk in chunks:
                values, bad, _ = as_numbers(chunk.table.column(c))
                present += int((~np.isnan(values) | bad).sum())
                numbers += int((~np.isnan(values)).sum())
            role = "numeric" if present and numbers >= NUMERIC_SHARE * present else "categorical"
        rows.append({"name": c, "arrow_type": " / ".join(types), "missing": gaps, "distinct": distinct, "role": role})
        if role == "numeric":
            _first_non_number(report, chunks, c)
        if role in ("numeric", "categorical"):
            if distinct == 0:
                report.add(WARNING, "empty-column", f"column '{c}' has no values at all: leave it out with "
                           f"data.drop_columns: [{c}]")
            elif distinct == 1:
                report.add(WARNING, "constant-column", f"column '{c}' holds one value in every row: it carries no "
                           f"information (leave it out with data.drop_columns: [{c}])")
            elif why := id_like(c, pa.chunked_array([chunk.table.column(c) for chunk in chunks]), role == "numeric"):
                report.add(WARNING, "id-column", f"column '{c}' looks like an id ({why}): it names rows rather "
                           f"than describing them, which teaches a model the rows it saw; leave it out with "
                           f"data.drop_columns: [{c}]")
            if gaps and distinct:
                what = {"fill": "filled with the training mean" if role == "numeric" else "given the 'missing' slot",
                        "drop": "those rows are dropped (data.missing: drop)",
                        "error": "data.missing: error stops training"}[missing_rule]
                report.add(ERROR if missing_rule == "error" else WARNING, "missing-values",
                           f"column '{c}': {gaps} of {n_rows} values missing ({gaps / n_rows:.1%}; {what})")
    report.sections["columns"] = rows


def _first_non_number(report: Report, chunks, column: str) -> None:
    """A numeric column with cells that are not numbers: training stops at the first one; say where."""
    import numpy as np

    from dlcli.data.columns import as_numbers

    total, first = 0, None
    for chunk in chunks:
        _, bad, text = as_numbers(chunk.table.column(column))
        hits = np.flatnonzero(bad)
        if len(hits) and first is None:
            i = int(hits[0])
            first = (chunk.where(i), text[i].as_py() if text is not None else "inf")
        total += len(hits)
    if first:
        report.add(ERROR, "not-a-number", f"{first[0]}, column '{column}': '{first[1]}' is not a number "
                   f"({_plural(total, 'such cell')} in a numeric column; fix them, or list '{column}' in "
                   f"data.categorical)")


def _check_duplicate_rows(report: Report, read: dict, columns: list[str], has_test: bool) -> None:
    """Exact duplicate rows inside train_file, and rows of test_file that are also in train_file (leakage)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    _, chunks = read["train"]
    keys = _row_keys(chunks, columns)
    tally = pc.value_counts(keys)
    repeated = tally.field("values").filter(pc.greater(tally.field("counts"), 1))
    if len(repeated):
        rows = np.flatnonzero(pc.is_in(keys, value_set=repeated).to_numpy(zero_copy_only=False))
        groups: dict[str, list[int]] = defaultdict(list)
        for i, key in zip(rows, keys.take(pa.array(rows)).to_pylist()):
            groups[key].append(int(i))
        extra = len(rows) - len(groups)
        cut = "; the test and val rows cut from it may repeat training rows" if not has_test else ""
        report.add(WARNING, "duplicate-rows", f"{extra} rows of the train file repeat an earlier row{cut}")
        for members in list(groups.values())[:PER_CHECK]:
            report.add(INFO, "duplicate-row", " = ".join(_where(chunks, i) for i in members[:3]) +
                       (f" (+{len(members) - 3} more)" if len(members) > 3 else ""))
    if "test" not in read:
        return
    _, test_chunks = read["test"]
    test_keys = _row_keys(test_chunks, columns)
    leaked = np.flatnonzero(pc.is_in(test_keys, value_set=pc.unique(keys)).to_numpy(zero_copy_only=False))
    if not len(leaked):
        return
    shown = leaked[:PER_CHECK + 1]
    leaked_keys = test_keys.take(pa.array(shown)).to_pylist()
    in_train = np.flatnonzero(pc.is_in(keys, value_set=pa.array(leaked_keys, pa.string())).to_numpy(
        zero_copy_only=False))
    first = {}
    for i, key in zip(in_train, keys.take(pa.array(in_train)).to_pylist()):
        first.setdefault(key, int(i))
    for i, key in zip(shown, leaked_keys):
        test_at, train_at = _where(test_chunks, int(i)), _where(chunks, first[key])
        report.add(ERROR, "leakage", f"{test_at} is also in the train file ({train_at})",
                   [test_at.split(": ")[0], train_at.split(": ")[0]])
    report.more(ERROR, "leakage", len(leaked) - len(shown))


def _check_texts(entry, report: Report, read: dict) -> None:
    """text_csv: lengths in tokens, texts cut by max_length, texts without tokens, and how much of the test texts'
    tokens the train vocabulary (min_freq, max_size) knows."""
    from dlcli.data.text import tokenize

    tok = entry.tokenizer
    section, tokens_of = {}, {}
    for split, (_, chunks) in read.items():
        texts = _strings(chunks, entry.text_column)
        if texts.null_count:
            report.add(ERROR, "empty-text", f"{read[split][0].parts[0].path}: {texts.null_count} rows have no text in "
                       f"column '{entry.text_column}'")
        tokens = [tokenize(t, tok.lowercase, tok.pattern) if t is not None else [] for t in texts.to_pylist()]
        empty = [i for i, t in enumerate(tokens) if not t and texts[i].as_py() is not None]
        for i in empty:
            report.add(ERROR, "no-tokens", f"{_where(chunks, i)}, column '{entry.text_column}': no tokens matching "
                       f"{tok.pattern!r}")
        lengths = [len(t) for t in tokens]
        cut = sum(n > entry.max_length for n in lengths) / len(lengths)
        section[split] = {"texts": len(lengths), "min_tokens": min(lengths),
                          "median_tokens": statistics.median(lengths), "max_tokens": max(lengths),
                          "cut_share": round(cut, 4)}
        if cut > CUT_SHARE:
            report.add(WARNING, "texts-cut", f"{cut:.0%} of the {split} texts are longer than max_length "
                       f"{entry.max_length} tokens and are cut (longest {max(lengths)})")
        tokens_of[split] = tokens
    counts = Counter(t for tokens in tokens_of["train"] for t in tokens)
    vocab = sorted((w for w, n in counts.items() if n >= entry.vocab.min_freq), key=lambda w: (-counts[w], w))
    known = set(vocab[: entry.vocab.max_size])
    section["vocabulary"] = len(known)
    if "test" in tokens_of:
        test = [t for tokens in tokens_of["test"] for t in tokens]
        covered = sum(t in known for t in test) / len(test) if test else 1.0
        distinct = set(test)
        section["test_coverage"] = round(covered, 4)
        section["test_distinct_coverage"] = round(len(distinct & known) / len(distinct), 4) if distinct else 1.0
        if covered < COVERAGE:
            report.add(WARNING, "low-coverage", f"the train vocabulary covers {covered:.0%} of the test tokens: the "
                       f"rest read as <unk>")
    report.sections["texts"] = section


# ---------------------------------------------------------------- rendering


COLOURS = {ERROR: "red", WARNING: "yellow", INFO: "cyan"}


def _size(s) -> str:
    return f"{s[0]}x{s[1]}" if s else "-"


def render(report: dict, console) -> None:
    """The report as rich tables (classes, images or columns, texts), then one line per finding and a verdict."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"data check: {report['source']} ({report['dataset']})", soft_wrap=True)
    classes = report.get("classes")
    if classes:
        counts, names = classes["counts"], classes["names"]
        shown = names if len(names) <= CLASS_ROWS else \
            sorted(names, key=lambda n: counts["train"].get(n, 0))[:CLASS_ROWS]  # the rarest: where trouble is
        table = Table(title=f"classes ({classes['unit']})" if classes.get("unit") else "classes")
        table.add_column("class")
        splits = list(counts)
        for split in splits:
            table.add_column(split, justify="right")
        for name in shown:
            table.add_row(escape(str(name)), *(f"{counts[s].get(name, 0):,}" for s in splits))
        if shown is not names:
            rest = set(names) - set(shown)
            table.add_row(f"... {len(rest):,} more", *(f"{sum(counts[s].get(n, 0) for n in rest):,}" for s in splits),
                          style="dim")
        console.print(table)
        if shown is not names:
            console.print(f"{len(names):,} classes: the {CLASS_ROWS} with the fewest training samples are shown, the "
                          f"others summed (--json lists every one)", soft_wrap=True)
        if classes["imbalance_ratio"]:
            console.print(f"imbalance {classes['imbalance_ratio']:.1f}:1 (largest / smallest training class)")
    if report.get("boxes"):
        console.print(_boxes_table(report["boxes"]))
    if report.get("targets"):
        console.print(_targets_table(report["targets"]))
    if report.get("series"):
        found = report["series"]
        console.print(f"{found['series']:,} series, {found['frequency']} (season {found['season']}), "
                      f"{found['steps']['min']:,} to {found['steps']['max']:,} steps from {found['first']} to "
                      f"{found['last']}; windows: {found['windows']['train']:,} train, {found['windows']['val']:,} "
                      f"val, {found['windows']['test']:,} test", soft_wrap=True)
        if found.get("inputs"):
            inputs = found["inputs"]
            console.print(f"inputs: past only {', '.join(inputs['past_only'])}; known ahead "
                          f"{', '.join(inputs['known_ahead']) or 'none'}", soft_wrap=True)
    if report.get("labels"):
        console.print(_labels_table(report["labels"]))
    images = report.get("images")
    if images and any("min_size" in v for v in images.values() if isinstance(v, dict)):
        table = Table(title=f"images (decoded as {'x'.join(map(str, images['decoded_as']))})")
        for col in ("split", "files", "min size", "max size", "most common", "modes"):
            table.add_column(col, justify="right" if col == "files" else "left")
        for split, v in images.items():
            if isinstance(v, dict):
                table.add_row(split, f"{v['files']:,}", _size(v["min_size"]), _size(v["max_size"]),
                              _size(v["most_common_size"]), ", ".join(f"{m} {n}" for m, n in v["modes"].items()))
        console.print(table)
    elif images:
        sizes = ", ".join(f"{s} {v['files']:,}" for s, v in images.items() if isinstance(v, dict))
        console.print(f"samples: {sizes} of shape {tuple(images['decoded_as'])} ({images['dtype']})")
    columns = report.get("columns")
    if columns:
        rows = report.get("rows", {})
        table = Table(title="columns (" + ", ".join(f"{s} {n:,} rows" for s, n in rows.items()) + ")")
        for col in ("column", "arrow type", "missing", "distinct", "role"):
            table.add_column(col, justify="right" if col in ("missing", "distinct") else "left")
        for c in columns:
            table.add_row(escape(c["name"]), c["arrow_type"], f"{c['missing']:,}", f"{c['distinct']:,}", c["role"])
        console.print(table)
    texts = report.get("texts")
    if texts:
        table = Table(title=f"texts (train vocabulary {texts['vocabulary']:,} words)")
        for col in ("split", "texts", "tokens min", "median", "max", "cut", "covered by train vocabulary"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, v in texts.items():
            if isinstance(v, dict):
                coverage = f"{texts['test_coverage']:.1%}" if split == "test" and "test_coverage" in texts else "-"
                table.add_row(split, f"{v['texts']:,}", str(v["min_tokens"]), f"{v['median_tokens']:g}",
                              str(v["max_tokens"]), f"{v['cut_share']:.1%}", coverage)
        console.print(table)
    for f in report["findings"]:
        colour = COLOURS[f["severity"]]
        console.print(f"[{colour}]{f['severity']:<7}[/{colour}] {f['check']}: {escape(f['message'])}", soft_wrap=True)
    if report["ok"]:
        note = f" ({_plural(report['warnings'], 'warning')})" if report["warnings"] else ""
        console.print(f"[green]nothing blocks training[/green]{note}")
    else:
        errors = _plural(report["errors"], "error")
        console.print(f"[red]{errors} block{'s' if report['errors'] == 1 else ''} training[/red] "
                      f"({_plural(report['warnings'], 'warning')})")


def _boxes_table(boxes: dict):
    """Detection: pictures, pictures without objects and boxes per split, and the boxes by COCO's size classes."""
    from rich.table import Table

    table = Table(title="boxes (small < 32x32 pixels of the picture, medium < 96x96, large beyond; input "
                        f"{boxes['input_size'][1]}x{boxes['input_size'][0]})")
    columns = ("pictures", "without_objects", "boxes", "most_boxes", "small", "medium", "large", "left_out")
    table.add_column("split")
    for col in columns:
        table.add_column(col.replace("_", " "), justify="right")
    for split, v in boxes.items():
        if isinstance(v, dict):
            table.add_row(split, *(f"{v[c]:,}" for c in columns))
    return table


def _targets_table(targets: dict):
    """A regression's targets: their range per file, and how many values lie far out."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="targets")
    for col in ("target", "split", "rows", "min", "median", "mean", "std", "max", "outliers"):
        table.add_column(col, justify="left" if col in ("target", "split") else "right")
    for split, per in targets["stats"].items():
        for name, v in per.items():
            table.add_row(escape(name), split, f"{v['rows']:,}", *(_figure(v[k]) for k in
                                                                   ("min", "median", "mean", "std", "max")),
                          f"{v['outliers']:,}")
    return table


def _labels_table(labels: dict):
    """A multilabel task's labels: the rows each is on in, per file, and the rows with none."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="labels: rows on")
    table.add_column("label")
    splits = list(labels["counts"])
    for split in splits:
        table.add_column(f"{split} ({labels['rows'][split]:,} rows)", justify="right")

    def cell(n, split):
        rows = labels["rows"][split]
        return f"{n:,} ({n / rows:.1%})" if rows else f"{n:,}"

    for name in labels["names"]:
        table.add_row(escape(str(name)), *(cell(labels["counts"][s].get(name, 0), s) for s in splits))
    table.add_row("(no label)", *(cell(labels["no_label"][s], s) for s in splits))
    return table


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
