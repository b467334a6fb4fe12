"""`dlcli evaluate RUN --backtest K`: rolling-origin backtesting of a forecast run.

K forecast origins per series, each a horizon before the next, the last being the run's own test origin: window
k (1 = the earliest) forecasts steps [n - (K - k + 1) H, n - (K - k) H) of a series of n steps. Every window is
forecast by a model that never read its targets, nor anything after its origin:

- without refitting (the default): one model, trained with the run's config on each series less its last (K - 1)
  horizons (so the earliest window is that model's own test horizon; its validation lies before it), forecasts all
  K windows from the history up to each origin;
- with `--refit`: window k's model is trained with the run's config on each series less its last K - k horizons
  (the run itself for the last window), so every forecast comes from a model that saw all the history before it.

Each window is scored as evaluate scores a test split (dlcli.tasks.forecast: MAE, RMSE, sMAPE, MASE over the
training part's seasonal change of the model that forecasts it), beside the seasonal naive forecast from the same
origin; the report lists every window and their mean, and backtest.png draws the windows of the first series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcli import rundirs as runs
from dlcli.errors import BAD_INPUT, DlcliError

METRICS = ("mae", "rmse", "smape", "mase")
PLOTTED = 4  # series drawn in backtest.png


def backtest_run(run: Path, windows: int, refit: bool = False, device: str = "auto", say=print) -> dict:
    """Backtest a forecast run over `windows` rolling origins; writes backtest.json and backtest.png into the run."""
    from dlcli.data.series import Frequency, read_series_table
    from dlcli.loaded import load_run, read_data_info

    info = read_data_info(run)
    if (info.get("preprocessing") or {}).get("kind") != "series":
        raise DlcliError(f"--backtest: run {run.name} is not a forecast run (dataset: series)", BAD_INPUT)
    if windows < 1:
        raise DlcliError(f"--backtest {windows}: give the number of forecast origins, 1 or more", BAD_INPUT)
    loaded = load_run(run, "best", device)
    entry = loaded.cfg.data
    H, L = entry.horizon, entry.lookback
    table = read_series_table(entry, entry.train_file)
    freq = Frequency.from_dict(info["preprocessing"]["frequency"])
    shortest = min(len(t) for t in table.times)
    if shortest - windows * H < L:
        raise DlcliError(f"--backtest {windows}: the earliest origin lies {windows} horizons of {H} steps before the "
                         f"end, leaving the shortest series {shortest - windows * H} steps of history, fewer than "
                         f"lookback = {L}; ask for fewer windows", BAD_INPUT)
    folder = run / "backtest"
    models, found = {}, []
    for k in range(1, windows + 1):
        back = (windows - k) * H  # steps after this window's last target
        cut = back if refit else (windows - 1) * H  # steps the model forecasting this window never saw
        if cut not in models:
            models[cut] = loaded if cut == 0 else _refit(loaded, table, freq, cut, folder, say)
        found.append(_score_window(models[cut], table, freq, back, k))
    mean = {who: {m: float(np.mean([w[who][m] for w in found])) for m in METRICS}
            for who in ("model", "seasonal_naive")}
    report = {"run_id": run.name, "windows": windows, "horizon": H, "refit": refit,
              "models_trained": sum(1 for c in models if c), "per_window": found, "mean": mean,
              "windows_beating_seasonal_naive": sum(w["model"]["mase"] < w["seasonal_naive"]["mase"] for w in found)}
    report["files"] = {"report": str(run / "backtest.json"), **_plot(report, table, freq, run)}
    runs.write_json(run / "backtest.json", report)
    return report


def _cut(table, steps: int):
    """The table without each series' last `steps` steps."""
    from dlcli.data.series import SeriesTable

    keep = [max(len(t) - steps, 0) for t in table.times]
    return SeriesTable(table.ids, [t[:n] for t, n in zip(table.times, keep)],
                       [v[:n].copy() for v, n in zip(table.values, keep)], [r[:n] for r, n in zip(table.rows, keep)],
                       table.channels, table.targets, table.numeric_time, table.where, table.source)


def _refit(loaded, table, freq, cut: int, folder: Path, say):
    """A run trained with `loaded`'s config on the table less each series' last `cut` steps."""
    import yaml

    import dlcli
    from dlcli.loaded import load_run

    entry = loaded.cfg.data
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train-less-{cut}.csv"
    part = _cut(table, cut)
    read = len(table.channels) - 2 * len(entry.calendar)  # the file's own columns; calendar ones come from dates
    columns = [entry.time_column] + ([entry.id_column] if entry.id_column else []) + list(table.channels[:read])
    lines = [",".join(columns)]
    for sid, times, values in zip(part.ids, part.times, part.values):
        for t, row in zip(freq.text(times) if not table.numeric_time else [repr(float(x)) for x in times],
                          values[:, :read]):
            lines.append(",".join([t] + ([sid] if entry.id_column else []) + [repr(float(x)) for x in row]))
    path.write_text("\n".join(lines) + "\n")
    cfg = yaml.safe_load((loaded.path / "config.yaml").read_text())  # the run's resolved config
    cfg["data"]["train_file"] = str(path)
    cfg["name"] = f"{cfg.get('name') or 'run'}-less-{cut}"
    say(f"backtest: training on each series less its last {cut} steps ({path})")
    trained = dlcli.train(cfg, runs_dir=folder / "runs", quiet=True)
    return load_run(Path(trained.dir), "best", str(loaded.device))


def _score_window(loaded, table, freq, back: int, k: int) -> dict:
    """Window k: each series' forecast of the horizon after its first n - back - horizon steps, scored."""
    import torch

    from dlcli.data.series import history_windows
    from dlcli.loaded import read_data_info

    entry = loaded.cfg.data
    H, K = entry.horizon, table.targets
    state = read_data_info(loaded.path)["preprocessing"]
    from dlcli.data.series import known_count

    if known_count(entry):  # the horizon's rows give the inputs known ahead; their targets are hidden
        history = _cut(table, back)
        for v in history.values:
            v[-H:, :K] = np.nan
    else:
        history = _cut(table, back + H)
    x, y = history_windows(entry, history, freq, state, table.source)
    truth = np.stack([v[len(v) - back - H:len(v) - back, :K] for v in table.values])  # (series, H, K)
    y = y.clone()
    y[:, :H * K] = torch.tensor(truth.reshape(len(truth), -1), dtype=y.dtype)
    report = loaded.task.report(loaded.logits(x), y)
    first = [freq.text(t[len(t) - back - H:len(t) - back - H + 1])[0] for t in table.times]
    return {"window": k, "first_step": first[0] if len(set(first)) == 1 else first,
            "model": {m: report[m] for m in METRICS},
            "seasonal_naive": {m: report["seasonal_naive"][m] for m in METRICS},
            "per_series": [{"series": r["series"], "mase": r["mase"], "seasonal_naive_mase": r["seasonal_naive_mase"]}
                           for r in report["per_window"]],
            "forecast": loaded.task.forecasts(loaded.logits(x), y)[:PLOTTED, :, 0].tolist(),
            "naive": loaded.task._parts(y)["naive"][:PLOTTED, :, 0].tolist()}


def _plot(report: dict, table, freq, run: Path) -> dict:
    from dlcli.plots import _pyplot, _save

    plt = _pyplot()
    shown = min(len(table.ids), PLOTTED)
    H, K = report["horizon"], report["windows"]
    fig, axes = plt.subplots(shown, 1, figsize=(9, 2.8 * shown), constrained_layout=True, squeeze=False)
    for i in range(shown):
        ax, values = axes[i][0], table.values[i][:, 0]
        n = len(values)
        start = max(0, n - (K + 2) * H)
        ax.plot(range(start, n), values[start:], color="black", linewidth=1, label="actual")
        for w in report["per_window"]:
            steps = range(n - (K - w["window"] + 1) * H, n - (K - w["window"]) * H)
            ax.plot(steps, w["forecast"][i], color="tab:blue", label="dlcli" if w["window"] == 1 else None)
            ax.plot(steps, w["naive"][i], color="tab:orange", linestyle="--",
                    label="seasonal naive" if w["window"] == 1 else None)
            ax.axvline(steps[0], color="grey", linewidth=0.5)
        ax.set_title(f"{table.ids[i]}: {K} windows ({'refit each' if report['refit'] else 'one model'})", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    path = run / "backtest.png"
    _save(fig, path)
    return {"plot": str(path)}


def render(report: dict, console) -> None:
    from rich.table import Table

    how = (f"refit for each window ({report['models_trained']} models trained)" if report["refit"]
           else "one model trained before the first window, not refit")
    table = Table(title=f"run {report['run_id']}: {report['windows']} rolling origins, horizon {report['horizon']}; "
                        f"{how}")
    table.add_column("window", justify="right")
    table.add_column("first step")
    for m in METRICS:
        table.add_column(m + (" (%)" if m == "smape" else ""), justify="right")
        table.add_column(f"naive {m}", justify="right")
    rows = [(str(w["window"]), str(w["first_step"]) if isinstance(w["first_step"], str) else "-", w)
            for w in report["per_window"]] + [("mean", "", report["mean"])]
    for name, first, w in rows:
        table.add_row(name, first, *[f"{w[who][m]:.4g}" for m in METRICS for who in ("model", "seasonal_naive")])
    console.print(table)
    console.print(f"{report['windows_beating_seasonal_naive']} of {report['windows']} windows beat the seasonal naive "
                  "forecast (lower MASE)")
    console.print(f"wrote {report['files']['report']} and {report['files']['plot']}", soft_wrap=True)
