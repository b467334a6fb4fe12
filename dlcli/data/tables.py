"""Your own tables through Apache Arrow: `csv` / `parquet` (feature columns and a label column) and `text_csv`.

A table is one file or a directory of part files (.csv, .parquet), read with Arrow's multithreaded readers; Arrow
infers the column types. Everything after reading is columnar (numpy over Arrow arrays), in passes over chunks of
rows:
  A. labels (and, for `missing: drop | error`, the gaps): the row count, the classes, the seeded split;
  B. fit on the training rows only: which columns are numeric, their fill values, the categories (or the vocabulary);
  C. encode every row into its split's float32 matrix.
In memory the chunks are slices of the table read once. Streamed (`stream: true`, or auto for tables too large for
memory) each pass reads the files again in record batches and pass C writes the splits to memory-mapped files in a
cache beside the data, which the engine indexes in its seeded order like any in-memory split.

The fitted preprocessing is stored in the run's data.json and restored by evaluate and predict, so a run always sees
its inputs exactly as in training.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dlcli.data.columns import MISSING, as_numbers, as_strings, is_numeric_type, missing_mask
from dlcli.data.memory import is_memory, table_for
from dlcli.errors import DataError, closest

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 1 << 18  # rows per pass step: bounds the temporaries of encoding, streamed or not
NUMERIC_SHARE = 0.9  # auto: a column whose present values are 90% numbers is numeric (the rest are errors)
ID_SHARE = 0.95  # a column with a distinct value in this share of its rows or more names rows (an id, a name)
ID_MIN_ROWS = 20  # fewer rows than this tell nothing about a column's values repeating
STREAM_SHARE = 0.5  # stream: auto streams a table whose in-memory size would exceed this share of free memory
CACHED_TABLES = 3  # streamed tables kept in a cache directory


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class Part:
    path: Path
    fmt: str  # csv or parquet

    def where(self, row: int) -> str:
        """Row `row` (0-based, data rows) as a user finds it: a CSV line (the header is line 1), a Parquet row, or a
        row of an in-memory frame."""
        if self.fmt == "memory":
            return f"data frame: row {row + 1}"
        return f"{self.path}: line {row + 2}" if self.fmt == "csv" else f"{self.path}: row {row + 1}"


@dataclass
class Chunk:
    table: pa.Table | pa.RecordBatch
    start: int  # global index of its first row
    part: Part
    part_row: int  # index of its first row within the part

    def where(self, i: int) -> str:
        return self.part.where(self.part_row + i)

    def row_name(self, i: int):
        """`file:line` (CSV), `file:row N` (Parquet), `row N` (a table given in memory), or a DataFrame's own index
        label (an int, a string, ...): how predict names a row."""
        row = self.part_row + i
        if getattr(self.part, "index", None):
            return self.part.index[row]
        if self.part.fmt == "csv":
            return f"{self.part.path}:{row + 2}"
        if self.part.fmt == "parquet":
            return f"{self.part.path}:row {row + 1}"
        return self.part.where(row)


def _explain(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "Empty CSV file" in text:
        return "empty CSV file (no header row)"
    if "magic bytes" in text or "Parquet file size is 0" in text:
        return "not a Parquet file"
    if "CSV parse error" in text:
        return f"malformed CSV ({text.removeprefix('CSV parse error: ')[:200]})"
    return text[:200]


class TableSource:
    """One table: a file, or a directory whose part files (sorted by name) are read as one."""

    def __init__(self, path: str, default_fmt: str, role: str):
        p = Path(path)
        self.role = role
        if is_memory(path):  # a frame given to dlcli.train (dlcli.data.memory)
            self.table = table_for(path, role)
            self.parts = [Part(p, "memory")]
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FORMATS
                           and not f.name.startswith((".", "_")))
            wanted = [f for f in found if FORMATS[f.suffix.lower()] == default_fmt] or found
            if not wanted:
                raise DataError(f"{role}: {p}/ holds no .csv or .parquet part files")
            self.parts = [Part(f, FORMATS[f.suffix.lower()]) for f in wanted]
        elif p.is_file():
            self.parts = [Part(p, FORMATS.get(p.suffix.lower(), default_fmt))]
        else:
            raise DataError(f"{role}: {p}: no such file or directory")
        self.columns = self._columns()

    def _schema(self, part: Part) -> pa.Schema:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            if part.fmt == "memory":
                return self.table.schema
            if part.fmt == "parquet":
                return pq.read_schema(part.path)
            with pacsv.open_csv(part.path, convert_options=_csv_options(None, ())) as reader:
                return reader.schema
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{part.path}: {_explain(err)}") from None

    def _columns(self) -> list[str]:
        first = self._schema(self.parts[0]).names
        repeated = next((c for i, c in enumerate(first) if c in first[:i]), None)
        if repeated is not None:  # Arrow reads it, but a column by name would be ambiguous
            raise DataError(f"{self.parts[0].path}: column '{repeated}' appears more than once (keep one)")
        for part in self.parts[1:]:
            other = self._schema(part).names
            if set(other) != set(first):
                missing = sorted(set(first) ^ set(other))[0]
                raise DataError(f"{part.path}: the part files disagree on column '{missing}' "
                                 f"(every part of {self.parts[0].path.parent}/ needs the same columns)")
        return first

    def require(self, columns: list[str]) -> None:
        for c in columns:
            if c not in self.columns:
                raise DataError(f"{self.parts[0].path}: no column '{c}'{closest(c, self.columns)}")

    def nbytes_estimate(self) -> int:
        """About what the table takes in memory as Arrow arrays."""
        import pyarrow.parquet as pq

        total = 0
        for part in self.parts:
            if part.fmt == "memory":
                total += self.table.nbytes
            elif part.fmt == "csv":
                total += part.path.stat().st_size
            else:
                meta = pq.ParquetFile(part.path).metadata
                total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        return total

    def read_all(self, strings: tuple[str, ...]) -> list[Chunk]:
        """The whole table in memory, as CHUNK_ROWS slices (zero-copy) of each part."""
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        chunks, start = [], 0
        for part in self.parts:
            try:
                if part.fmt == "memory":
                    table = self.table
                elif part.fmt == "parquet":
                    table = pq.read_table(part.path)
                else:
                    table = pacsv.read_csv(part.path, convert_options=_csv_options(None, strings))
            except (pa.ArrowException, OSError) as err:
                raise DataError(f"{part.path}: {_explain(err)}") from None
            _check_text(table.schema, part)
            for offset in range(0, max(table.num_rows, 1), CHUNK_ROWS):
                piece = table.slice(offset, CHUNK_ROWS)
                if piece.num_rows:
                    chunks.append(Chunk(piece, start + offset, part, offset))
            start += table.num_rows
        return chunks

    def stream(self, columns: list[str] | None, strings: tuple[str, ...]):
        """The table again from disk in record batches: a re-iterable for one more pass."""
        return _Stream(self, columns, strings)


class _Stream:
    def __init__(self, source: TableSource, columns, strings):
        self.source, self.columns, self.strings = source, columns, strings

    def __iter__(self):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        start = 0
        for part in self.source.parts:
            row = 0
            try:
                if part.fmt == "memory":
                    table = self.source.table.select(self.columns) if self.columns else self.source.table
                    batches = table.to_batches(max_chunksize=CHUNK_ROWS)
                elif part.fmt == "parquet":
                    batches = pq.ParquetFile(part.path).iter_batches(batch_size=CHUNK_ROWS, columns=self.columns)
                else:
                    batches = pacsv.open_csv(part.path, convert_options=_csv_options(self.columns, self.strings),
                                             read_options=pacsv.ReadOptions(block_size=16 << 20))
                for batch in batches:
                    _check_text(batch.schema, part)
                    yield Chunk(batch, start + row, part, row)
                    row += batch.num_rows
            except (pa.ArrowException, OSError) as err:
                hint = (" (streamed CSV columns keep the type of their first block: list the column in "
                        "data.categorical, or convert the file to Parquet)") if "conversion error" in str(err) else ""
                raise DataError(f"{part.path}: {_explain(err)}{hint}") from None
            start += row


def _csv_options(columns, strings):
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(null_values=list(MISSING), strings_can_be_null=True, quoted_strings_can_be_null=True,
                                column_types={c: pa.string() for c in strings}, include_columns=columns)


def _check_text(schema: pa.Schema, part: Part) -> None:
    for field in schema:
        if part.fmt == "csv" and pa.types.is_binary(field.type):  # Arrow's reading of bytes that are not UTF-8
            raise DataError(f"{part.path}: column '{field.name}' is not UTF-8 text (save the file as UTF-8)")


# ---------------------------------------------------------------- pass A: labels, gaps, rows


class _Cells:
    """A chunk's cells as the task's target readers see them (dlcli.tasks): text, numbers, where a row is."""

    def __init__(self, chunk: Chunk):
        self.chunk, self.rows = chunk, chunk.table.num_rows

    def strings(self, column: str) -> pa.Array:
        return as_strings(self.chunk.table.column(column))

    def numbers(self, column: str):
        return as_numbers(self.chunk.table.column(column))

    def where(self, i: int) -> str:
        return self.chunk.where(i)


def scan_targets(chunks, entry, task, columns: list[str], features: list[str], text_column: str | None, name: str,
                 names: list[str] | None = None):
    """The task's targets of every row (its reader decides what a cell means), with the rows kept: a gap in a
    feature (data.missing: drop | error) or in a target (the task's rule). `names`: the training file's outputs,
    for a test file."""
    reader = task.reader(entry, columns)
    keep = []
    for chunk in chunks:
        reader.add(_Cells(chunk))
        if text_column is not None:
            empty = as_strings(chunk.table.column(text_column)).is_null().to_numpy(zero_copy_only=False)
            if empty.any():
                raise DataError(f"{chunk.where(int(np.flatnonzero(empty)[0]))}, column '{text_column}' is empty")
        if getattr(entry, "missing", "fill") != "fill" and features:
            gaps = np.zeros(chunk.table.num_rows, dtype=bool)
            for c in features:
                gap = missing_mask(chunk.table.column(c))
                if entry.missing == "error" and gap.any():
                    raise DataError(f"{chunk.where(int(np.flatnonzero(gap)[0]))}, column '{c}' is empty "
                                     f"(data.missing: error; use fill or drop to accept gaps)")
                gaps |= gap
            keep.append(~gaps)
    targets = reader.finish(name, names)
    if keep:
        feature_keep = np.concatenate(keep)
        targets.keep = feature_keep if targets.keep is None else feature_keep & targets.keep
    return targets


# ---------------------------------------------------------------- pass B and C for feature tables


def feature_columns(entry, columns: list[str], targets: list[str]) -> list[str]:
    """The columns a csv/parquet entry reads as features: all but the targets and data.drop_columns, which must
    name columns of the table other than a target."""
    dropped = getattr(entry, "drop_columns", [])
    for c in dropped:
        if c not in columns:
            raise DataError(f"data.drop_columns: '{c}' is not a column of {entry.train_file}"
                            f"{closest(c, [n for n in columns if n not in targets])}")
        if c in targets:
            raise DataError(f"data.drop_columns: '{c}' is the label column; drop another column, or set "
                            f"data.label_column")
    return [c for c in columns if c not in targets and c not in dropped]


def id_like(name: str, column, numeric: bool) -> str | None:
    """Why a column names rows rather than describing them, or None. Strings with a distinct value in nearly every
    row (ids, names, free keys); numbers only when they are whole and count the rows (1, 2, 3, ... in any order:
    R's rownames, a pandas index written to CSV), since measurements are distinct in every row too. One-hot codes
    or a standardised row number teach a model the rows it saw, nothing about new ones."""
    present = len(column) - column.null_count
    if present < ID_MIN_ROWS:
        return None
    text = as_strings(column)
    distinct = pc.count_distinct(text, mode="only_valid").as_py()
    if distinct < ID_SHARE * present:
        return None
    if not numeric:
        return f"{distinct:,} distinct values in {present:,} rows"
    values, _, _ = as_numbers(column)
    values = values[~np.isnan(values)]
    if not len(values) or not np.array_equal(values, np.round(values)):
        return None
    steps = np.diff(np.sort(values))
    if len(steps) and np.all(steps == 1):
        return f"whole numbers {values.min():.0f} to {values.max():.0f}, one per row: a row number"
    if _id_name(name):
        return f"whole numbers, a distinct one in {distinct:,} of {present:,} rows, and named like an id"
    return None


def _id_name(name: str) -> bool:
    """id, row_id, customerId, rownames, index, `Unnamed: 0` (pandas' index written to CSV)."""
    import re

    lower = name.strip().lower()
    return lower in ("id", "ids", "index", "idx", "key", "uuid", "row", "rownames", "rowname") or \
        lower.endswith(("_id", " id", "-id", ".id")) or bool(re.search(r"[a-z]Id$", name)) or \
        bool(re.fullmatch(r"unnamed: ?\d+", lower))


class TableEncoder:
    """Numeric columns filled (training mean) and later standardised; categorical columns one-hot encoded, with a
    last slot for a missing or never-seen value. `state` is what data.json stores."""

    kind = "tabular"
    dtype = np.float32

    def __init__(self, entry, features: list[str], state: dict | None = None):
        self.entry, self.features, self.state = entry, features, state

    @classmethod
    def restored(cls, entry, state: dict) -> "TableEncoder":
        return cls(entry, [*state["numeric"], *state["categories"]], state)

    def fit(self, chunks, train_of) -> None:
        """Decide numeric / categorical per column and fit fill values and categories on the training rows.

        train_of(chunk) -> boolean mask of the chunk's training rows.
        """
        configured = self.entry.categorical
        if configured != "auto":
            for c in configured:
                if c not in self.features:
                    raise DataError(f"data.categorical: '{c}' is not a feature column of {self.entry.train_file}")
        stats = {c: {"present": 0, "numbers": 0, "sum": 0.0, "bad": None, "categories": set()} for c in self.features}
        for chunk in chunks:
            train = train_of(chunk)
            if not train.any():
                continue
            for c in self.features:
                column, s = chunk.table.column(c), stats[c]
                if configured == "auto" or c not in configured:
                    values, bad, text = as_numbers(column)
                    present = train & (~np.isnan(values) | bad)
                    numbers = train & ~np.isnan(values)
                    s["present"] += int(present.sum())
                    s["numbers"] += int(numbers.sum())
                    s["sum"] += float(values[numbers].sum())
                    first_bad = np.flatnonzero(train & bad)
                    if s["bad"] is None and len(first_bad):
                        s["bad"] = (chunk.where(int(first_bad[0])), text[int(first_bad[0])].as_py())
                if configured != "auto" and c in configured or not is_numeric_type(column.type):
                    text = as_strings(column).filter(pa.array(train))
                    s["categories"].update(v for v in pc.unique(text).to_pylist() if v is not None)
        numeric, fill, categories = [], {}, {}
        for c in self.features:
            s = stats[c]
            is_numeric = (configured == "auto" and s["present"] and s["numbers"] >= NUMERIC_SHARE * s["present"]) \
                or (configured != "auto" and c not in configured)
            if is_numeric:
                if s["bad"] is not None:
                    where, value = s["bad"]
                    raise DataError(f"{where}, column '{c}': '{value}' is not a number "
                                     f"(fix it, or list '{c}' in data.categorical)")
                numeric.append(c)
                fill[c] = s["sum"] / s["numbers"] if s["numbers"] else 0.0
            else:
                categories[c] = sorted(s["categories"])
        self.state = {"numeric": numeric, "fill": fill, "categories": categories}

    @property
    def width(self) -> int:
        return len(self.state["numeric"]) + sum(len(v) + 1 for v in self.state["categories"].values())

    def unscaled(self) -> list[int]:
        """Feature positions that are one-hot indicators: left as 0/1 by the normaliser."""
        return list(range(len(self.state["numeric"]), self.width))

    def encode(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """(float32 features (n, width), rows kept: all but gaps under `missing: drop`)."""
        n = chunk.table.num_rows
        out = np.zeros((n, self.width), dtype=np.float32)
        gaps = np.zeros(n, dtype=bool)
        for j, c in enumerate(self.state["numeric"]):
            values, bad, text = as_numbers(chunk.table.column(c))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{chunk.where(i)}, column '{c}': '{text[i].as_py()}' is not a number")
            missing = np.isnan(values)
            gaps |= missing
            out[:, j] = np.where(missing, self.state["fill"][c], values)
        offset = len(self.state["numeric"])
        rows = np.arange(n)
        for c, names in self.state["categories"].items():
            text = as_strings(chunk.table.column(c))
            gaps |= text.is_null().to_numpy(zero_copy_only=False)
            slot = pc.fill_null(pc.index_in(text, value_set=pa.array(names, pa.string())), len(names))
            out[rows, offset + slot.to_numpy(zero_copy_only=False)] = 1.0
            offset += len(names) + 1
        keep = ~gaps if self.entry.missing == "drop" else np.ones(n, dtype=bool)
        return out, keep


# ---------------------------------------------------------------- the dataset


def read_table(entry, seed: int, stored: dict | None = None, encode: bool = True, task=None):
    """The DataBundle of a csv/parquet/text_csv entry; with encode=False only (input shape, output names, vocab
    size). task: the config's (dlcli.tasks), which reads the target columns; default classification."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, Split, statistics

    from dlcli.tasks import parse_task

    task = task if task is not None else parse_task(None)
    text_column = getattr(entry, "text_column", None)
    default_fmt = "parquet" if entry.dataset == "parquet" else "csv"
    source = TableSource(entry.train_file, default_fmt, "data.train_file")
    targets = task.label_columns(entry)
    source.require(targets + ([text_column] if text_column else []))
    features = [text_column] if text_column else feature_columns(entry, source.columns, targets)
    if not features:
        raise DataError(f"{entry.train_file}: no feature columns besides {', '.join(map(repr, targets))}")
    strings = tuple(targets + ([text_column] if text_column else []) +
                    ([] if text_column or entry.categorical == "auto" else list(entry.categorical)))
    streamed = _streams(entry, source)
    test_source = test_chunks = test_y = test_keep = None
    if entry.test_file:
        test_source = TableSource(entry.test_file, default_fmt, "data.test_file")
        missing = [c for c in source.columns if c not in test_source.columns and c not in
                   getattr(entry, "drop_columns", [])]
        if missing:
            raise DataError(f"{entry.test_file}: no column '{missing[0]}' (the train file has it)")
    keys = _cache_keys(entry, seed, task, stored, source, test_source) if streamed else []
    if keys:  # before any pass: a second run over the same files and settings reads none of them again
        cached = _cache_find(source, keys, stored)
        if cached is not None:
            return _cached_bundle(*cached, entry, task, encode)
    chunks = source.stream(None, strings) if streamed else source.read_all(strings)
    # Pass A needs the targets (and the features only where a gap drops or fails a row): streamed, only those
    # columns are converted, which makes it several times cheaper than a full parse.
    scanned = [*targets, *([text_column] if text_column else []),
               *(features if not text_column and getattr(entry, "missing", "fill") != "fill" else [])]

    def scan_of(table_source, all_chunks):
        return table_source.stream(scanned, strings) if streamed else all_chunks

    found = scan_targets(scan_of(source, chunks), entry, task, targets, [] if text_column else features, text_column,
                         entry.train_file)
    classes, y_all = found.names, found.y

    if test_source is not None:
        test_chunks = test_source.stream(None, strings) if streamed else test_source.read_all(strings)
        test_found = scan_targets(scan_of(test_source, test_chunks), entry, task, targets,
                                  [] if text_column else features, text_column, entry.test_file, names=classes)
        test_y, test_keep = test_found.y, test_found.keep

    rows = _Rows(y_all, found.strata, classes, entry, seed, has_test=test_chunks is not None, keep=found.keep)
    rows.notes[:0] = list(found.notes)
    state = {k: v for k, v in stored.items() if k != "kind"} if stored else None
    if text_column:
        from dlcli.data.text import TextEncoder

        encoder = TextEncoder(entry, state)
    else:
        encoder = TableEncoder.restored(entry, state) if state else TableEncoder(entry, features)
    if state is None:
        encoder.fit(chunks, lambda chunk: rows.split_of[chunk.start : chunk.start + chunk.table.num_rows] == 0)
    if not encode:
        return (encoder.width,), classes, getattr(encoder, "vocab_size", None)

    key = keys[-1] if keys else None
    splits = _encode_splits(encoder, chunks, test_chunks, rows, y_all, test_y, test_keep, source, key)
    made = {name: Split(torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in splits.items()}
    if len(made["train"]) == 0:
        raise DataError(f"{entry.train_file}: every training row has a missing value (data.missing: drop)")
    val = made.get("val") if len(made.get("val", [])) else None
    if encoder.kind == "text":
        normalizer = Normalizer([0.0], [1.0], image=False, tokens=True)
    else:
        mean, std, _ = statistics(made["train"].x)
        for i in encoder.unscaled():  # one-hot indicators stay 0/1
            mean[i], std[i] = 0.0, 1.0
        normalizer = Normalizer(mean, std, image=False)
    if key is not None:
        _cache_describe(source, key, {"state": encoder.state, "kind": encoder.kind, "classes": classes,
                                      "notes": rows.notes, "mean": normalizer.mean, "std": normalizer.std})
    target = {"type": task.entry_name, **task.fit(made["train"].y.numpy(), classes)}
    return DataBundle(made["train"], val, made["test"], classes, (encoder.width,), normalizer,
                      {"kind": encoder.kind, **encoder.state}, getattr(encoder, "vocab_size", None), rows.notes,
                      target)


def _streams(entry, source: TableSource) -> bool:
    stream = getattr(entry, "stream", False)
    if source.parts[0].fmt == "memory":
        return False  # already in memory
    if isinstance(stream, bool):
        return stream
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return False
    return source.nbytes_estimate() > STREAM_SHARE * free


class _Rows:
    """The seeded split of a table's rows (as dlcli.data.bundle cuts image sets), and each row's place in its split.

    split_of: 0 train, 1 val, 2 test, -1 in none (max_train_samples, or a gap under missing: drop).
    """

    def __init__(self, y: np.ndarray, strata: np.ndarray | None, classes: list[str], entry, seed: int, has_test: bool,
                 keep: np.ndarray | None):
        import torch

        from dlcli.data.bundle import Splitter

        n = len(y)
        cut = Splitter(torch.from_numpy(strata) if strata is not None else None, seed, entry.split, classes, n)
        test = cut.cut(entry.test_split, "test").numpy() if not has_test else np.empty(0, dtype=np.int64)
        val = cut.cut_val(entry).numpy()
        self.notes = cut.notes
        train = cut.train(entry.max_train_samples, entry.val_split).numpy()
        self.split_of = np.full(n, -1, dtype=np.int8)
        self.position = np.zeros(n, dtype=np.int64)
        self.sizes = []
        for s, idx in enumerate((train, val, test)):
            if keep is not None:
                idx = idx[keep[idx]]
            self.split_of[idx] = s
            self.position[idx] = np.arange(len(idx))
            self.sizes.append(len(idx))


SPLIT_NAMES = ("train", "val", "test")


def _encode_splits(encoder, chunks, test_chunks, rows: _Rows, y_all, test_y, test_keep, source, key):
    """Pass C: every row encoded into its split's matrix (memory-mapped files in the cache when `key` is set)."""
    sizes = dict(zip(SPLIT_NAMES, rows.sizes))
    if test_chunks is not None:
        sizes["test"] = int(test_keep.sum()) if test_keep is not None else len(test_y)
    labels = {name: np.empty((sizes[name], *y_all.shape[1:]), dtype=y_all.dtype) for name in SPLIT_NAMES}
    store = _CacheWriter(source, key, encoder.width, encoder.dtype, sizes) if key is not None else None
    out = {name: store.array(name) if store else np.empty((sizes[name], encoder.width), encoder.dtype)
           for name in SPLIT_NAMES}
    for chunk in chunks:
        x, keep = encoder.encode(chunk)
        span = slice(chunk.start, chunk.start + len(x))
        where, at, y = rows.split_of[span], rows.position[span], y_all[span]
        for s, name in enumerate(SPLIT_NAMES):
            sel = where == s
            out[name][at[sel]] = x[sel]
            labels[name][at[sel]] = y[sel]
    if test_chunks is not None:
        cursor = 0
        for chunk in test_chunks:
            x, keep = encoder.encode(chunk)
            if test_keep is not None:
                keep = test_keep[chunk.start : chunk.start + len(x)]
            n = int(keep.sum())
            out["test"][cursor : cursor + n] = x[keep]
            labels["test"][cursor : cursor + n] = test_y[chunk.start : chunk.start + len(x)][keep]
            cursor += n
    if store is not None:
        return store.finish(out, labels)
    return {name: (out[name], labels[name]) for name in SPLIT_NAMES}


# ---------------------------------------------------------------- the streamed tables' cache


def _cache_root(source: TableSource) -> Path:
    """Beside the data (data/.cache/), or the system's temporary folder when that is read-only."""
    near = source.parts[0].path.parent / ".cache"
    try:
        near.mkdir(parents=True, exist_ok=True)
        if os.access(near, os.W_OK):
            return near
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "dlcli-cache"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


CACHE_VERSION = 2  # entries keyed by the settings alone, described by meta.json


def _cache_keys(entry, seed: int, task, stored: dict | None, source: TableSource, test_source) -> list[str]:
    """The cache entries that may hold this table's splits, known before any pass over the rows: the files as they
    are now (paths, sizes, modification times) and every setting that shapes the splits (the whole data entry and
    task, the seed). A run's stored fit (evaluate, predict) first tries the training run's entry, then its own."""
    from dlcli.data.cache import file_stamp

    settings = entry.model_dump(mode="json", exclude={"stream"})
    stamp = {"version": CACHE_VERSION, "seed": seed, "data": settings, "task": task.model_dump(mode="json"),
             "task_name": task.entry_name}
    files = [p.path for p in source.parts] + ([p.path for p in test_source.parts] if test_source else [])
    fitted = file_stamp(files, extra=json.dumps(stamp, sort_keys=True, default=str))
    if stored is None:
        return [fitted]
    given = file_stamp(files, extra=json.dumps({**stamp, "stored": stored}, sort_keys=True, default=str))
    return [fitted, given]


def _cache_find(source: TableSource, keys: list[str], stored: dict | None):
    """(splits, meta) of the first entry of `keys` that is complete and, for a stored fit, was encoded with it."""
    wanted = None if stored is None else json.dumps({k: v for k, v in stored.items() if k != "kind"}, sort_keys=True)
    for key in keys:
        found = _cache_lookup(source, key)
        if found is None:
            continue
        splits, meta = found
        if wanted is None or json.dumps(meta.get("state"), sort_keys=True) == wanted:
            return splits, meta
    return None


def _cached_bundle(splits: dict, meta: dict, entry, task, encode: bool):
    """A DataBundle (or describe's triple) from a cache entry and its meta.json, without reading the table."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer, Split

    state = meta["state"]
    if meta["kind"] == "text":
        from dlcli.data.text import TextEncoder

        encoder = TextEncoder(entry, state)
    else:
        encoder = TableEncoder.restored(entry, state)
    classes = meta["classes"]
    if not encode:
        return (encoder.width,), classes, getattr(encoder, "vocab_size", None)
    made = {name: Split(torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in splits.items()}
    val = made["val"] if len(made["val"]) else None
    normalizer = Normalizer(meta["mean"], meta["std"], image=False, tokens=meta["kind"] == "text")
    target = {"type": task.entry_name, **task.fit(made["train"].y.numpy(), classes)}
    return DataBundle(made["train"], val, made["test"], classes, (encoder.width,), normalizer,
                      {"kind": encoder.kind, **state}, getattr(encoder, "vocab_size", None), list(meta["notes"]),
                      target)


def _cache_describe(source: TableSource, key: str, meta: dict) -> None:
    """meta.json beside an entry's splits: what a later run needs to use them without a pass over the table. Written
    atomically after the splits; an entry without it is not used (a read-only cache just stays unused)."""
    folder = _cache_root(source) / f"table-{key}"
    if (folder / "meta.json").is_file():
        return
    tmp = folder / f"meta.json.tmp{os.getpid()}"
    try:
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, folder / "meta.json")
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _cache_lookup(source: TableSource, key: str):
    """(splits, meta) of a complete entry, or None."""
    folder = _cache_root(source) / f"table-{key}"
    if not (folder / "done").is_file() or not (folder / "meta.json").is_file():
        return None
    try:
        found = {name: (np.load(folder / f"{name}_x.npy", mmap_mode="c"), np.load(folder / f"{name}_y.npy"))
                 for name in SPLIT_NAMES}
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    os.utime(folder)
    return found, meta


class _CacheWriter:
    """Split matrices written straight into .npy files; `done` is written last, so a half-made entry is never used."""

    def __init__(self, source: TableSource, key: str, width: int, dtype, sizes: dict):
        root = _cache_root(source)
        self.root, self.folder = root, root / f"table-{key}"
        self.tmp = root / f"table-{key}.tmp{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.width, self.dtype, self.sizes = width, dtype, sizes

    def array(self, name: str) -> np.ndarray:
        try:
            return np.lib.format.open_memmap(self.tmp / f"{name}_x.npy", mode="w+", dtype=self.dtype,
                                             shape=(self.sizes[name], self.width))
        except OSError as err:
            raise DataError(f"cannot write the streamed table cache in {self.tmp} ({err.strerror or err}): "
                             f"free some space or set data.stream: false") from None

    def finish(self, out: dict, labels: dict) -> dict:
        try:
            for name in SPLIT_NAMES:
                out[name].flush()
                np.save(self.tmp / f"{name}_y.npy", labels[name])
            (self.tmp / "done").write_text("ok\n")
            try:
                os.replace(self.tmp, self.folder)
            except OSError:  # another process (a DDP rank) installed the same entry first: use that one
                if not (self.folder / "done").is_file():
                    raise
                shutil.rmtree(self.tmp, ignore_errors=True)
        except OSError as err:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise DataError(f"cannot write the streamed table cache in {self.root} ({err.strerror or err}): "
                             f"free some space or set data.stream: false") from None
        old = sorted((p for p in self.root.glob("table-*") if p.is_dir() and ".tmp" not in p.name),
                     key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in old[CACHED_TABLES:]:
            shutil.rmtree(stale, ignore_errors=True)
        return {name: (np.load(self.folder / f"{name}_x.npy", mmap_mode="c"), labels[name]) for name in SPLIT_NAMES}


# ---------------------------------------------------------------- predict: rows of a new file or of a table in memory


@dataclass(frozen=True)
class InputTable:
    """The Part of a table given in memory to predict (dlcli.inputs): its rows are `row N` (1-based, as Parquet rows),
    or `table[i] row N` for one of several tables; a DataFrame's rows are named by its index."""

    label: str = ""  # "table[1] ", or nothing
    index: tuple = ()  # a DataFrame's index labels, one per row
    fmt = "input"

    def where(self, row: int) -> str:
        return f"{self.label}row {row + 1}" + (f" (index {self.index[row]!r})" if self.index else "")


def encode_rows(path: str, state: dict, entry) -> tuple[np.ndarray, list[str]]:
    """(features of every kept row of a CSV/Parquet file, a name per row `file:line`) with a run's stored fit."""
    encoder = TableEncoder.restored(entry, state)
    source = TableSource(path, "csv", "input")
    _require_features(encoder, source.columns, str(path))
    for c in encoder.features:  # Arrow keeps both, and reading the column by name fails
        if source.columns.count(c) > 1:
            raise DataError(f"{path}: column '{c}' appears more than once (keep one)")
    strings = tuple(c for c in encoder.state["categories"] if c in source.columns)
    return _encode_chunks(encoder, source.read_all(strings), f"{path}: no data rows under the header")


def encode_table(table: pa.Table, state: dict, entry, label: str = "", index: tuple = ()) -> tuple[np.ndarray, list]:
    """encode_rows for a pyarrow Table in memory: its rows encoded as the same rows of a CSV or Parquet file would be
    (columns by name, extra ones ignored), named `row N`, or by `index` (a DataFrame's labels). `label`
    ("table[1] ") names one of several tables."""
    encoder = TableEncoder.restored(entry, state)
    _require_features(encoder, table.column_names, label.strip() or "input table")
    for c in encoder.features:
        if table.column_names.count(c) > 1:
            raise DataError(f"{label.strip() or 'input table'}: column '{c}' appears more than once (keep one)")
    part = InputTable(label, tuple(index))
    table = pa.table({c: _as_cell_column(table.column(c), part, c) for c in encoder.features})
    chunks = [Chunk(table.slice(offset, CHUNK_ROWS), offset, part, offset)
              for offset in range(0, table.num_rows, CHUNK_ROWS)]
    return _encode_chunks(encoder, chunks, f"{label.strip() or 'input table'}: no rows")


def _require_features(encoder: TableEncoder, columns: list[str], where: str) -> None:
    missing = [c for c in encoder.features if c not in columns]
    if missing:
        raise DataError(f"{where}: {missing_columns(missing, encoder.features)}")


def missing_columns(missing: list[str], features: list[str]) -> str:
    """What predict, Run.predict and serve say of trained columns an input lacks: every one of them, so that one
    fix is enough. Filling a whole column would answer for rows the run never saw, so none is filled."""
    named = ", ".join(f"'{c}'" for c in missing)
    return f"no column{'s' if len(missing) > 1 else ''} {named} (the run trained on {', '.join(features)})"


def _as_cell_column(column, part: InputTable, name: str):
    """A column of an in-memory table as the file readers give cells: dictionary-encoded values decoded, dates and
    times as text; a column of lists, structs or bytes is refused in one line."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = pc.cast(column, t.value_type)
        t = column.type
    if pa.types.is_temporal(t):
        return pc.cast(column, pa.string())
    if not (is_numeric_type(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
            or pa.types.is_null(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)):
        raise DataError(f"{part.label.strip() or 'input table'}: column '{name}' holds {t} values; a table cell is "
                         f"a number or text (convert the column)")
    return column


def _encode_chunks(encoder: TableEncoder, chunks, empty: str) -> tuple[np.ndarray, list[str]]:
    blocks, names = [], []
    for chunk in chunks:
        x, keep = encoder.encode(chunk)
        blocks.append(x[keep])
        names += [chunk.row_name(int(i)) for i in np.flatnonzero(keep)]
    if not blocks:
        raise DataError(empty)
    return np.concatenate(blocks), names
