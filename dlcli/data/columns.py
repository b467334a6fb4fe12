"""Arrow columns as numpy, with dlcli's rules for tables: what counts as missing, what counts as a number."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING = ("", "NA", "NaN", "nan", "null", "None", "?")  # cells read as missing, after trimming spaces
NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_strings(column) -> pa.Array:
    """Trimmed text, with the missing markers (and NaN) as nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    text = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.is_in(text, value_set=pa.array(MISSING)), pa.scalar(None, text.type), text)


def is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _out_of_range(values: np.ndarray) -> np.ndarray:
    """Infinities, and finite values beyond float32's range (1e39), which become infinities in the float32 features
    and targets a model sees. A long run of digits is one too: Arrow reads it as an infinity."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) > FLOAT32_MAX


def as_numbers(column) -> tuple[np.ndarray, np.ndarray, pa.Array | None]:
    """(float64 values, NaN where missing or not a number; mask of cells that are present but not numbers; the
    text, for naming a bad cell: None when there is none). Infinities, and numbers beyond float32's range, count as
    not numbers."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if is_numeric_type(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        bad = _out_of_range(values)
        if bad.any():
            return np.where(bad, np.nan, values), bad, pc.cast(column, pa.string())
        return values, bad, None
    text = as_strings(column)
    ok = pc.match_substring_regex(text, NUMBER)
    numbers = pc.cast(pc.if_else(ok, text, pa.scalar(None, text.type)), pa.float64())
    values = numbers.to_numpy(zero_copy_only=False)
    bad = pc.and_(pc.invert(pc.fill_null(ok, True)), pc.is_valid(text)).to_numpy(zero_copy_only=False)
    huge = _out_of_range(values)
    if huge.any():  # "1e400" matches the pattern of a number
        values, bad = np.where(huge, np.nan, values), bad | huge
    return values, bad, text


def missing_mask(column) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if is_numeric_type(column.type):
        return np.isnan(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
    return as_strings(column).is_null().to_numpy(zero_copy_only=False)
