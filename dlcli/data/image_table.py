"""`image_table`: a CSV or Parquet table whose `image_column` names image files and whose label columns are the
targets of any task (classes, numbers, 0/1 labels or a joined label set; dlcli.tasks reads them).

Paths are relative to the directory of the table that names them (or absolute). The table is read as the table kinds
read theirs (dlcli.data.tables: Arrow, a file or a directory of part files; the task's reader for the targets), and
rows are split as a table's rows are (stratified on the classes where the task has some). The images then go the way
of an image folder's (dlcli.data.folders, dlcli.data.stream): a FileList per split, decoded once into memory and the
decoded cache beside the table, or per batch in worker processes when they are too many for memory; so image_size,
channels, augmentations, pretrained backbones and `dlcli predict image.png` work as they do for image folders.

A missing image file is found before anything is decoded, and reported with the table's file, line (CSV) or row
(Parquet) and column; an unreadable one is named the same way when it is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlcli.data.columns import as_strings
from dlcli.data.tables import Chunk, TableSource, scan_targets
from dlcli.errors import DataError


class Listing:
    """Where each image of a table was named, found only when an error needs it (a list of references per row, no
    strings kept): `where(path)` -> `file: line N, column 'image'`."""

    def __init__(self, column: str):
        self.column = column
        self.paths: list[Path] = []  # per row of the table, in order; None for a row without one
        self.spans: list[tuple[int, object, int]] = []  # (first row, Part, its row within the part) per chunk

    def add(self, chunk: Chunk, paths: list) -> None:
        self.spans.append((len(self.paths), chunk.part, chunk.part_row))
        self.paths += paths

    def where(self, path) -> str | None:
        try:
            i = self.paths.index(path)
        except ValueError:
            return None
        start, part, part_row = next(s for s in reversed(self.spans) if s[0] <= i)
        return f"{part.where(part_row + i - start)}, column '{self.column}'"


def _list_images(chunks, column: str, drop: bool) -> tuple[Listing, np.ndarray | None, list[str]]:
    """Each row's image path, checked to exist: (the listing, rows kept or None, notes). An empty cell is an error,
    or (missing: drop) drops its row."""
    listing, keep, empty = Listing(column), [], 0
    for chunk in chunks:
        base = chunk.part.path.parent
        cells = as_strings(chunk.table.column(column)).to_pylist()
        paths, ok = [], np.ones(len(cells), dtype=bool)
        for i, cell in enumerate(cells):
            if cell is None:
                if not drop:
                    raise DataError(f"{chunk.where(i)}, column '{column}' is empty: every row needs an image "
                                     "(fill it, or set data.missing: drop to skip such rows)")
                ok[i], empty = False, empty + 1
                paths.append(None)
                continue
            path = Path(cell) if os.path.isabs(cell) else base / cell
            if not path.is_file():
                what = "is a directory, not an image file" if path.is_dir() else "no such file"
                shown = str(path) if str(path) == cell else f"{cell} (looked for {path})"
                raise DataError(f"{chunk.where(i)}, column '{column}': {what}: {shown}")
            paths.append(path)
        listing.add(chunk, paths)
        keep.append(ok)
    rows = f"{empty:,} row{'s' if empty != 1 else ''}"
    notes = [f"{chunks[0].part.path}: {rows} without an image dropped (data.missing: drop)"] if empty else []
    return listing, (np.concatenate(keep) if empty else None), notes


class _Table:
    """One table of the entry (train or test): its chunks and the task's targets, images not yet looked at."""

    def __init__(self, entry, task, path: str, role: str, names: list[str] | None = None):
        self.source = TableSource(path, "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv",
                                  role)
        targets = task.label_columns(entry)
        if entry.image_column in targets:
            raise DataError(f"data.image_column '{entry.image_column}' is also a label column")
        self.source.require([entry.image_column, *targets])
        self.chunks = self.source.read_all((entry.image_column, *targets))  # read as text, as the table kinds do
        self.targets = scan_targets(self.chunks, entry, task, targets, [], None, path, names=names)


def _read_tables(entry, task):
    from dlcli.tasks import parse_task

    task = task if task is not None else parse_task(None)
    train = _Table(entry, task, entry.table_file, "data.table_file")
    test = None
    if entry.test_file:
        test = _Table(entry, task, entry.test_file, "data.test_file", names=train.targets.names)
    return task, train, test


def describe_image_table(entry, task=None):
    """(input shape, output names, None): reads the table's targets, opens no image."""
    _, train, _ = _read_tables(entry, task)
    return (entry.channels, *entry.size()), train.targets.names, None


def _both(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return a if b is None else b if a is None else a & b


def read_image_table(entry, seed: int, task=None):
    """The DataBundle: rows split as a table's, each split's images decoded (or streamed) as an image folder's."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, image_split, train_statistics
    from dlcli.data.folders import STREAM_ABOVE_BYTES
    from dlcli.data.stream import FileList
    from dlcli.data.tables import _Rows

    task, train, test = _read_tables(entry, task)
    drop = entry.missing == "drop"
    listing, image_keep, notes = _list_images(train.chunks, entry.image_column, drop)
    names, y_all = train.targets.names, train.targets.y
    rows = _Rows(y_all, train.targets.strata, names, entry, seed, has_test=test is not None,
                 keep=_both(train.targets.keep, image_keep))
    picked = {name: np.flatnonzero(rows.split_of == s) for s, name in enumerate(("train", "val", "test"))}
    if not len(picked["train"]):
        raise DataError(f"{entry.table_file}: no training rows left (every one lacks an image or a target; "
                         "data.missing: drop)")
    lists = {name: ([listing.paths[i] for i in idx], y_all[idx], listing) for name, idx in picked.items()}
    if test is not None:
        test_listing, test_keep, test_notes = _list_images(test.chunks, entry.image_column, drop)
        kept = _both(test.targets.keep, test_keep)
        idx = np.flatnonzero(kept) if kept is not None else np.arange(len(test.targets.y))
        lists["test"] = ([test_listing.paths[i] for i in idx], test.targets.y[idx], test_listing)
        notes += list(test.targets.notes) + test_notes

    shape = (entry.channels, *entry.size())
    total = sum(len(files) for files, _, _ in lists.values()) * shape[0] * shape[1] * shape[2]
    stream = entry.stream if isinstance(entry.stream, bool) else total > STREAM_ABOVE_BYTES
    cache_dir = train.source.parts[0].path.parent / ".cache" if entry.cache and not stream else None

    known = {}  # a cached split's statistics, stored beside its pixels

    def make(name: str):
        files, y, origin = lists[name]
        return image_split(FileList(files, shape, entry.num_workers, stream, cache_dir, origin), torch.from_numpy(y),
                           known, name)

    made = {name: make(name) for name in lists}
    fit_on = made["train"]
    mean, std, image = train_statistics(fit_on, known, seed)
    target = {"type": task.entry_name, **task.fit(lists["train"][1], names)}
    return DataBundle(fit_on, made["val"] if len(made["val"]) else None, made["test"], names, shape,
                      Normalizer(mean, std, image), None, None, [*train.targets.notes, *notes, *rows.notes], target)
