"""Forecasting public series: configs/series_forecast.yaml against seasonal naive, Holt-Winters and Theta (MASE).

    python benchmarks/forecasting.py                      # every series, the shipped recipe, 3 seeds averaged
    python benchmarks/forecasting.py --validation         # every candidate recipe, scored on validation horizons
    python benchmarks/forecasting.py --series airline --seeds 0   # a quick look
    python benchmarks/forecasting.py --candidates "linear+mlp, quantiles"   # candidates on test too (reported)

A recipe with task.quantiles also gets the share of the test horizon inside its 0.1-0.9 interval and that interval's
MSIS (the seeds' quantiles averaged).

The series are read from files inside installed wheels (no downloads), in the benchmark-only environment
--bench-python (default /work/bench-venv/bin/python: statsmodels and aeon, which pin versions dlcli does not need);
the classical forecasts are made there too. dlcli trains in this interpreter, through dlcli.train and predict.

Series (frequency, steps, horizon H, lookback L):
  airline     monthly, 144, H 12, L 36   aeon's Airline (Box & Jenkins' international passengers, 1949-1960)
  elec_equip  monthly, 257, H 12, L 36   statsmodels' elec_equip (euro-area electrical equipment orders, 1995-)
  elnino      monthly, 732, H 12, L 36   statsmodels' elnino (sea surface temperature off Peru, 1950-2010)
  gdp         quarterly, 203, H 8, L 12  statsmodels' macrodata realgdp (US real GDP, 1959-2009)
  unemp       quarterly, 203, H 8, L 12  statsmodels' macrodata unemp (US unemployment rate)
  solar       half-hourly, 289, H 48, L 48   aeon's solar (UK solar generation, 6 days of May 2021)

Test: the last H steps of each series. Every method sees the steps before them; MASE is its mean absolute error
over the test horizon divided by the in-sample mean absolute error of the seasonal naive forecast (season 12, 4,
48) on those steps, the M4 definition, the same for every method. dlcli trains on the whole file: its own split
keeps the test horizon out of training and uses the horizon before it for validation (best.pt, early stopping);
its forecast is `dlcli predict` on the file without its test horizon, averaged over the seeds' runs.

--validation drops the test horizon from every series first, so the "test" above is the horizon before it, which
no shipped number is computed on: the recipe in configs/series_forecast.yaml was chosen this way.
Holt-Winters: additive damped trend, multiplicative season (additive where the series has zeros); Theta:
statsmodels' ThetaModel with the series' period. Figures taken on a shared, loaded 2-core machine are about
accuracy, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SERIES = {  # name: (frequency, season, horizon, lookback)
    "airline": ("monthly", 12, 12, 36), "elec_equip": ("monthly", 12, 12, 36), "elnino": ("monthly", 12, 12, 36),
    "gdp": ("quarterly", 4, 8, 12), "unemp": ("quarterly", 4, 8, 12), "solar": ("half-hourly", 48, 48, 48),
}

# The candidates --validation compares (each with the example config's optimizer and training); the shipped
# config is the one with the lowest mean validation MASE.
LINEAR_MLP = {"type": "sequential", "layers": ["flatten", {"residual": [{"dense": {"units": 64, "activation": "relu"}},
                                                                       {"dense": "H"}]}]}
CANDIDATES = {
    "linear": {"model": {"type": "sequential", "layers": ["flatten", {"dense": "H"}]}},
    "mlp": {"model": {"type": "mlp", "hidden": [64]}},
    "linear+mlp": {"model": LINEAR_MLP},
    "linear+mlp, series scaling": {"model": LINEAR_MLP, "data.normalize": "series"},
    "linear, season base": {"model": {"type": "sequential", "layers": ["flatten", {"dense": "H"}]},
                            "data.normalize": "season"},
    "linear+mlp, season base": {"model": LINEAR_MLP, "data.normalize": "season"},
    "mlp, season base": {"model": {"type": "mlp", "hidden": [64]}, "data.normalize": "season"},
    "linear+mlp 128, dropout 0.2": {"model": {"type": "sequential", "layers": ["flatten", {"residual": [
        {"dense": {"units": 128, "activation": "relu"}}, {"dropout": 0.2}, {"dense": "H"}]}]}},
    "linear+mlp, lr 0.001": {"model": LINEAR_MLP, "optimizer.lr": 0.001},
    "linear+mlp, mse": {"model": LINEAR_MLP, "task.loss": "mse"},
    "linear+mlp, blend": {"model": LINEAR_MLP, "task.blend": "seasonal_naive"},
    "linear+mlp, quantiles": {"model": LINEAR_MLP, "task.quantiles": [0.1, 0.5, 0.9]},
    "linear+mlp, quantiles, blend": {"model": LINEAR_MLP, "task.quantiles": [0.1, 0.5, 0.9],
                                     "task.blend": "seasonal_naive"},
    # 8 rolling validation windows over 2 held-out horizons (a steadier val_loss and blend weight)
    "linear+mlp, 8 val windows": {"model": LINEAR_MLP, "data.val_split": 2, "data.val_windows": 8},
    "linear+mlp, blend, 8 val windows": {"model": LINEAR_MLP, "task.blend": "seasonal_naive", "data.val_split": 2,
                                         "data.val_windows": 8},
    "linear+mlp, quantiles, blend, 8 val windows": {"model": LINEAR_MLP, "task.quantiles": [0.1, 0.5, 0.9],
                                                    "task.blend": "seasonal_naive", "data.val_split": 2,
                                                    "data.val_windows": 8},
    # the point network as shipped, intervals from its errors over every training and validation window
    "linear+mlp, conformal": {"model": LINEAR_MLP, "task.quantiles": [0.1, 0.5, 0.9], "task.intervals": "conformal"},
    "linear+mlp, blend, 8 val windows, conformal": {"model": LINEAR_MLP, "task.quantiles": [0.1, 0.5, 0.9],
                                                    "task.intervals": "conformal", "task.blend": "seasonal_naive",
                                                    "data.val_split": 2, "data.val_windows": 8},
}


# ---------------------------------------------------------------- the benchmark-only side (statsmodels, aeon)


def read_public_series() -> dict:
    """{name: (ISO times, values)} from the files in the installed aeon and statsmodels wheels."""
    import aeon
    import pandas as pd
    import statsmodels

    aeon_data = Path(aeon.__file__).parent / "datasets" / "data"
    sm_data = Path(statsmodels.__file__).parent / "datasets"
    out = {}
    air = pd.read_csv(aeon_data / "Airline" / "Airline.csv")
    out["airline"] = (pd.to_datetime(air["Date"], format="%Y-%m"), air["Passengers"])
    elec = pd.read_csv(sm_data / "elec_equip" / "elec_equip.csv")
    out["elec_equip"] = (pd.to_datetime(elec["DATE"], format="%b-%d-%Y"), elec.iloc[:, 1])
    nino = pd.read_csv(sm_data / "elnino" / "elnino.csv")
    months = nino.melt(id_vars="YEAR", var_name="month", value_name="value")
    months["date"] = pd.to_datetime(months["YEAR"].astype(int).astype(str) + "-" + months["month"], format="%Y-%b")
    months = months.sort_values("date")
    out["elnino"] = (months["date"], months["value"])
    macro = pd.read_csv(sm_data / "macrodata" / "macrodata.csv")
    quarters = pd.to_datetime({"year": macro["year"].astype(int), "month": (macro["quarter"].astype(int) - 1) * 3 + 1,
                               "day": 1})
    out["gdp"] = (quarters, macro["realgdp"])
    out["unemp"] = (quarters, macro["unemp"])
    solar = pd.read_csv(aeon_data / "solar" / "solar.csv")
    out["solar"] = (pd.to_datetime(solar["datetime_gmt"], utc=True).dt.tz_localize(None), solar["solar_gen"])
    return {k: ([t.strftime("%Y-%m-%d %H:%M") for t in times], [float(v) for v in values])
            for k, (times, values) in out.items()}


def classical(history: np.ndarray, season: int, horizon: int) -> dict:
    """Seasonal naive, Holt-Winters and Theta forecasts of the `horizon` steps after `history`."""
    import warnings

    from statsmodels.tsa.forecasting.theta import ThetaModel
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    h = np.arange(horizon)
    naive = history[len(history) - season + h % season]
    positive = bool((history > 0).all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hw = ExponentialSmoothing(history, trend="add", damped_trend=True, seasonal="mul" if positive else "add",
                                  seasonal_periods=season, initialization_method="estimated").fit()
        theta = ThetaModel(history, period=season, method="additive" if not positive else "auto").fit()
    found = {"seasonal naive": naive.tolist(), "Holt-Winters": np.asarray(hw.forecast(horizon)).tolist(),
             "Theta": np.asarray(theta.forecast(horizon)).tolist()}
    return {**found, **nixtla(history, season, horizon)}


def nixtla(history: np.ndarray, season: int, horizon: int) -> dict:
    """statsforecast's AutoETS, AutoTheta and SeasonalNaive of the same history, where the benchmark-only
    environment has statsforecast (pip install statsforecast); {} where it has not."""
    try:
        import pandas as pd
        from statsforecast import StatsForecast
        from statsforecast.models import AutoETS, AutoTheta, SeasonalNaive
    except ImportError:
        return {}
    frame = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(history)), "y": history})
    models = [AutoETS(season_length=season), AutoTheta(season_length=season), SeasonalNaive(season_length=season)]
    out = StatsForecast(models=models, freq=1, n_jobs=1).forecast(df=frame, h=horizon)
    return {f"statsforecast {name}": out[name].to_numpy().tolist() for name in ("AutoETS", "AutoTheta",
                                                                                "SeasonalNaive")}


def prepare(work: Path, validation: bool) -> None:
    """Write each series as work/<name>.csv (the file dlcli trains on) and the classical forecasts of its test
    horizon into work/classical.json."""
    found, forecasts = read_public_series(), {}
    for name, (times, values) in found.items():
        _, season, horizon, _ = SERIES[name]
        if validation:  # the test horizon is never read: the last horizon left is validation's
            times, values = times[:-horizon], values[:-horizon]
        lines = ["date,value"] + [f"{t},{v!r}" for t, v in zip(times, values)]
        (work / f"{name}.csv").write_text("\n".join(lines) + "\n")
        y = np.array(values)
        forecasts[name] = classical(y[:-horizon], season, horizon)
    (work / "classical.json").write_text(json.dumps(forecasts))


def neural(work: Path, seed: int = 0, steps: int = 100) -> None:
    """neuralforecast's NHITS (input = dlcli's lookback, `steps` training steps, a CPU's worth) forecasts of each
    work/<name>.csv's last horizon from the steps before it, into work/neural.json; runs in --nf-python."""
    import logging

    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.models import NHITS

    logging.disable(logging.WARNING)
    found = {}
    for name, (_, season, horizon, lookback) in SERIES.items():
        path = work / f"{name}.csv"
        if not path.is_file():
            continue
        values = np.array([float(line.split(",")[1]) for line in path.read_text().splitlines()[1:]])
        frame = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(values) - horizon), "y": values[:-horizon]})
        model = NHITS(h=horizon, input_size=lookback, max_steps=steps, scaler_type="standard", random_seed=seed,
                      enable_progress_bar=False, enable_model_summary=False, logger=False, accelerator="cpu")
        forecaster = NeuralForecast(models=[model], freq=1)
        forecaster.fit(frame)
        out = forecaster.predict()
        found[name] = {"neuralforecast NHITS": out["NHITS"].to_numpy().tolist()}
    (work / "neural.json").write_text(json.dumps(found))


# ---------------------------------------------------------------- dlcli's side


def mase(forecast, truth, history, season: int) -> float:
    scale = np.abs(history[season:] - history[:-season]).mean()
    return float(np.abs(np.asarray(forecast) - truth).mean() / scale)


def coverage(low, high, truth) -> float:
    """The share of the test horizon's true values inside [low, high]."""
    return float(((np.asarray(low) <= truth) & (truth <= np.asarray(high))).mean())


def msis(low, high, truth, history, season: int, alpha: float = 0.2) -> float:
    """M4's mean scaled interval score of [low, high] (a 1 - alpha interval): its width plus 2 / alpha x each miss,
    over the MASE denominator; lower is better, and neither a too wide nor a too narrow interval scores well."""
    low, high = np.asarray(low), np.asarray(high)
    score = high - low + 2 / alpha * (np.maximum(low - truth, 0) + np.maximum(truth - high, 0))
    return float(score.mean() / np.abs(history[season:] - history[:-season]).mean())


def dlcli_forecast(name: str, work: Path, recipe: dict, seeds: list[int], runs: Path) -> tuple[np.ndarray, dict]:
    """The mean over seeds of dlcli's forecasts of the test horizon, and of each quantile's (empty without
    task.quantiles): each run trains on the whole file, then predicts from the file without its last horizon."""
    import yaml

    import dlcli
    from dlcli.predict import predict_history

    _, season, horizon, lookback = SERIES[name]
    path = work / f"{name}.csv"
    lines = path.read_text().splitlines()
    history = work / f"{name}-history.csv"
    history.write_text("\n".join(lines[:len(lines) - horizon]) + "\n")
    base = yaml.safe_load((ROOT / "configs" / "series_forecast.yaml").read_text())
    forecasts, quantiles = [], []
    for seed in seeds:
        cfg = json.loads(json.dumps(base))
        cfg["data"].update(train_file=str(path), time_column="date", label_column="value", id_column=None,
                           lookback=lookback, horizon=horizon)
        # the example's head is 12 wide (its horizon): as wide as this series' horizon
        cfg["model"] = json.loads(json.dumps(cfg["model"]).replace('{"dense": 12}', f'{{"dense": {horizon}}}'))
        cfg["seed"] = seed
        cfg["name"] = f"{name}-{seed}"
        if recipe:  # a candidate names its task options in full, from a plain point forecast
            cfg["task"] = "forecast"
        for key, value in recipe.items():
            if key == "model":  # the head: as wide as the task's outputs (horizon x quantiles the head forecasts)
                cfg["model"] = json.loads(json.dumps(value).replace('"H"', '"outputs"'))
            else:  # data.normalize, task.loss
                section, field = key.split(".")
                if not isinstance(cfg.get(section), dict):  # task: forecast -> {type: forecast}
                    cfg[section] = {"type": cfg.get(section) or "forecast"}
                cfg[section][field] = value
        run = dlcli.train(cfg, runs_dir=runs, quiet=True)
        found = predict_history(run.dir, [str(history)])
        forecasts.append([step["value"] for step in found[0].answer["forecast"]])
        quantiles.append([step.get("quantiles", {}) for step in found[0].answer["forecast"]])
    levels = list(quantiles[0][0])
    return np.mean(forecasts, axis=0), {q: np.mean([[step[q] for step in run] for run in quantiles], axis=0)
                                        for q in levels}


def write_example(path: Path, months: int = 120, seed: int = 7) -> Path:
    """configs/series_forecast.yaml's table: three stores' monthly sales, each a level, a trend, a yearly season of
    its own shape and noise (seeded)."""
    rng = np.random.default_rng(seed)
    first = np.datetime64("2015-01", "M")
    t = np.arange(months)
    lines = ["date,store,sales"]
    for store, (level, trend, amplitude, noise) in {"north": (120, 0.6, 25, 4), "south": (80, 0.2, 12, 3),
                                                    "online": (40, 1.1, 8, 5)}.items():
        phase = rng.uniform(0, 2 * np.pi)
        season = amplitude * (np.sin(2 * np.pi * t / 12 + phase) + 0.4 * np.sin(4 * np.pi * t / 12))
        sales = level + trend * t + season + rng.normal(0, noise, months)
        lines += [f"{first + i}-01,{store},{v:.1f}" for i, v in enumerate(sales)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--validation", action="store_true", help="score every candidate recipe on validation")
    parser.add_argument("--candidates", nargs="+", default=None, help="--validation: which (default all); "
                        "without it, candidates scored on the test horizons beside the shipped config")
    parser.add_argument("--bench-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--work", default=None, help="where the series and runs go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--example", action="store_true",
                        help="write data/sales.csv (under the current folder), the example config's table")
    parser.add_argument("--nf-python", default="/work/bench-nf/bin/python",
                        help="an environment with neuralforecast for NHITS (skipped where it does not exist)")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # the benchmark-only side, in --bench-python
    parser.add_argument("--neural", help=argparse.SUPPRESS)  # NHITS, in --nf-python
    args = parser.parse_args(argv)
    if args.example:
        print(write_example(Path("data") / "sales.csv"))  # data/ under the current folder, where the config looks
        return 0
    if args.prepare:
        prepare(Path(args.prepare), args.validation)
        return 0
    if args.neural:
        neural(Path(args.neural))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # repeatable runs
    work = Path(args.work or tempfile.mkdtemp(prefix="dlcli-forecasting-"))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([args.bench_python, __file__, "--prepare", str(work)] + (["--validation"] if args.validation
                                                                                else []), check=True)
    classic = json.loads((work / "classical.json").read_text())
    if Path(args.nf_python).exists():  # NHITS beside the classical methods, scored the same way
        subprocess.run([args.nf_python, __file__, "--neural", str(work)], check=True)
        for name, found in json.loads((work / "neural.json").read_text()).items():
            classic[name].update(found)
    recipes = ({k: CANDIDATES[k] for k in (args.candidates or CANDIDATES)} if args.validation
               else {"configs/series_forecast.yaml": {}, **{k: CANDIDATES[k] for k in args.candidates or []}})
    rows = []
    for name in args.series:
        _, season, horizon, _ = SERIES[name]
        values = np.array([float(line.split(",")[1]) for line in
                           (work / f"{name}.csv").read_text().splitlines()[1:]])
        history, truth = values[:-horizon], values[-horizon:]
        row = {"series": name, "steps": len(values), "horizon": horizon}
        for method, forecast in classic[name].items():
            row[method] = mase(forecast, truth, history, season)
        for label, recipe in recipes.items():
            point, bands = dlcli_forecast(name, work, recipe, args.seeds, work / "runs")
            row[label] = mase(point, truth, history, season)
            if "0.1" in bands and "0.9" in bands:  # the 80% interval's share of the test horizon
                row.setdefault("coverage", {})[label] = coverage(bands["0.1"], bands["0.9"], truth)
                row.setdefault("msis", {})[label] = msis(bands["0.1"], bands["0.9"], truth, history, season)
        rows.append(row)
        print(json.dumps(row) if args.json else "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in row.items() if k not in ("coverage", "msis")),
              flush=True)
    methods = [k for k in rows[0] if k not in ("series", "steps", "horizon", "coverage", "msis")]
    means = {m: float(np.mean([r[m] for r in rows])) for m in methods}
    best_classical = min(means["Holt-Winters"], means["Theta"])
    print(f"\nMASE on the {'validation' if args.validation else 'test'} horizon, dlcli averaged over seeds "
          f"{' '.join(map(str, args.seeds))}")
    print(f"{'series':<12}" + "".join(f"{m[:26]:>28}" for m in methods))
    for r in rows:
        print(f"{r['series']:<12}" + "".join(f"{r[m]:>28.3f}" for m in methods))
    print(f"{'mean':<12}" + "".join(f"{means[m]:>28.3f}" for m in methods))
    for label in rows[0].get("coverage", {}):
        shares = [r["coverage"][label] for r in rows]
        scores = [r["msis"][label] for r in rows]
        print(f"{label}: 80% interval (0.1 to 0.9) holds {np.mean(shares):.3f} of the test horizons' values "
              f"(per series {' '.join(f'{c:.2f}' for c in shares)}); MSIS {np.mean(scores):.3f} (per series "
              f"{' '.join(f'{c:.2f}' for c in scores)})")
    for label in recipes:
        beaten = sum(r[label] < r["seasonal naive"] for r in rows)
        print(f"{label}: below seasonal naive on {beaten} of {len(rows)} series; mean MASE "
              f"{means[label] / best_classical:.3f}x the better classical method's ({best_classical:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
