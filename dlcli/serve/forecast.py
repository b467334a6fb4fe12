"""Serving a forecast run: a JSON series (or several) in, the `horizon` steps after each out.

A request is read into the table `dlcli predict HISTORY.csv` reads from a file (dlcli.data.series), so that both
cut the same window, scale it the same way (a series the run trained on, named by `id`, keeps its stored scaling;
another is scaled on the history sent) and answer the same forecast. Times are optional: with them the series is
sorted, checked against the run's frequency (duplicates are a 422) and its forecast is timestamped; without them the
steps are taken in the order sent and the forecast's steps are numbered.
"""

from __future__ import annotations

import numpy as np

from dlcli.errors import DlcliError
from dlcli.serve.guard import ApiError

SEND = ('JSON: one series as a list of numbers (or of [channel values] rows), or {"id": "...", "series": [{"time": '
        '"2024-01-31", "value": 12.5}, ...]} (value: a number, or a list of the channels\' values; time and id '
        'optional), or a list of such objects')


def max_steps(lookback: int) -> int:
    """The most steps of history a served series may have: far more than the window it forecasts from, enough to
    scale a series the run has not seen on a long history."""
    return max(2_000, 10 * lookback)


def json_room(model, max_items: int) -> int:
    """Bytes of JSON that max_items series of the longest history take: 48 a value (a step object's keys too)."""
    channels = len(model.state["channels"])
    return max_items * max_steps(model.loaded.cfg.data.lookback) * 48 * (channels + 1)


def max_objects(model, max_items: int) -> int:
    """JSON objects a request may hold: one a step, one a series, and the request's own."""
    return max_items * (max_steps(model.loaded.cfg.data.lookback) + 1) + 1


def input_spec(model) -> dict:
    data = model.loaded.cfg.data
    return {"lookback": data.lookback, "horizon": data.horizon, "channels": model.state["channels"],
            "targets": model.state["channels"][:model.state["targets"]], "frequency": model.state["frequency"]["name"],
            "series": sorted(model.state["series"]), "max_steps": max_steps(data.lookback), "send": SEND}


def forecast_inputs(model, data, max_items: int):
    """(names, model inputs, target rows, the table, the frequency of its times or None) of a parsed JSON body."""
    from dlcli.data.series import Frequency, SeriesTable, history_windows

    items = _series_items(data)
    if not items:
        raise ApiError(400, "no series in the request")
    if len(items) > max_items:
        raise ApiError(413, f"{len(items)} series in one request, over this server's limit of {max_items} "
                            "(--max-items)")
    entry, state = model.loaded.cfg.data, model.state
    if entry.known_ahead or entry.calendar:
        raise ApiError(422, "this run reads inputs known ahead (" + ", ".join([*entry.known_ahead, *entry.calendar])
                       + "): forecast it with dlcli predict HISTORY.csv, whose file gives the horizon's rows")
    channels, K = list(state["channels"]), int(state["targets"])
    run_freq = Frequency.from_dict(state["frequency"])
    limit = max_steps(entry.lookback)
    names, times, values, timed = [], [], [], []
    for i, item in enumerate(items):
        where = "series" if len(items) == 1 else f"series[{i}]"
        name, steps = (item.get("id"), item.get("series")) if isinstance(item, dict) else (None, item)
        if name is not None and not isinstance(name, (str, int)):
            raise ApiError(422, f"{where}.id: a string naming the series, not {type(name).__name__}")
        if not isinstance(steps, list) or not steps:
            raise ApiError(422, f"{where}: a list of steps (numbers, [channel values] rows or {{\"time\", \"value\"}} "
                                "objects), not " + ("an empty list" if steps == [] else type(steps).__name__))
        if len(steps) > limit:
            raise ApiError(413, f"{where}: {len(steps):,} steps, over this server's limit of {limit:,} a series "
                                f"(the forecast reads the last {entry.lookback}; send fewer)")
        t, v = _steps(steps, len(channels), where)
        names.append(str(name) if name is not None else where)
        times.append(t)
        values.append(v)
        timed.append(t is not None)
    if any(timed) and not all(timed):
        raise ApiError(422, "some series have times and some not: send times with every series or with none")
    freq = run_freq if all(timed) else None
    parsed = []
    for i, t in enumerate(times):
        if freq is None:
            parsed.append(np.arange(len(values[i]), dtype=np.float64))
            continue
        parsed.append(_times(t, run_freq, names[i]))
    # each series in time order, as a file is read; rows number the steps across series for messages
    rows, at = [], 0
    for i, t in enumerate(parsed):
        order = np.argsort(t, kind="stable")
        parsed[i], values[i] = t[order], values[i][order]
        rows.append(at + order)
        at += len(t)
    owner = np.repeat(np.arange(len(parsed)), [len(t) for t in parsed])
    starts = np.concatenate([[0], np.cumsum([len(t) for t in parsed])[:-1]])

    def where_row(row: int) -> str:
        s = int(owner[row])
        return f"{names[s]}[{row - int(starts[s])}]"

    table = SeriesTable(names, parsed, values, rows, channels, K, freq is None or run_freq.numeric, where_row,
                        "request")
    check = freq or Frequency("steps", seconds=1.0, season=run_freq.season, numeric=True)
    try:
        x, y = history_windows(entry, table, check, state, "request")
    except DlcliError as err:
        raise ApiError(422, str(err)) from None
    return names, x, y, table, freq


def _series_items(data) -> list:
    """The request's series: one (a list of steps, or an object with `series`) or a list of objects."""
    if isinstance(data, dict):
        if "series" not in data:
            raise ApiError(400, "send " + SEND)
        return [data]
    if isinstance(data, list):
        if data and all(isinstance(d, dict) and "series" in d for d in data):
            return data
        return [data]
    raise ApiError(400, "send " + SEND)


def _steps(steps: list, channels: int, where: str):
    """(times as sent or None, float64 (steps, channels)) of one series' steps."""
    times, values = [], np.empty((len(steps), channels))
    for j, step in enumerate(steps):
        if isinstance(step, dict):
            if "value" not in step:
                raise ApiError(422, f"{where}[{j}]: a step object needs a \"value\" (and optionally a \"time\")")
            times.append(step.get("time"))
            step = step["value"]
        else:
            times.append(None)
        row = step if isinstance(step, list) else [step]
        if len(row) != channels:
            raise ApiError(422, f"{where}[{j}]: {len(row)} value(s), but the run reads {channels} channel(s) a step "
                                "(targets first, then covariates)")
        for k, cell in enumerate(row):
            if cell is None:  # NaN or null: check_table names the first gap as predict does
                values[j, k] = np.nan
            elif isinstance(cell, bool) or not isinstance(cell, (int, float)):
                raise ApiError(422, f"{where}[{j}]: {str(cell)[:40]!r} is not a number")
            else:
                values[j, k] = float(cell)
    given = values[~np.isnan(values)]
    if not (np.abs(given) <= np.finfo(np.float32).max).all():  # infinite once a float32, as the model reads it
        raise ApiError(422, f"{where}: a value beyond float32's range (a model input holds at most about 3.4e38)")
    known = [t is not None for t in times]
    if any(known) and not all(known):
        raise ApiError(422, f"{where}[{known.index(not known[0])}]: a step without a \"time\" in a series whose "
                            "other steps have one (give every step its time, or none)")
    return (times if all(known) else None), values


def _times(times: list, freq, name: str) -> np.ndarray:
    """The times as the run's frequency reads them: dates for a dated run, numbers for a numbered one."""
    import pyarrow as pa

    from dlcli.data.series import parse_times

    try:
        column = pa.array(times)
    except (pa.ArrowException, TypeError, ValueError):
        raise ApiError(422, f"{name}: times mix numbers and text: send ISO 8601 dates (or step numbers) for all") \
            from None
    try:
        parsed, numeric = parse_times(column, lambda i: f"{name}[{i}]")
    except DlcliError as err:
        raise ApiError(422, str(err)) from None
    if numeric != freq.numeric:
        want = "numbers counting steps" if freq.numeric else "dates or timestamps (ISO 8601, e.g. 2024-01-31)"
        raise ApiError(422, f"{name}: the run's times are {want}")
    return parsed
