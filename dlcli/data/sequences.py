"""`dataset: sequences`: numeric series (one or several channels per step) classified or regressed, read from the
files people keep them in:
  - a NumPy .npz with `x` (N, T) or (N, T, C), `y` (N,) or (N, targets), and optionally `lengths` (N,);
  - a wide CSV/Parquet table: one row a series, the label column(s) and one column per step (an empty cell after a
    series' last step ends it early);
  - a long CSV/Parquet table: one row a time step, `id_column` naming its series, `time_column` (optional) ordering
    the steps, the other columns the channels; the label is the same on every row of an id.
Every format becomes the same float32 (N, T, C) block: series shorter than T end in NaN (the model builder reads
NaN padding as each series' length), longer than `max_length` are cut to their first steps. Targets are read by
the task's own reader (dlcli.tasks), as for tables, and the splits are cut by bundle.Splitter (stratified by class).

What training fitted (the length, the channels, the normalisation) is stored in data.json, and `encode_series`
reads a new file with it for predict, so a series gives the same tensor there as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dlcli.data.columns import as_numbers, as_strings
from dlcli.errors import DataError


@dataclass
class SeriesFile:
    """One file read: its series padded to its longest, and what names them."""

    x: np.ndarray  # float32 (N, T, C), NaN after each series' end
    lengths: np.ndarray  # int64 (N,)
    names: list[str]  # each series as its user finds it: `file: line 7`, `file: id 'a7'`, `file: series 3`
    labels: pa.Table | None  # one row per series, the target columns; None when the file has none
    channels: list[str]
    layout: str  # npz, wide or long


class _SeriesCells:
    """The per-series target cells as a task's reader reads a table chunk (dlcli.tasks)."""

    def __init__(self, table: pa.Table, names: list[str]):
        self.table, self.names, self.rows = table, names, table.num_rows

    def strings(self, column: str) -> pa.Array:
        return as_strings(self.table.column(column))

    def numbers(self, column: str):
        return as_numbers(self.table.column(column))

    def where(self, i: int) -> str:
        return self.names[i]


def layout_of(path: str, entry) -> str:
    if Path(path).suffix.lower() == ".npz":
        return "npz"
    if entry.layout != "auto":
        return entry.layout
    return "long" if entry.id_column else "wide"


def read_file(path: str, entry, labels: list[str] | None, role: str, channels: list[str] | None = None,
              layout: str | None = None, strict: bool = True) -> SeriesFile:
    """A file of series in any layout. labels: the target columns to read (None: predict, the file needs none);
    channels: a long table's channel columns as training found them. strict: a gap inside a series is an error
    (else `dlcli data check` counts them)."""
    layout = layout or layout_of(path, entry)
    if layout == "npz":
        found = read_npz(path, labels, role)
    elif layout == "long":
        found = _read_long(path, entry, labels, role, channels)
    else:
        found = _read_wide(path, entry, labels, role)
    if strict:
        found.lengths = check_steps(found.x, found.names, found.lengths)
    return found


# ---------------------------------------------------------------- the three layouts


def read_npz(path: str, labels: list[str] | None, role: str) -> SeriesFile:
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{role}: {p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{p}: not a readable NumPy .npz archive ({str(err)[:120]}); write one with "
                        f"np.savez(path, x=..., y=...)") from None
    if "x" not in arrays:
        raise DataError(f"{p}: no array 'x' (it holds {', '.join(sorted(arrays)) or 'nothing'}); save the series "
                        f"as x, shaped (N, T) or (N, T, C)")
    x = arrays["x"]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.dtype.kind not in "fiub" or 0 in x.shape:
        raise DataError(f"{p}: x is {x.dtype} of shape {tuple(arrays['x'].shape)}; sequences are numbers shaped "
                        f"(N, T) or (N, T, C)")
    x = x.astype(np.float32)
    n, t, c = x.shape
    names = [f"{p}: series {i}" for i in range(n)]
    if np.isinf(x).any():
        i, j, _ = np.argwhere(np.isinf(x))[0]
        raise DataError(f"{names[i]}: step {j + 1} is infinite; replace it with a number")
    lengths = None
    if "lengths" in arrays:
        lengths = arrays["lengths"]
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise DataError(f"{p}: lengths must be {n} integers (one per series), not {lengths.dtype} of shape "
                            f"{tuple(lengths.shape)}")
        bad = np.flatnonzero((lengths < 1) | (lengths > t))
        if len(bad):
            raise DataError(f"{names[bad[0]]}: length {int(lengths[bad[0]])} is outside 1..{t} (x has {t} steps)")
        lengths = lengths.astype(np.int64)
        x[np.arange(t)[None, :] >= lengths[:, None]] = np.nan
    table = None
    if labels is not None:
        if "y" not in arrays:
            raise DataError(f"{p}: no array 'y' with the targets (it holds {', '.join(sorted(arrays))}); save "
                            f"them as y, one per series")
        table = _npz_targets(arrays["y"], labels, p, n)
    return SeriesFile(x, lengths, names, table, [f"channel_{k}" for k in range(c)], "npz")


def _npz_targets(y: np.ndarray, labels: list[str], p: Path, n: int) -> pa.Table:
    """y as a table of the configured label columns: y (N,) is the one column, y (N, k) the k columns in order."""
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or len(y) != n:
        raise DataError(f"{p}: y has shape {tuple(y.shape)}, but x holds {n} series; save one target per series "
                        f"(N,) or (N, targets)")
    if y.shape[1] != len(labels):
        raise DataError(f"{p}: y holds {y.shape[1]} targets per series, but data.label_column names "
                        f"{len(labels)} ({', '.join(labels)}); name one column per target")

    def column(values):
        if values.dtype.kind in "US":
            return pa.array(values.astype(str))
        if values.dtype.kind == "O":
            return pa.array([None if v is None else str(v) for v in values])
        if values.dtype.kind in "fiub":
            return pa.array(values)
        raise DataError(f"{p}: y holds {values.dtype} values; save numbers or strings")

    return pa.table({name: column(y[:, j]) for j, name in enumerate(labels)})


def _source(path: str, role: str):
    from dlcli.data.tables import TableSource

    return TableSource(path, "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv", role)


def _whole(source, strings: tuple[str, ...]):
    """The table in memory, and where each of its rows is (`file: line 7`)."""
    chunks = source.read_all(strings)
    if not chunks:
        raise DataError(f"{source.parts[0].path}: no data rows under the header")
    table = pa.concat_tables([pa.Table.from_batches([c.table]) if isinstance(c.table, pa.RecordBatch) else c.table
                              for c in chunks]) if len(chunks) > 1 else chunks[0].table
    starts = np.asarray([c.start for c in chunks])

    def where(row: int) -> str:
        k = int(np.searchsorted(starts, row, side="right") - 1)
        return chunks[k].where(row - chunks[k].start)

    return table, where


def _numbers(table: pa.Table, column: str, where) -> np.ndarray:
    values, bad, text = as_numbers(table.column(column))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(row)}, column '{column}': '{text[row].as_py()}' is not a number (every step of a "
                        f"series is one; leave a cell empty only after a series' end)")
    return values


def _read_wide(path: str, entry, labels: list[str] | None, role: str) -> SeriesFile:
    source = _source(path, role)
    if labels is not None:
        source.require(labels)
    named = entry.id_column if entry.id_column in source.columns else None
    configured = [entry.label_column] if isinstance(entry.label_column, str) else list(entry.label_column)
    skip = set(labels or []) | set(configured) | ({named} if named else set())  # a predict file may hold labels
    steps = [c for c in source.columns if c not in skip]
    if not steps:
        raise DataError(f"{source.parts[0].path}: no step columns besides {', '.join(sorted(skip))} (a wide table "
                        f"holds one column per time step)")
    table, where = _whole(source, tuple((labels or []) + ([named] if named else [])))
    x = np.empty((table.num_rows, len(steps), 1), dtype=np.float32)
    for j, c in enumerate(steps):
        x[:, j, 0] = _numbers(table, c, where)
    if named:
        ids = as_strings(table.column(named)).to_pylist()
        names = [f"{where(i)} ({named} '{v}')" for i, v in enumerate(ids)]
    else:
        names = [where(i) for i in range(table.num_rows)]
    return SeriesFile(x, None, names, table.select(labels) if labels is not None else None, ["value"], "wide")


def _read_long(path: str, entry, labels: list[str] | None, role: str, channels: list[str] | None) -> SeriesFile:
    if not entry.id_column:
        raise DataError(f"{path}: a long table needs data.id_column, the column naming each row's series")
    source = _source(path, role)
    ident, time = entry.id_column, entry.time_column
    source.require([ident] + ([time] if time else []) + (labels or []) + (channels or []))
    if channels is None:
        configured = [entry.label_column] if isinstance(entry.label_column, str) else list(entry.label_column)
        taken = {ident, time, *(labels or []), *configured}  # a predict file may still hold its labels
        channels = [c for c in source.columns if c not in taken]
        if not channels:
            raise DataError(f"{source.parts[0].path}: no value columns besides {', '.join(sorted(map(str, taken - {None})))}")
    table, where = _whole(source, (ident, *(labels or [])))
    ids = as_strings(table.column(ident))
    if ids.null_count:
        row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where(row)}: column '{ident}' is empty (every row names its series)")
    encoded = pc.dictionary_encode(ids)  # codes in order of first appearance
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    id_names = encoded.dictionary.to_pylist()
    if time:
        stamps = table.column(time)
        if stamps.null_count:
            row = int(np.flatnonzero(stamps.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{where(row)}: column '{time}' is empty (it orders the steps of a series)")
        order = pc.sort_indices(pa.table({"id": codes, "time": stamps}),
                                sort_keys=[("id", "ascending"), ("time", "ascending")]).to_numpy()
        ordered = pc.take(stamps, pa.array(order))
        same = (codes[order][1:] == codes[order][:-1]) & \
            pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1)).to_numpy(zero_copy_only=False)
        if same.any():
            k = int(np.flatnonzero(same)[0])
            raise DataError(f"{where(int(order[k + 1]))}: id '{id_names[codes[order[k]]]}' has two rows at "
                            f"{time} {ordered[k].as_py()} (keep one row per time step)")
    else:
        order = np.argsort(codes, kind="stable")  # the file's order within each series
    sorted_codes = codes[order]
    counts = np.bincount(codes, minlength=len(id_names))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    step = np.arange(len(order)) - starts[sorted_codes]
    x = np.full((len(id_names), int(counts.max()), len(channels)), np.nan, dtype=np.float32)
    for k, c in enumerate(channels):
        x[sorted_codes, step, k] = _numbers(table, c, where)[order]
    names = [f"{source.parts[0].path}: id '{v}'" for v in id_names]
    targets = None
    if labels is not None:
        for c in labels:  # a series has one target: the same on each of its rows
            text = np.asarray(as_strings(table.column(c)).to_pylist(), dtype=object)[order]
            first = text[starts][sorted_codes]
            differs = np.flatnonzero(text != first)
            if len(differs):
                k = int(differs[0])
                raise DataError(f"{source.parts[0].path}: id '{id_names[sorted_codes[k]]}' has {c} "
                                f"'{first[k]}' and '{text[k]}' ({where(int(order[k]))}); a series has one "
                                f"label: make it the same on every row of that id")
        targets = table.take(pa.array(order[starts])).select(labels)
    return SeriesFile(x, None, names, targets, list(channels), "long")


def check_steps(x: np.ndarray, names: list[str], lengths) -> np.ndarray:
    """Each series' length (its last step holding a number); a gap before that end is an error naming it."""
    n, t, _ = x.shape
    missing = np.isnan(x)
    valid = ~missing.all(2)
    found = np.where(valid.any(1), t - np.argmax(valid[:, ::-1], axis=1), 0).astype(np.int64)
    empty = np.flatnonzero(found == 0)
    if len(empty):
        raise DataError(f"{names[empty[0]]}: the series holds no numbers")
    gaps = missing.any(2) & (np.arange(t)[None, :] < found[:, None])
    if gaps.any():
        i, j = np.argwhere(gaps)[0]
        raise DataError(f"{names[i]}: step {j + 1} of {found[i]} has no value; a series may end early (padding "
                        f"after its end) but not have gaps inside: fill them (e.g. by interpolation)")
    return found if lengths is None else np.minimum(lengths, found)


def fit_length(x: np.ndarray, lengths: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut to the first `length` steps, or pad with NaN up to them."""
    if x.shape[1] >= length:
        return np.ascontiguousarray(x[:, :length]), np.minimum(lengths, length)
    pad = np.full((x.shape[0], length - x.shape[1], x.shape[2]), np.nan, dtype=np.float32)
    return np.concatenate([x, pad], 1), lengths


# ---------------------------------------------------------------- training's bundle


def read_sequences(entry, seed: int, preprocessing: dict | None = None, task=None):
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, Split, Splitter
    from dlcli.tasks import parse_task

    task = task if task is not None else parse_task(None)
    labels = task.label_columns(entry)
    train = read_file(entry.train_file, entry, labels, "data.train_file")
    test = read_file(entry.test_file, entry, labels, "data.test_file",
                     train.channels if train.layout == "long" else None) if entry.test_file else None
    if test is not None and test.x.shape[2] != train.x.shape[2]:
        raise DataError(f"{entry.test_file}: its series have {test.x.shape[2]} channels, the train file's "
                        f"{train.x.shape[2]}")
    reader = task.reader(entry, labels)
    reader.add(_SeriesCells(train.labels, train.names))
    found = reader.finish(entry.train_file)
    classes = found.names
    test_y = None
    if test is not None:
        reader = task.reader(entry, labels)
        reader.add(_SeriesCells(test.labels, test.names))
        test_y = reader.finish(entry.test_file, names=classes).y

    stored = preprocessing if (preprocessing or {}).get("kind") == "sequences" else None
    notes = list(found.notes)
    if stored:
        length = int(stored["length"])
    else:
        longest = max(int(train.lengths.max()), int(test.lengths.max()) if test is not None else 0)
        length = min(longest, entry.max_length or longest)
        cut = int((train.lengths > length).sum()) + (int((test.lengths > length).sum()) if test is not None else 0)
        if cut:
            notes.append(f"{cut:,} series longer than data.max_length {length} keep their first {length} steps")
    x, lengths = fit_length(train.x, train.lengths, length)

    split = Splitter(torch.from_numpy(found.strata) if found.strata is not None else None, seed, entry.split,
                     classes, len(x))
    test_idx = split.cut(entry.test_split, "test").numpy() if test is None else None
    val_idx = split.cut_val(entry).numpy()  # val_split, or a cross-validation fold (train.cv)
    train_idx = split.train(entry.max_train_samples, entry.val_split).numpy()
    notes += split.notes
    pick = lambda idx: Split(torch.from_numpy(x[idx]), torch.from_numpy(found.y[idx]))  # noqa: E731
    if test is None:
        test_split, test_lengths = pick(test_idx), lengths[test_idx]
    else:
        tx, test_lengths = fit_length(test.x, test.lengths, length)
        test_split = Split(torch.from_numpy(tx), torch.from_numpy(test_y))
    train_split = pick(train_idx)
    val = pick(val_idx) if len(val_idx) else None

    channels = x.shape[2]
    if entry.normalize == "channel":
        mean, std = channel_statistics(x[train_idx])
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    normalizer = Normalizer(mean, std, image=False, series=entry.normalize == "series")
    padded = bool((lengths[np.concatenate([train_idx, val_idx])] < length).any() or (test_lengths < length).any())
    state = {"kind": "sequences", "layout": train.layout, "length": length, "channels": train.channels,
             "padded": padded, "normalize": entry.normalize}
    target = {"type": task.entry_name, **task.fit(found.y[train_idx], classes)}
    return DataBundle(train_split, val, test_split, classes, (length, channels), normalizer, state, None, notes,
                      target)


def channel_statistics(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over every step that holds a number (padding left out), in float64."""
    values = x.reshape(-1, x.shape[2]).astype(np.float64)
    mean = np.nanmean(values, 0)
    std = np.nanstd(values, 0)
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel is centred, not blown up (as dlcli.data.stats does)
    return mean.tolist(), std.tolist()


# ---------------------------------------------------------------- predict: series of a new file


def encode_series(path: str, state: dict, entry) -> tuple[np.ndarray, list[str]]:
    """(float32 (N, T, C) as the run's model takes them, a name per series) for a .npz, wide or long file, with the
    run's stored length and channels. A longer series keeps its first T steps; a shorter one is padded when the run
    trained on padded series, and refused when it did not (its model has never seen padding)."""
    channels = list(state["channels"])
    layout = layout_of(path, entry)
    if layout == "long" and entry.layout == "auto" and entry.id_column not in _source(path, "input").columns:
        layout = "wide"  # a run trained on a long table still reads one series a row
    named = layout == "long" and state.get("layout") == "long"  # else the other columns, in the file's order
    found = read_file(path, entry, None, "input", channels if named else None, layout)
    if found.x.shape[2] != len(channels):
        raise DataError(f"{path}: its series have {found.x.shape[2]} channel(s); run trained on {len(channels)} "
                        f"({', '.join(channels)})")
    length = int(state["length"])
    if not state.get("padded"):
        short = np.flatnonzero(found.lengths < length)
        if len(short):
            i = int(short[0])
            raise DataError(f"{found.names[i]}: {found.lengths[i]} steps, but the run trained on series of exactly "
                            f"{length} (it never saw a shorter one); give {length} steps")
    x, _ = fit_length(found.x, found.lengths, length)
    return x, found.names


def encode_values(items: list, state: dict, names: list[str]) -> np.ndarray:
    """Series given as values (serve's JSON, a Python list or array): each a list of numbers (one channel) or of
    [channel values] rows, or an array (T,) / (T, C) -> float32 (N, T, C) as encode_series gives for a file.
    `names` name each series in errors."""
    channels, length = len(state["channels"]), int(state["length"])
    x = np.full((len(items), max([length] + [len(s) for s in items if hasattr(s, "__len__")]), channels), np.nan,
                dtype=np.float32)
    lengths = np.zeros(len(items), dtype=np.int64)
    for i, series in enumerate(items):
        try:
            values = np.asarray(series, dtype=np.float64)  # None (JSON null, NaN) -> nan
        except (TypeError, ValueError):
            raise DataError(f"{names[i]}: not a list of numbers, nor of [{channels} channel values] rows") from None
        if values.ndim == 1 and channels == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != channels or len(values) == 0:
            raise DataError(f"{names[i]}: shape {tuple(values.shape)}; the run takes a series of steps with "
                            f"{channels} channel value(s) each ({', '.join(state['channels'])})")
        if (np.abs(values[~np.isnan(values)]) > np.finfo(np.float32).max).any():
            raise DataError(f"{names[i]}: a value is infinite or beyond float32's range")
        x[i, : len(values)] = values
    lengths = check_steps(x, names, None)
    if not state.get("padded"):
        short = np.flatnonzero(lengths < length)
        if len(short):
            i = int(short[0])
            raise DataError(f"{names[i]}: {lengths[i]} steps, but the run trained on series of exactly {length} "
                            f"(it never saw a shorter one); give {length} steps")
    return fit_length(x, lengths, length)[0]


# ---------------------------------------------------------------- dlcli data check


def survey_sequences(entry, task, report, seed: int = 0) -> dict | None:
    """`dlcli data check` on sequence files: what training would refuse (a file it cannot read, gaps inside a
    series), and what hurts a run (constant series, very unequal lengths, series cut by max_length); the report's
    `sequences` section. Returns the class counts per split ({split: {class: n}}) for a classification, else None."""
    from dlcli.tasks import ERROR, INFO, WARNING

    files = {"train": entry.train_file, **({"test": entry.test_file} if entry.test_file else {})}
    section, labels = {}, task.label_columns(entry)
    for split, path in files.items():
        try:
            found = read_file(path, entry, labels, f"data.{split}_file", strict=False)
        except DataError as err:
            report.add(ERROR, "read", str(err), [path])
            return None
        missing = np.isnan(found.x)
        valid = ~missing.all(2)
        n, t, c = found.x.shape
        ends = np.where(valid.any(1), t - np.argmax(valid[:, ::-1], axis=1), 0)
        if found.lengths is not None:
            ends = np.minimum(ends, found.lengths)
        empty = np.flatnonzero(ends == 0)
        if len(empty):
            report.add(ERROR, "empty", f"{len(empty):,} series hold no numbers (the first: {found.names[empty[0]]})",
                       [path])
        gaps = missing.any(2) & (np.arange(t)[None, :] < ends[:, None])
        gapped = np.flatnonzero(gaps.any(1))
        if len(gapped):
            i = int(gapped[0])
            report.add(ERROR, "nan", f"{len(gapped):,} series have missing values before their end ({int(gaps.sum()):,} "
                                     f"steps; the first: {found.names[i]}, step {int(np.argmax(gaps[i])) + 1}): "
                                     "training stops there; fill them (e.g. by interpolation)", [path])
        with np.errstate(invalid="ignore"):
            spread = np.nanmax(found.x, 1) - np.nanmin(found.x, 1)  # (N, C)
        constant = np.flatnonzero((spread == 0).all(1) & (ends > 0))
        if len(constant):
            shown = ", ".join(found.names[i] for i in constant[:3])
            report.add(WARNING, "constant", f"{len(constant):,} of {n:,} series are constant on every channel "
                                            f"({shown}{', ...' if len(constant) > 3 else ''}): nothing to tell them "
                                            "apart by shape", [path])
        live = ends[ends > 0]
        if len(live) and live.min() != live.max():
            report.add(INFO, "lengths", f"{path}: lengths {int(live.min())} to {int(live.max())} steps (median "
                                        f"{int(np.median(live))}): shorter series are padded after their end and "
                                        "masked by the model")
        if entry.max_length and (live > entry.max_length).any():
            report.add(INFO, "cut", f"{path}: {int((live > entry.max_length).sum()):,} series longer than "
                                    f"max_length {entry.max_length} keep their first {entry.max_length} steps")
        section[split] = {"file": str(path), "layout": found.layout, "series": n, "channels": c,
                          "min_length": int(live.min()) if len(live) else 0,
                          "max_length": int(live.max()) if len(live) else 0}
    report.sections["sequences"] = section
    if report.findings and any(f["severity"] == ERROR for f in report.findings):
        return None
    if task.entry_name != "classification":
        return None
    try:
        bundle = read_sequences(entry, seed, None, task)
    except DataError as err:
        report.add(ERROR, "read", str(err))
        return None
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    return {name: dict(zip(bundle.classes, np.bincount(split.y.numpy(), minlength=len(bundle.classes)).tolist()))
            for name, split in splits.items() if split is not None}
