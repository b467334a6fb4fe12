"""`dataset: series`: one or many time-ordered series in a CSV/Parquet table, cut into forecasting windows.

A table holds a time column, the target column(s), optionally an id column (many series, one global model) and
covariate columns (read as extra input channels of the past). Each series is sorted by time; its frequency is
inferred from the spacing of the timestamps (calendar months, quarters and years stepped as such), duplicate
timestamps are refused and gaps reported.

Splits are chronological, per series of n steps with horizon H and v validation horizons (`val_split`): the test
window forecasts steps [n - H, n), validation window j steps [n - H - jH, n - H - (j-1)H), and training windows
forecast within [0, n - H - vH). A window reads `lookback` steps right before its first target step, which may lie
in an earlier split, never a later one. Each series is scaled by the mean and standard deviation of its training
part; `normalize: window` also subtracts each window's mean of its own inputs (so a trending series is learnt as
shapes around a level), which is added back to the forecast.

Windows are never stored: a WindowSplit keeps the scaled series (one float32 tensor of all steps) and each
window's first target index, and gathers a batch's windows by index. Memory grows with the series' length, not with
lookback x windows.

What the forecast task needs to score a window travels as its target row (see `Pack`): the true values in the
targets' own units, the window's level, the series' scale, the MASE denominator and the seasonal naive forecast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from dlcli.errors import DataError
from dlcli.tasks.forecast import Pack

DAY = 86400
# data.calendar: each feature's position in its cycle (0 to 1) from a datetime64[s] array, and the cycle's length
CALENDAR = {
    "month": lambda t: (t.astype("datetime64[M]").astype(np.int64) % 12) / 12,
    "day_of_week": lambda t: ((t.astype("datetime64[D]").astype(np.int64) + 3) % 7) / 7,  # Monday 0
    "day_of_month": lambda t: (t.astype("datetime64[D]") - t.astype("datetime64[M]").astype("datetime64[D]")).astype(
        np.int64) / 31,
    "hour": lambda t: ((t - t.astype("datetime64[D]").astype("datetime64[s]")).astype(np.int64) / 3600) / 24,
}
# name: (calendar months per step, seconds per step, season)
KNOWN = {
    "yearly": (12, 0, 1), "quarterly": (3, 0, 4), "monthly": (1, 0, 12), "weekly": (0, 7 * DAY, 52),
    "daily": (0, DAY, 7), "hourly": (0, 3600, 24), "half-hourly": (0, 1800, 48),
}


# ---------------------------------------------------------------- time


@dataclass
class Frequency:
    """How far apart a series' steps are: calendar months (monthly, quarterly, yearly), a fixed number of seconds,
    or whole steps of a numeric time column (`numeric`)."""

    name: str
    months: int = 0
    seconds: float = 0.0
    season: int = 1
    numeric: bool = False
    month_end: bool = False  # calendar steps land on the last day of their month

    def to_dict(self) -> dict:
        return {"name": self.name, "months": self.months, "seconds": self.seconds, "season": self.season,
                "numeric": self.numeric, "month_end": self.month_end}

    @classmethod
    def from_dict(cls, d: dict) -> "Frequency":
        return cls(**d)

    def steps(self, times: np.ndarray) -> np.ndarray:
        """Each gap between consecutive times in steps of this frequency (1 where none is missing)."""
        if len(times) < 2:
            return np.zeros(0)
        if self.months:
            months = _month_index(times)
            return np.diff(months) / self.months
        diff = np.diff(times).astype(np.float64) if self.numeric else np.diff(times).astype("timedelta64[s]").astype(
            np.float64)
        return diff / self.seconds

    def after(self, last, count: int) -> np.ndarray:
        """The `count` times following `last`."""
        k = np.arange(1, count + 1)
        if self.numeric:
            return last + k * self.seconds
        if self.months:
            base = _month_index(np.array([last]))[0] + k * self.months
            first = (base // 12 - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (base % 12).astype(
                "timedelta64[M]")
            if self.month_end:
                days = (first + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
            else:
                day = (np.datetime64(last, "D") - np.datetime64(last, "M").astype("datetime64[D]")).astype(int)
                length = ((first + np.timedelta64(1, "M")).astype("datetime64[D]") - first.astype("datetime64[D]"))
                days = first.astype("datetime64[D]") + np.minimum(day, length.astype(int) - 1).astype("timedelta64[D]")
            clock = np.datetime64(last, "s") - np.datetime64(last, "D").astype("datetime64[s]")
            return days.astype("datetime64[s]") + clock
        return np.datetime64(last, "s") + (k * self.seconds).astype("timedelta64[s]")

    def text(self, times) -> list[str]:
        if self.numeric:
            return [f"{t:g}" if isinstance(t, float) else str(t) for t in np.asarray(times).tolist()]
        subdaily = not self.months and self.seconds % DAY != 0
        clock = subdaily or bool(np.any(np.asarray(times, "datetime64[s]") != np.asarray(times, "datetime64[D]")))
        return [str(t) for t in np.datetime_as_string(np.asarray(times, "datetime64[s]"), unit="s" if clock else "D")]


def _month_index(times: np.ndarray) -> np.ndarray:
    return np.asarray(times, "datetime64[M]").astype(np.int64) + 1970 * 12


def infer_frequency(times: list[np.ndarray], numeric: bool, season: int | None) -> Frequency:
    """The most common spacing over all series: calendar months, quarters or years where the dates step by whole
    months; otherwise a fixed number of seconds (or of a numeric time column's units)."""
    gaps = [np.diff(t) for t in times if len(t) > 1]
    if not gaps:
        raise DataError("data.time_column: every series has a single time step: there is no frequency to learn")
    if numeric:
        d = np.concatenate(gaps).astype(np.float64)
        step = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
        return Frequency("steps" if step == 1 else f"every {step:g}", seconds=step, season=season or 1, numeric=True)
    d = np.concatenate(gaps).astype("timedelta64[s]").astype(np.float64)
    positive = d[d > 0]
    if not len(positive):
        raise DataError("data.time_column: every timestamp repeats the one before it: there is no frequency")
    step = float(np.median(positive))
    month_steps = {1: "monthly", 3: "quarterly", 12: "yearly"}
    months = round(step / (30.44 * DAY))
    if months in month_steps and abs(step - months * 30.44 * DAY) <= 3 * DAY * max(1, months / 3):
        name = month_steps[months]
        ends = np.concatenate([t for t in times])
        end = bool(np.all((np.asarray(ends, "datetime64[D]") + np.timedelta64(1, "D")).astype("datetime64[M]")
                          != np.asarray(ends, "datetime64[M]")))
        return Frequency(name, months=months, season=season or KNOWN[name][2], month_end=end)
    for name, (_, seconds, m) in KNOWN.items():
        if seconds and step == seconds:
            return Frequency(name, seconds=seconds, season=season or m)
    return Frequency(f"every {_duration(step)}", seconds=step, season=season or 1)


def _duration(seconds: float) -> str:
    for unit, size in (("days", DAY), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


def parse_times(column, where) -> tuple[np.ndarray, bool]:
    """(times as datetime64[s] or float64 steps, whether numeric). Dates and timestamps: Arrow's date/timestamp
    types, or ISO 8601 text (2024-01, 2024-01-31, 2024-01-31 12:30)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dlcli.data.columns import as_strings, is_numeric_type

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise DataError(f"{where(int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0]))}: the "
                        "time column is empty (every row needs its time)")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return pc.cast(column, pa.timestamp("s")).to_numpy(zero_copy_only=False).astype("datetime64[s]"), False
    if is_numeric_type(column.type):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), True
    text = as_strings(column).to_pylist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns that it drops a UTC offset
        try:
            return np.array(text, dtype="datetime64[s]"), False
        except ValueError:
            for i, cell in enumerate(text):
                try:
                    np.datetime64(cell, "s")
                except ValueError:
                    raise DataError(f"{where(i)}: '{cell}' in the time column is not a date or timestamp (write "
                                    "ISO 8601: 2024-01-31 or 2024-01-31 12:30)") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- reading a table of series


@dataclass
class SeriesTable:
    """The series of one file, each sorted by time: values float64 (n, channels), targets first."""

    ids: list[str]
    times: list[np.ndarray]
    values: list[np.ndarray]
    rows: list[np.ndarray]  # each step's row in the file, for naming it
    channels: list[str]
    targets: int
    numeric_time: bool
    where: object  # a row index -> "file: line N"
    source: str


def read_series_table(entry, path: str, role: str = "data.train_file") -> SeriesTable:
    """A table of series as read, sorted and grouped, without checks beyond what makes it readable."""
    import pyarrow as pa

    from dlcli.data.columns import as_numbers, as_strings
    from dlcli.data.tables import TableSource

    targets, covariates = entry.target_list(), [*entry.covariates, *entry.known_ahead]
    strings = tuple(c for c in (entry.time_column, entry.id_column) if c)
    source = TableSource(path, "csv", role)
    source.require([entry.time_column, *targets, *covariates] + ([entry.id_column] if entry.id_column else []))
    chunks = source.read_all(strings)
    if not chunks:
        raise DataError(f"{path}: no data rows under the header")
    table = pa.concat_tables([c.table if isinstance(c.table, pa.Table) else pa.Table.from_batches([c.table])
                              for c in chunks])
    starts = [c.start for c in chunks]

    def where(row: int) -> str:
        k = int(np.searchsorted(starts, row, side="right")) - 1
        return chunks[k].where(row - chunks[k].start)

    times, numeric = parse_times(table.column(entry.time_column), where)
    if entry.calendar and numeric:
        raise DataError(f"data.calendar: {', '.join(entry.calendar)} come from dates, and {path}'s time column "
                        f"'{entry.time_column}' holds step numbers; remove data.calendar or give dates")
    channels = [*targets, *covariates]
    values = np.empty((table.num_rows, len(channels)))
    for j, name in enumerate(channels):
        numbers, bad, text = as_numbers(table.column(name))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where(row)}, column '{name}': '{text[row].as_py()}' is not a number")
        values[:, j] = numbers
    if entry.id_column:
        ids_all = np.array(as_strings(table.column(entry.id_column)).fill_null("").to_pylist(), dtype=object)
        names, inverse = np.unique(ids_all.astype(str), return_inverse=True)
    else:
        names, inverse = np.array([entry.target_list()[0]]), np.zeros(table.num_rows, dtype=np.int64)
    order = np.lexsort((times, inverse))  # by series, then time; stable for equal times
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    out = SeriesTable([], [], [], [], channels + calendar_names(entry), len(targets), numeric, where, path)
    for i, name in enumerate(names):
        rows = order[bounds[i]:bounds[i + 1]]
        out.ids.append(str(name))
        out.times.append(times[rows])
        out.values.append(np.hstack([values[rows], calendar_features(times[rows], entry.calendar)]))
        out.rows.append(rows)
    return out


def calendar_names(entry) -> list[str]:
    """The channels data.calendar adds: each feature's sine and cosine."""
    return [f"{name}_{f}" for name in entry.calendar for f in ("sin", "cos")]


def calendar_features(times, names) -> np.ndarray:
    """(steps, 2 x features): each calendar feature of each time as the sine and cosine of its place in its cycle
    (month of the year, day of the week, day of the month, hour of the day), so that December sits beside January."""
    if not len(names):
        return np.zeros((len(times), 0))
    t = np.asarray(times, "datetime64[s]")
    return np.column_stack([f(2 * np.pi * CALENDAR[name](t)) for name in names for f in (np.sin, np.cos)])


def known_count(entry) -> int:
    """How many input channels are known ahead (data.known_ahead, then data.calendar's): the last ones."""
    return len(entry.known_ahead) + 2 * len(entry.calendar)


def window_length(entry) -> int:
    """The steps an input window spans: lookback, plus the horizon when some inputs are known ahead."""
    return entry.lookback + (entry.horizon if known_count(entry) else 0)


def check_table(table: SeriesTable, freq: Frequency, entry) -> list[tuple[str, str, str]]:
    """What would hurt a forecast, as (severity, check, message): duplicate timestamps and missing values (errors:
    training stops on them), gaps, series too short for a window, constant series (warnings)."""
    from dlcli.tasks import ERROR, WARNING

    found = []
    need = entry.lookback + entry.horizon
    for sid, times, values, rows in zip(table.ids, table.times, table.values, table.rows):
        name = f"series '{sid}'" if entry.id_column else "the series"
        steps = freq.steps(times)
        dup = np.flatnonzero(steps == 0)
        if len(dup):
            found.append((ERROR, "duplicate-time", f"{table.where(int(rows[dup[0] + 1]))}: {name} has "
                          f"{len(dup):,} duplicate timestamp(s), the first {freq.text(times[dup[0]:dup[0] + 1])[0]} "
                          "(keep one row per time step)"))
        nan = np.flatnonzero(np.isnan(values).any(axis=1))
        if len(nan):
            column = table.channels[int(np.flatnonzero(np.isnan(values[nan[0]]))[0])]
            found.append((ERROR, "missing-value", f"{table.where(int(rows[nan[0]]))}, column '{column}': {name} has "
                          f"{len(nan):,} step(s) without a value (fill them, e.g. with the value before)"))
        gaps = np.flatnonzero(steps > 1.5)
        if len(gaps):
            missing = int(np.round(steps[gaps] - 1).sum())
            found.append((WARNING, "gaps", f"{name}: {missing:,} missing time step(s) in {len(gaps):,} gap(s), the "
                          f"first after {freq.text(times[gaps[0]:gaps[0] + 1])[0]}; windows read across them as if "
                          "the steps were consecutive (fill the missing steps to keep the spacing)"))
        if len(times) < need:
            found.append((WARNING, "short-series", f"{name} has {len(times):,} steps, fewer than lookback + horizon "
                          f"= {need}: it cannot give a single window and is left out"))
        elif len(values) and not np.isnan(values[:, :table.targets]).all():
            flat = [table.channels[j] for j in range(table.targets)
                    if np.nanmin(values[:, j]) == np.nanmax(values[:, j])]
            if flat:
                found.append((WARNING, "constant-series", f"{name}: target '{flat[0]}' never changes "
                              f"({np.nanmin(values[:, table.channels.index(flat[0])]):g}): there is nothing to learn "
                              "and its MASE is undefined"))
    return found


# ---------------------------------------------------------------- windows


class SeriesStore:
    """Every series' steps, scaled, in one tensor, with what a window needs to be cut and scored."""

    def __init__(self, scaled, raw, starts, lengths, mean, std, scale, lookback: int, horizon: int, season: int,
                 targets: int, normalize: str, known: int = 0):
        import torch

        self.scaled = scaled  # float32 (steps, channels): (value - series mean) / series std
        self.raw = raw  # float32 (steps, targets): the targets in their own units
        self.starts, self.lengths = starts, lengths  # int64 (series,)
        self.mean, self.std, self.scale = mean, std, scale  # float32 (series, channels | targets)
        self.lookback, self.horizon, self.season, self.targets = lookback, horizon, season, targets
        self.window_norm = normalize in ("window", "season")  # inputs less the window's mean
        self.base = normalize
        self.pack = Pack(horizon, targets)
        # prefix sums (float64, a zero row first) give any window's mean in one subtraction
        self.sums = torch.cat([torch.zeros(1, scaled.shape[1], dtype=torch.float64),
                               scaled.double().cumsum(0)]) if self.window_norm else None
        # with inputs known ahead (the last `known` channels), a window spans lookback + horizon steps: the known
        # channels over all of them, the others over the lookback only (zeros after the origin)
        self.known = known
        self._back = torch.arange(-lookback, horizon if known else 0)
        self._ahead = torch.arange(horizon)
        channels = scaled.shape[1]
        self._unknown = (self._back >= 0)[:, None] & (torch.arange(channels) < channels - known)[None, :]

    def to(self, device) -> "SeriesStore":
        import torch

        out = object.__new__(SeriesStore)
        out.__dict__.update({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})
        return out

    @property
    def device(self):
        return self.scaled.device

    def x(self, origin, series):
        """The windows' inputs (B, lookback, channels): the scaled steps before each origin, less the window's
        mean under window normalisation; with inputs known ahead (B, lookback + horizon, channels)."""
        import torch

        x = self.scaled[origin[:, None] + self._back.to(origin.device)]
        x = x - self.level(origin)[:, None, :] if self.window_norm else x
        if self.known:
            x = torch.where(self._unknown.to(x.device), torch.zeros_like(x), x)
        return x

    def level(self, origin):
        """Each window's mean of its inputs per channel (from prefix sums: no second gather); zeros without
        window normalisation."""
        import torch

        if not self.window_norm:
            return torch.zeros(len(origin), self.scaled.shape[1], device=origin.device)
        return ((self.sums[origin] - self.sums[origin - self.lookback]) / self.lookback).float()

    def y(self, origin, series):
        """The windows' target rows (see dlcli.tasks.forecast.Pack)."""
        import torch

        dev = origin.device
        H, K, m = self.horizon, self.targets, self.season
        ahead = origin[:, None] + self._ahead.to(dev)
        truth = self.raw[ahead.clamp(max=len(self.raw) - 1)]
        truth = torch.where((ahead < len(self.raw))[:, :, None], truth, torch.full_like(truth, float("nan")))
        # seasonal naive: each step repeats the value one season before it, from the history before the origin;
        # a window with less than a season of history repeats its last value
        history = origin - self.starts[series]
        period = torch.where(history >= m, torch.full_like(history, m), torch.ones_like(history))
        h = self._ahead.to(dev)[None, :]
        before = origin[:, None] + h - period[:, None] * (h // period[:, None] + 1)
        naive = self.raw[before]
        if self.base == "season":  # the network corrects last season's values
            base = self.scaled[before][:, :, :K]
        else:  # the window's mean (zero without window normalisation)
            base = self.level(origin)[:, None, :K].expand(-1, H, -1)
        B = len(origin)
        parts = [truth.reshape(B, H * K), base.reshape(B, H * K), self.mean[series, :K], self.std[series, :K],
                 self.scale[series], naive.reshape(B, H * K), series[:, None].to(truth.dtype)]
        return torch.cat(parts, 1)


class WindowView:
    """The inputs (`part` x) or target rows (`part` y) of some of a split's windows, gathered when a tensor is asked
    for (`.to`, `.cpu`); indexing gives a smaller view, as indexing a tensor would."""

    def __init__(self, store: SeriesStore, origin, series, part: str):
        self.store, self.origin, self.series, self.part = store, origin, series, part

    def __len__(self) -> int:
        return len(self.origin)

    @property
    def shape(self) -> tuple[int, ...]:
        import torch

        if self.part == "x":
            return torch.Size((len(self), len(self.store._back), self.store.scaled.shape[1]))
        return torch.Size((len(self), self.store.pack.width))

    @property
    def dtype(self):
        return self.store.scaled.dtype

    def __getitem__(self, key) -> "WindowView":
        import torch

        if isinstance(key, torch.Tensor):
            key = key.to(self.origin.device)
        return WindowView(self.store, self.origin[key], self.series[key], self.part)

    def tensor(self):
        return (self.store.x if self.part == "x" else self.store.y)(self.origin, self.series)

    def to(self, device, non_blocking: bool = False):
        return self.tensor().to(device, non_blocking=non_blocking)

    def cpu(self):
        return self.tensor().cpu()


class WindowSplit:
    """A split as the engine uses one (len, batches, .x, .y, .to), made of windows cut from a SeriesStore."""

    def __init__(self, store: SeriesStore, origin, series):
        self.store, self.origin, self.series = store, origin, series

    def __len__(self) -> int:
        return len(self.origin)

    @property
    def x(self) -> WindowView:
        return WindowView(self.store, self.origin, self.series, "x")

    @property
    def y(self) -> WindowView:
        return WindowView(self.store, self.origin, self.series, "y")

    def to(self, device) -> "WindowSplit":
        return WindowSplit(self.store.to(device), self.origin.to(device), self.series.to(device))

    def batches(self, indices, device=None):
        for idx in indices:
            origin, series = self.origin[idx], self.series[idx]
            yield self.store.x(origin, series), self.store.y(origin, series)


# ---------------------------------------------------------------- the dataset


@dataclass
class Windows:
    """Each split's windows: (origin, series) index arrays, origin = the global index of the first target step."""

    train: tuple
    val: tuple | None
    test: tuple
    notes: list = field(default_factory=list)


def cut_windows(lengths: list[int], lookback: int, horizon: int, val_windows: int, stride: int = 1,
                rolling: int | None = None) -> Windows:
    """Chronological windows per series (see the module's docstring); the origins are global indices into the
    concatenated series. A series too short for its test window is left out; one too short for training windows
    still gives its validation and test windows where it can. `val_windows` horizons are held out for validation;
    `rolling` (data.val_windows): that many validation windows instead of one a horizon, their origins spread evenly
    from the first held-out step to the last origin whose targets end before the test horizon (rounded to whole
    steps; overlapping when there are more windows than horizons)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if lengths else np.zeros(0, np.int64)
    train, val, test = ([], []), ([], []), ([], [])
    notes, skipped = [], 0
    for i, (s, n) in enumerate(zip(starts, lengths)):
        if n < lookback + horizon:
            skipped += 1
            continue
        test[0].append(s + n - horizon)
        test[1].append(i)
        if rolling and val_windows:
            chosen = np.unique(np.round(np.linspace(n - horizon - val_windows * horizon, n - 2 * horizon,
                                                    rolling)).astype(np.int64))[::-1]
        else:
            chosen = [n - horizon - j * horizon for j in range(1, val_windows + 1)]
        for o in chosen:
            if o >= lookback:
                val[0].append(s + o)
                val[1].append(i)
        cut = n - horizon - val_windows * horizon  # training targets end here
        origins = np.arange(lookback, cut - horizon + 1, stride)
        train[0].append(s + origins)
        train[1].append(np.full(len(origins), i))
    if skipped:
        notes.append(f"{skipped:,} series shorter than lookback + horizon = {lookback + horizon} steps are left out")
    return Windows(_indices(train), _indices(val) if val[0] else None, _indices(test), notes)


def _indices(pair) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.int64)) for p in part]) if part
                 else np.zeros(0, np.int64) for part in pair)


def fit_scaling(values: list[np.ndarray], train_ends: list[int], targets: int, season: int):
    """Per series, on its training part: (mean, std) per channel and the MASE denominator per target: the mean
    absolute change over one season (over one step where the part is no longer than a season; 1 where the part
    never changes, so that a constant series scores its errors as they are)."""
    mean, std, scale = [], [], []
    for v, end in zip(values, train_ends):
        part = v[:max(end, 1)]
        mu, sd = part.mean(0), part.std(0)
        mean.append(mu)
        std.append(np.where(sd > 0, sd, 1.0))
        m = season if end > season else 1
        diff = np.abs(part[m:, :targets] - part[:-m, :targets]) if len(part) > m else np.zeros((0, targets))
        s = diff.mean(0) if len(diff) else np.ones(targets)
        scale.append(np.where(s > 0, s, 1.0))
    return np.array(mean), np.array(std), np.array(scale)


def read_series(entry, seed: int, preprocessing: dict | None = None, task=None):
    """The DataBundle of a series table: window splits, H x K output names, the stored fit."""
    import torch

    from dlcli.data.bundle import DataBundle, Normalizer
    from dlcli.tasks import ERROR

    table = read_series_table(entry, entry.train_file)
    freq = infer_frequency(table.times, table.numeric_time, entry.season)
    problems = check_table(table, freq, entry)
    errors = [p for p in problems if p[0] == ERROR]
    if errors:
        raise DataError(errors[0][2])
    notes = [p[2] for p in problems]
    H, L, V = entry.horizon, entry.lookback, entry.val_split
    lengths = [len(t) for t in table.times]
    windows = cut_windows(lengths, L, H, V, entry.stride, entry.val_windows)
    if not len(windows.train[0]):
        need = L + H * (2 + V)
        raise DataError(f"{entry.train_file}: no series is long enough for a training window: each needs lookback + "
                        f"horizon x {2 + V} (train, {V} validation, test) = {need} steps, the longest has "
                        f"{max(lengths)}; lower data.lookback or data.horizon")
    train_ends = [max(n - H - V * H, 0) for n in lengths]
    mean, std, scale = fit_scaling(table.values, train_ends, table.targets, freq.season)
    K = table.targets
    values = np.concatenate(table.values) if table.values else np.zeros((0, len(table.channels)))
    series_of = np.repeat(np.arange(len(lengths)), lengths)
    scaled = (values - mean[series_of]) / std[series_of]
    store = SeriesStore(torch.tensor(scaled, dtype=torch.float32), torch.tensor(values[:, :K], dtype=torch.float32),
                        torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), dtype=torch.long),
                        torch.tensor(lengths), torch.tensor(mean, dtype=torch.float32),
                        torch.tensor(std, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                        L, H, freq.season, K, entry.normalize, known_count(entry))
    if entry.max_train_samples and len(windows.train[0]) > entry.max_train_samples:  # the latest windows
        keep = np.argsort(windows.train[0], kind="stable")[-entry.max_train_samples:]
        windows.train = (windows.train[0][np.sort(keep)], windows.train[1][np.sort(keep)])
    split = lambda pair: WindowSplit(store, torch.from_numpy(pair[0]), torch.from_numpy(pair[1]))  # noqa: E731
    channels = len(table.channels)
    names = output_names(table.channels[:K], H, task.head_levels() if hasattr(task, "head_levels") else [])
    notes = [f"frequency {freq.name} (season {freq.season}), {len(lengths):,} series, {len(windows.train[0]):,} "
             "training windows", *notes]  # a series left out is named among the notes
    stored = {"kind": "series", "frequency": freq.to_dict(), "channels": table.channels, "targets": K,
              "series": {sid: {"mean": mean[i].tolist(), "std": std[i].tolist(), "scale": scale[i].tolist(),
                               "last": freq.text(table.times[i][-1:])[0]} for i, sid in enumerate(table.ids)}}
    return DataBundle(split(windows.train), split(windows.val) if windows.val is not None else None,
                      split(windows.test), names, (window_length(entry), channels),
                      Normalizer([0.0] * channels, [1.0] * channels, False),
                      preprocessing=stored, notes=notes,
                      target={"horizon": H, "targets": table.channels[:K], "season": freq.season,
                              "series": list(table.ids)})


def output_names(targets: list[str], horizon: int, levels: list[float] = ()) -> list[str]:
    """The head's outputs, step by step: y[t+1], ..., y[t+H] (each target in turn within a step, and each quantile
    level in turn within a target: y[t+1]@0.1, y[t+1]@0.5, ...)."""
    return [f"{t}[t+{h + 1}]" + (f"@{q:g}" if levels else "") for h in range(horizon) for t in targets
            for q in (levels or [None])]


# ---------------------------------------------------------------- forecasting after a file's end


def forecast_history(loaded, path: str, state: dict) -> list[dict]:
    """`dlcli predict HISTORY.csv`: for each series in the file, the `horizon` steps after its last time, with their
    timestamps: [{"series": id, "forecast": [{"time": ..., "value": ...}, ...]}, ...]."""
    table = read_series_table(loaded.cfg.data, path, role="predict")
    x, y = history_windows(loaded.cfg.data, table, Frequency.from_dict(state["frequency"]), state, path)
    return forecast_answers(loaded.task, loaded.logits(x), y, table, Frequency.from_dict(state["frequency"]))


def history_windows(entry, table: SeriesTable, freq: Frequency, state: dict, source: str):
    """(inputs (series, lookback, channels), target rows) of the window after each series' last step: what predict
    and serve run through the model. A series the run trained on keeps its stored scaling; one it has not seen is
    scaled on its own history (the run has no other statistics for it)."""
    import torch

    from dlcli.tasks import ERROR

    table, ahead = split_ahead(entry, table, freq, source)
    errors = [p for p in check_table(table, freq, entry) if p[0] == ERROR]
    if errors:
        raise DataError(errors[0][2])
    L, H, K = entry.lookback, entry.horizon, table.targets
    short = [sid for sid, t in zip(table.ids, table.times) if len(t) < L]
    if short:
        raise DataError(f"{source}: series '{short[0]}' has fewer than lookback = {L} steps: a forecast reads the "
                        f"last {L}")
    mean, std, scale = series_scaling(table, state, freq)
    lengths = [len(t) for t in table.times]
    # room for H steps after each series' end, NaN: the origin's window reads the history, the targets are unknown
    scaled, raw, starts, at = [], [], [], 0
    for i, v in enumerate(table.values):
        starts.append(at)
        after = np.zeros((H, v.shape[1]))
        if ahead is not None:  # the horizon's inputs known ahead, scaled as the history's
            after[:, -ahead[i].shape[1]:] = (ahead[i] - mean[i][-ahead[i].shape[1]:]) / std[i][-ahead[i].shape[1]:]
        scaled.append(np.vstack([(v - mean[i]) / std[i], after]))
        raw.append(np.vstack([v[:, :K], np.full((H, K), np.nan)]))
        at += len(v) + H
    store = SeriesStore(torch.tensor(np.concatenate(scaled), dtype=torch.float32),
                        torch.tensor(np.concatenate(raw), dtype=torch.float32), torch.tensor(starts),
                        torch.tensor(lengths), torch.tensor(mean, dtype=torch.float32),
                        torch.tensor(std, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                        L, H, freq.season, K, entry.normalize, known_count(entry))
    origin = torch.tensor([s + n for s, n in zip(starts, lengths)])
    series = torch.arange(len(lengths))
    return store.x(origin, series), store.y(origin, series)


def split_ahead(entry, table: SeriesTable, freq: Frequency, source: str):
    """(the history, each series' inputs known ahead over the horizon (horizon, known channels) or None): with inputs
    known ahead, each series of a history file ends with the horizon's rows, their targets empty and their known
    columns given; those rows are taken off the history."""
    known = known_count(entry)
    if not known:
        return table, None
    H, K = entry.horizon, table.targets
    names = [*entry.known_ahead, *entry.calendar]
    ahead, cut = [], []
    for sid, t, v, rows in zip(table.ids, table.times, table.values, table.rows):
        given = ~np.isnan(v[:, :K]).all(axis=1)
        name = f"series '{sid}'" if entry.id_column else "the series"
        if not given.any():
            raise DataError(f"{source}: {name} has no value of {', '.join(table.channels[:K])}")
        last = int(np.flatnonzero(given)[-1]) + 1
        future = v[last:last + H]
        want = freq.text(freq.after(t[last - 1], H))
        if len(future) < H:
            raise DataError(f"{source}: {name} needs the {H} rows after its last value ({want[0]} to {want[-1]}) "
                          f"with {', '.join(names)} known ahead and {', '.join(table.channels[:K])} empty; "
                          f"{len(future)} given")
        if freq.text(t[last:last + H]) != want:
            raise DataError(f"{source}: {name}'s rows after its last value should be {want[0]} to {want[-1]}, one "
                          f"step apart; found {freq.text(t[last:last + 1])[0]} to "
                          f"{freq.text(t[last + H - 1:last + H])[0]}")
        gap = np.flatnonzero(np.isnan(future[:, -known:]).any(axis=1))
        if len(gap):
            column = table.channels[len(table.channels) - known + int(np.flatnonzero(np.isnan(
                future[gap[0], -known:]))[0])]
            raise DataError(f"{table.where(int(rows[last + gap[0]]))}, column '{column}': {name} needs '{column}' "
                          "known ahead for every step of the horizon")
        ahead.append(future[:, -known:])
        cut.append(last)
    return SeriesTable(table.ids, [t[:c] for t, c in zip(table.times, cut)], [v[:c] for v, c in zip(table.values, cut)],
                       [r[:c] for r, c in zip(table.rows, cut)], table.channels, table.targets, table.numeric_time,
                       table.where, table.source), ahead


def series_scaling(table: SeriesTable, state: dict, freq: Frequency):
    """(mean, std, MASE scale) per series of the table: stored for a series the run trained on, else fitted on the
    series' whole history."""
    stored = state["series"]
    mean, std, scale = [], [], []
    for sid, v in zip(table.ids, table.values):
        known = stored.get(sid)
        if known is not None:  # the scaling the series trained with
            mean.append(known["mean"]), std.append(known["std"]), scale.append(known["scale"])
        else:
            fm, fs, fc = fit_scaling([v], [len(v)], table.targets, freq.season)
            mean.append(fm[0]), std.append(fs[0]), scale.append(fc[0])
    return np.array(mean), np.array(std), np.array(scale)


def forecast_answers(task, out, y, table: SeriesTable, freq: Frequency | None) -> list[dict]:
    """Each series' forecast as predict answers it; freq None: the series came without times, and each step is
    numbered (1 = the step after the last one given) instead."""
    pred = task.forecasts(out, y)
    levels = task.levels()
    bands = task.quantile_forecasts(out, y) if levels else None
    K, H = table.targets, pred.shape[1]
    targets = table.channels[:K]

    def quantiles(i, h):  # {"0.1": value, ...}, or per target with several
        if K == 1:
            return {f"{q:g}": float(bands[i, h, 0, j]) for j, q in enumerate(levels)}
        return {f"{q:g}": {name: float(bands[i, h, k, j]) for k, name in enumerate(targets)}
                for j, q in enumerate(levels)}

    results = []
    for i, sid in enumerate(table.ids):
        given = np.flatnonzero(~np.isnan(table.values[i][:, :K]).all(axis=1))  # rows after it: inputs known ahead
        last = table.times[i][given[-1] if len(given) else -1]
        when = ([{"time": t} for t in freq.text(freq.after(last, H))] if freq is not None
                else [{"step": h + 1} for h in range(H)])
        steps = [{**w, "value": (float(pred[i, h, 0]) if K == 1 else
                                 {name: float(pred[i, h, k]) for k, name in enumerate(targets)}),
                  **({"quantiles": quantiles(i, h)} if levels else {})}
                 for h, w in enumerate(when)]
        results.append({"series": sid, "forecast": steps})
    return results


# ---------------------------------------------------------------- a window in, the forecast out (export)


SCALING_INPUTS = ("series_mean", "series_std")  # an exported graph's inputs beside the window


def window_model(model, task, entry, season: int):
    """The model with the run's preprocessing around it, as one module for export: (window (N, lookback,
    channels) in the series' own units, series_mean and series_std (N, channels): the series' scaling) -> the
    forecast (N, horizon, targets) in the targets' own units. The per-window normalisation is inside; the
    per-series scaling is an input, since a window alone does not tell its series' statistics."""
    import torch
    from torch import nn

    L, H, K = entry.lookback, entry.horizon, len(entry.target_list())
    if entry.normalize == "season" and L < season:
        raise DataError(f"data.normalize: season starts each forecast from last season's values, {season} steps back, "
                        f"which a window of lookback = {L} steps does not hold: an exported model reads the window "
                        f"alone (retrain with lookback >= {season} to export; predict and serve read whole histories)")
    weight, mid, Q = task._weight, task._mid, len(task.head_levels()) or 1
    offsets = task._offsets  # conformal intervals: constants of the graph
    if weight != 1.0 and L < season:
        raise DataError(f"task.blend: the forecast mixes in last season's values, {season} steps back, which a window "
                        f"of lookback = {L} steps does not hold: an exported model reads the window alone (retrain "
                        f"with lookback >= {season} to export; predict and serve read whole histories)")
    h = torch.arange(H)
    before = L + h - season * (h // season + 1)  # each step's value one season earlier, inside the window
    known = known_count(entry)
    span = torch.arange(window_length(entry))
    channels = len(entry.target_list()) + len(entry.covariates) + known
    unknown = (span >= L)[:, None] & (torch.arange(channels) < channels - known)[None, :]  # after the origin

    class WindowForecast(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("before", before)
            self.register_buffer("unknown", unknown)

        def forward(self, window, series_mean, series_std):
            z = (window.float() - series_mean[:, None]) / series_std[:, None]
            level = z[:, :L].mean(1)
            x = z - level[:, None] if entry.normalize in ("window", "season") else z
            if known:  # only the channels known ahead are read after the window's last step
                x = torch.where(self.unknown, torch.zeros_like(x), x)
            out = self.model(x).float().reshape(-1, H, K, Q)
            if entry.normalize == "season":
                base = z[:, self.before, :K]
            elif entry.normalize == "window":
                base = level[:, None, :K].expand(-1, H, -1)
            else:
                base = torch.zeros_like(out[..., 0])
            naive = window[:, self.before, :K].float() if weight != 1.0 else None
            q = task.in_units(out, base, series_mean[:, :K], series_std[:, :K], naive, weight, mid, task._spread,
                              offsets)
            return q if q.shape[-1] > 1 else q[..., 0]

    return WindowForecast().eval()


def window_inputs(split: WindowSplit, limit: int):
    """((window in the series' units, series mean, series std), target rows) of up to `limit` of a split's
    windows: what an exported model takes, and what scores its forecast the task's way."""
    store = split.store
    origin, series = split.origin[:limit], split.series[:limit]
    mean, std = store.mean[series], store.std[series]
    window = store.scaled[origin[:, None] + store._back] * std[:, None] + mean[:, None]
    return (window.contiguous(), mean.contiguous(), std.contiguous()), store.y(origin, series)


def export_description(entry, state: dict) -> tuple[dict, dict]:
    """(what an exported model's metadata says of its inputs, the sidecar file: each trained series' scaling and
    how to fill the inputs)."""
    freq = Frequency.from_dict(state["frequency"])
    known = known_count(entry)
    meta = {"lookback": entry.lookback, "horizon": entry.horizon, "frequency": freq.name, "season": freq.season,
            "normalize": entry.normalize, "input_channels": list(state["channels"]),
            **({"known_ahead": list(state["channels"][-known:]), "input_steps": window_length(entry)} if known
               else {}),
            "scaling_inputs": list(SCALING_INPUTS)}
    sidecar = {**meta, "series": {sid: {"mean": s["mean"], "std": s["std"], "last": s["last"]}
                                  for sid, s in state["series"].items()},
               "how": "input: a series' last `lookback` steps (N, lookback, channels; targets first, then covariates) "
                      "in their own units; series_mean and series_std (N, channels): the series' entry under "
                      "`series` (the scaling it trained with), or for a series the run has not seen each channel's "
                      "mean and standard deviation (population; 1 where it is 0) over all of its history; forecast: "
                      "the `horizon` steps after the window's last, one `frequency` apart" + (
                          "; with `known_ahead` channels the input spans lookback + horizon steps (`input_steps`): "
                          "the horizon's rows give those channels (calendar ones: sin and cos of 2 pi x the step's "
                          "place in its cycle: (month - 1) / 12, weekday (Monday 0) / 7, (day - 1) / 31, hour / "
                          "24), their other channels are not read" if known else "")}
    return meta, sidecar


def survey_series(entry, report) -> None:
    """`dlcli data check` of a series config: duplicate timestamps and missing values (errors), gaps, series too
    short for a window and constant series (warnings), and a `series` section: frequency, lengths, windows."""
    from dlcli.tasks import ERROR, INFO, WARNING

    table = read_series_table(entry, entry.train_file)
    freq = infer_frequency(table.times, table.numeric_time, entry.season)
    for severity, check, message in check_table(table, freq, entry):
        report.add(severity, check, message, [entry.train_file])
    H, L, V = entry.horizon, entry.lookback, entry.val_split
    lengths = [len(t) for t in table.times]
    windows = cut_windows(lengths, L, H, V, entry.stride, entry.val_windows)
    few = sum(1 for n in lengths if L + H <= n < L + H * (2 + V))
    if few:
        report.add(INFO, "no-training-window", f"{few:,} series shorter than lookback + horizon x {2 + V} = "
                   f"{L + H * (2 + V)} steps give test (and validation) windows but no training window")
    if not len(windows.train[0]):
        report.add(ERROR, "no-training-window",
                   f"no series is long enough for a training window (lookback + horizon x {2 + V} = "
                   f"{L + H * (2 + V)} steps; the longest has {max(lengths)}): lower data.lookback or data.horizon")
    report.sections["series"] = {
        "series": len(lengths), "frequency": freq.name, "season": freq.season, "steps": {
            "min": min(lengths), "max": max(lengths), "total": sum(lengths)},
        "first": freq.text([min(t[0] for t in table.times)])[0],
        "last": freq.text([max(t[-1] for t in table.times)])[0],
        "windows": {"train": len(windows.train[0]), "val": len(windows.val[0]) if windows.val else 0,
                    "test": len(windows.test[0])},
        "inputs": {"past_only": table.channels[:len(table.channels) - known_count(entry)],
                   "known_ahead": table.channels[len(table.channels) - known_count(entry):]}}
