"""Regression and multi-label small tables: dlcli's shipped configs against scikit-learn on the same splits.

    python benchmarks/small_tables_tasks.py                       # 5 regression + 2 multilabel tables x seeds 0 1 2
    python benchmarks/small_tables_tasks.py --tables diabetes --seeds 0    # a quick look
    python benchmarks/small_tables_tasks.py --json                # every run, then the summary
    python benchmarks/small_tables_tasks.py --validation --in-process --jobs 2 \\
        --variants table_csv --no-sklearn --set model.hidden=[256] --tables noisy_linear friedman1   # choosing a recipe

Needs scikit-learn (`pip install scikit-learn`): the data and the baselines. Everything is offline. Every process
(dlcli's and scikit-learn's) computes with one thread (OMP_NUM_THREADS=1): the runs are then exactly repeatable, and
--jobs 2 puts one on each of two cores.

Tables (rows, features):
  diabetes     regression, scikit-learn's bundled load_diabetes (442, 10; the target: disease progression, 25 to 346)
  noisy_linear regression, make_regression(442, 10 features of which 6 matter, noise=140, bias=150,
               random_state=7): linear and noisy, like diabetes (R^2 about 0.5)
  friedman1    regression, make_friedman1(1000, 10 features of which 5 matter, noise=1.0, random_state=7)
  houses       regression, benchmarks/example_tables.py's table (1,000 x 7: 3 categorical columns, 3% of two
               numeric columns empty; target price_k), the data of configs/table_regression.yaml
  friedman_mt  regression with 3 targets (label_column: [y1, y2, y3]): 1,000 x 8 uniform features; y1 Friedman #1
               of x0..x4, y2 = 10 x5 x6 + 20 (x7 - 0.5)^2, y3 = (y1 + y2) / 2 + 10 sin(pi x2), each + N(0, 1)
  multilabel   multilabel, make_multilabel_classification(1000, 20 features, 6 labels, 2 a row on average,
               random_state=7): word counts, 0/1 columns l0..l5
  movies       multilabel, benchmarks/example_tables.py's table (1,200 x 10: one categorical; 6 genres), the data of
               configs/table_multilabel.yaml
Per seed: train_test_split(test_size=0.2, random_state=seed) written as train.csv and test.csv under --work; both
sides score the same test rows. --validation instead splits the training rows once more (20% of them held out,
random_state=seed) and scores that holdout: no test row is written or read. --draw N regenerates the generated
tables with random_state + N (diabetes has one draw only). The shipped recipes were chosen with
--draw 1 --validation --seeds 0 1 2 3 4: rows the benchmark never scores.

dlcli, each `python -m dlcli train CONFIG --runs-dir RUNS --quiet` (or, with --in-process, dlcli.training.train in a
worker process) with the shipped config's sections, its data section pointed at the split's files and columns
(`dataset: csv`, train_file, test_file, label_column; its other data keys kept); seed = split seed. dlcli holds
10% of train.csv out for validation (early stopping, best.pt, tuned multilabel thresholds); scikit-learn fits on all
of it. Variants:
  dlcli config      configs/table_regression.yaml or configs/table_multilabel.yaml (or --config-*)
  dlcli table_csv   configs/table_csv.yaml's model, optimizer and train (MLP 64-32, dropout 0.1, Adam 3e-3, batch 32,
                    epochs auto) with `task: regression` or `task: multilabel` added: what a user gets by changing the
                    task of the classification example and nothing else; the base the recipes were chosen from
--set KEY=VALUE overrides apply to every dlcli run (a candidate recipe: --variants table_csv --set ...).
Test figures come from the run's summary.json (R^2 is the mean over targets, as scikit-learn's r2_score's default).

scikit-learn, with defaults, after a ColumnTransformer of SimpleImputer + StandardScaler (numeric columns;
imputer only, no scaling, for the trees) and OneHotEncoder(handle_unknown="ignore") (categorical columns):
  regression   Ridge; MLP = MLPRegressor(random_state=seed); MLP y-std = the same inside
               TransformedTargetRegressor(transformer=StandardScaler()) (targets standardised, as dlcli does);
               HGB = HistGradientBoostingRegressor(random_state=seed) (MultiOutputRegressor for several targets)
  multilabel   OvR LR = OneVsRestClassifier(LogisticRegression()); MLP = MLPClassifier(random_state=seed);
               RF = RandomForestClassifier(random_state=seed) (multi-label natively)
An MLP that stops at max_iter without converging is counted, not fixed: a default user gets that model.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy, scikit-learn and torch are imported

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import example_tables  # noqa: E402
from small_tables import cell, machine, mean_std  # noqa: E402

TASK_OF = {"diabetes": "regression", "noisy_linear": "regression", "friedman1": "regression",
           "houses": "regression", "friedman_mt": "regression", "multilabel": "multilabel", "movies": "multilabel"}
TABLES = list(TASK_OF)
SHIPPED = {"regression": ROOT / "configs" / "table_regression.yaml",
           "multilabel": ROOT / "configs" / "table_multilabel.yaml"}
BASELINES = {"regression": ["Ridge", "MLP", "MLP y-std", "HGB"], "multilabel": ["OvR LR", "MLP", "RF"]}
BAR = {"regression": ["Ridge", "MLP", "MLP y-std"], "multilabel": ["OvR LR", "MLP"]}  # the goal's "better of"
METRICS = {"regression": ["r2", "rmse", "mae"], "multilabel": ["f1_micro", "f1_macro", "subset_accuracy"]}
HEADLINE = {"regression": "r2", "multilabel": "f1_micro"}
VARIANTS = ["config", "table_csv"]


# ---------------------------------------------------------------- the tables


def load(name: str, draw: int = 0) -> dict:
    """columns, rows (lists of float | str | None), target names, targets (lists of numbers), categorical indices.
    draw: another sample of a generated table (its random_state + draw); 0 is the benchmark's."""
    import numpy as np
    from sklearn import datasets

    if name == "diabetes":
        if draw:
            raise SystemExit("diabetes is one fixed table: --draw needs generated tables only")
        bunch = datasets.load_diabetes()
        return {"columns": list(bunch.feature_names), "rows": bunch.data.tolist(), "targets": ["progression"],
                "y": [[float(v)] for v in bunch.target], "categorical": []}
    if name == "friedman1":
        x, y = datasets.make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=7 + draw)
        return {"columns": [f"x{i}" for i in range(10)], "rows": x.tolist(), "targets": ["y"],
                "y": [[float(v)] for v in y], "categorical": []}
    if name == "noisy_linear":
        x, y = datasets.make_regression(n_samples=442, n_features=10, n_informative=6, noise=140.0, bias=150.0,
                                        random_state=7 + draw)
        return {"columns": [f"x{i}" for i in range(10)], "rows": x.tolist(), "targets": ["y"],
                "y": [[float(v)] for v in y], "categorical": []}
    if name == "friedman_mt":
        rng = np.random.default_rng(7 + draw)
        x = rng.random((1000, 8))
        y1 = 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
        y2 = 10 * x[:, 5] * x[:, 6] + 20 * (x[:, 7] - 0.5) ** 2
        y3 = (y1 + y2) / 2 + 10 * np.sin(np.pi * x[:, 2])
        y = np.stack([y1, y2, y3], 1) + rng.normal(0, 1, (1000, 3))
        return {"columns": [f"x{i}" for i in range(8)], "rows": x.tolist(), "targets": ["y1", "y2", "y3"],
                "y": y.tolist(), "categorical": []}
    if name == "houses":
        columns, rows, targets, y = example_tables.houses(seed=draw)
        return {"columns": columns, "rows": rows, "targets": targets, "y": y,
                "categorical": [i for i, v in enumerate(rows[0]) if isinstance(v, str)]}
    if name == "multilabel":
        x, y = datasets.make_multilabel_classification(n_samples=1000, n_features=20, n_classes=6, n_labels=2,
                                                       random_state=7 + draw)
        return {"columns": [f"w{i}" for i in range(20)], "rows": x.tolist(), "targets": [f"l{j}" for j in range(6)],
                "y": y.tolist(), "categorical": []}
    if name == "movies":
        columns, rows, targets, y = example_tables.movies(seed=draw)
        return {"columns": columns, "rows": rows, "targets": targets, "y": y,
                "categorical": [i for i, v in enumerate(rows[0]) if isinstance(v, str)]}
    raise SystemExit(f"unknown table {name}: choose from {', '.join(TABLES)}")


def make_splits(name: str, seeds: list[int], work: Path, validation: bool, draw: int = 0) -> dict:
    from sklearn.model_selection import train_test_split

    table = load(name, draw)
    table |= {"task": TASK_OF[name], "n": len(table["rows"]), "splits": {}}
    for seed in seeds:
        tr_x, te_x, tr_y, te_y = train_test_split(table["rows"], table["y"], test_size=0.2, random_state=seed)
        if validation:  # the test rows are dropped here, unread; the training rows' holdout stands in for them
            tr_x, te_x, tr_y, te_y = train_test_split(tr_x, tr_y, test_size=0.2, random_state=seed)
        folder = work / "data" / ("validation" if validation else "test") / f"{name}{f'-draw{draw}' if draw else ''}" \
            / f"seed{seed}"
        example_tables.write(folder / "train.csv", table["columns"], tr_x, table["targets"], tr_y)
        example_tables.write(folder / "test.csv", table["columns"], te_x, table["targets"], te_y)
        table["splits"][seed] = {"dir": folder, "train": (tr_x, tr_y), "test": (te_x, te_y)}
    return table


# ---------------------------------------------------------------- dlcli


def dlcli_config(name: str, seed: int, table: dict, variant: str, recipes: dict) -> Path:
    """The recipe's sections, and its data section with this split's files and columns."""
    import yaml

    task = table["task"]
    folder = table["splits"][seed]["dir"]
    if variant == "config":
        raw = yaml.safe_load(recipes[task].read_text())
    else:
        raw = yaml.safe_load((ROOT / "configs" / "table_csv.yaml").read_text())
        raw["task"] = task
    targets = table["targets"]
    data = {k: v for k, v in raw["data"].items() if k not in ("train_file", "test_file", "label_column")}
    raw |= {"name": f"{name}-s{seed}-{variant}", "seed": seed,
            "data": data | {"dataset": "csv", "train_file": str(folder / "train.csv"),
                            "test_file": str(folder / "test.csv"), "label_column": targets[0] if len(targets) == 1
                            else targets}}
    path = folder / f"dlcli-{variant}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_in_process(config: str, overrides: list[str], runs: str) -> str:
    """In a worker process: dlcli.training.train on the config, as `dlcli train --quiet` does; returns the run id."""
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.training import train

    cfg = load_config(config, overrides)
    return train(cfg, Path(runs), Console(stderr=True, quiet=True), show_progress=False).name


def dlcli_run(job: dict, runs: Path, pool=None) -> dict:
    t = time.perf_counter()
    if pool is not None:
        run_id = pool.submit(train_in_process, str(job["config"]), job["overrides"], str(runs)).result()
    else:
        cmd = [sys.executable, "-m", "dlcli", "train", str(job["config"]), "--runs-dir", str(runs), "--quiet"]
        for s in job["overrides"]:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-3000:]}")
        run_id = proc.stdout.strip().splitlines()[-1]
    process_s = time.perf_counter() - t
    summary = json.loads((runs / run_id / "summary.json").read_text())
    epochs = [json.loads(line) for line in (runs / run_id / "metrics.jsonl").read_text().splitlines() if line.strip()]
    task = job["task"]
    best_val = min(epochs, key=lambda e: e.get("val_loss", float("inf")))  # data.val_split: 0 has none
    result = {"table": job["table"], "seed": job["seed"], "model": f"dlcli {job['variant']}", "run_id": run_id,
              **{m: summary["test"][m] for m in METRICS[task]}, "test_loss": summary["test"]["loss"],
              "epochs": summary["epochs"], "epochs_completed": summary["epochs_completed"],
              "best_epoch": summary["best_epoch"], "stopped_early": summary["stopped_early"],
              "wall_seconds": summary["wall_seconds"], "process_seconds": round(process_s, 2),
              "min_val_loss": best_val.get("val_loss"), "min_val_loss_epoch": best_val["epoch"],
              f"val_{HEADLINE[task]}_at_best": next(e for e in epochs if e["epoch"] == summary["best_epoch"])
              .get(f"val_{HEADLINE[task]}")}
    return result


# ---------------------------------------------------------------- scikit-learn


def prep(table: dict, scale: bool):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = table["categorical"]
    numeric = [i for i in range(len(table["columns"])) if i not in cat]
    num = make_pipeline(SimpleImputer(), StandardScaler()) if scale else SimpleImputer()
    return ColumnTransformer([("num", num, numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])


def sklearn_model(kind: str, table: dict, seed: int):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    several = len(table["targets"]) > 1
    if table["task"] == "regression":
        if kind == "Ridge":
            return make_pipeline(prep(table, True), Ridge())
        if kind == "MLP":
            return make_pipeline(prep(table, True), MLPRegressor(random_state=seed))
        if kind == "MLP y-std":
            return TransformedTargetRegressor(make_pipeline(prep(table, True), MLPRegressor(random_state=seed)),
                                              transformer=StandardScaler())
        hgb = HistGradientBoostingRegressor(random_state=seed)
        return make_pipeline(prep(table, False), MultiOutputRegressor(hgb) if several else hgb)
    if kind == "OvR LR":
        return make_pipeline(prep(table, True), OneVsRestClassifier(LogisticRegression()))
    if kind == "MLP":
        return make_pipeline(prep(table, True), MLPClassifier(random_state=seed))
    return make_pipeline(prep(table, False), RandomForestClassifier(random_state=seed))


def as_matrix(rows, cat: list[int]):
    import numpy as np

    x = np.asarray(rows, dtype=object)
    for j in range(x.shape[1]):
        if j not in cat:
            x[:, j] = [np.nan if v is None else float(v) for v in x[:, j]]
    return x if cat else x.astype(float)


def sklearn_run(kind: str, name: str, seed: int, table: dict) -> dict:
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

    (tr_x, tr_y), (te_x, te_y) = table["splits"][seed]["train"], table["splits"][seed]["test"]
    cat = table["categorical"]
    model = sklearn_model(kind, table, seed)
    ytr, yte = np.asarray(tr_y, dtype=float), np.asarray(te_y, dtype=float)
    if table["task"] == "regression" and ytr.shape[1] == 1:
        ytr = ytr[:, 0]
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(as_matrix(tr_x, cat), ytr if table["task"] == "regression" else ytr.astype(int))
    fit_s = time.perf_counter() - t
    pred = np.asarray(model.predict(as_matrix(te_x, cat)), dtype=float).reshape(yte.shape)
    result = {"table": name, "seed": seed, "model": kind, "fit_seconds": round(fit_s, 3),
              "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}
    if table["task"] == "regression":
        # per target, then the mean over targets (as dlcli reports them)
        result |= {"r2": float(r2_score(yte, pred)),
                   "rmse": float(np.mean([mean_squared_error(yte[:, j], pred[:, j]) ** 0.5
                                          for j in range(yte.shape[1])])),
                   "mae": float(mean_absolute_error(yte, pred))}
    else:
        result |= {"f1_micro": float(f1_score(yte, pred, average="micro", zero_division=0)),
                   "f1_macro": float(f1_score(yte, pred, average="macro", zero_division=0)),
                   "subset_accuracy": float(accuracy_score(yte, pred))}
    return result


# ---------------------------------------------------------------- the report


def summarise(results: list[dict], tables: dict) -> dict:
    out = {}
    for name, table in tables.items():
        task = table["task"]
        mine = [r for r in results if r["table"] == name]
        entry = {"task": task, "rows": table["n"], "features": len(table["columns"]),
                 "categorical": len(table["categorical"]), "targets": len(table["targets"]), "models": {}}
        for model in [f"dlcli {v}" for v in VARIANTS] + BASELINES[task]:
            rs = [r for r in mine if r["model"] == model]
            if not rs:
                continue
            e = {m: mean_std([r[m] for r in rs]) for m in METRICS[task]}
            e["per_seed"] = {m: [r[m] for r in rs] for m in METRICS[task]}
            if model.startswith("dlcli"):
                for key in ("epochs", "epochs_completed", "best_epoch", "min_val_loss_epoch", "wall_seconds",
                            "process_seconds", f"val_{HEADLINE[task]}_at_best"):
                    e[key] = [r[key] for r in rs]
                e["stopped_early"] = sum(r["stopped_early"] for r in rs)
            else:
                e["fit_seconds"] = statistics.fmean(r["fit_seconds"] for r in rs)
                e["not_converged"] = sum(not r["converged"] for r in rs)
            entry["models"][model] = e
        head = HEADLINE[task]
        bar = [m for m in BAR[task] if m in entry["models"]]
        if bar and "dlcli config" in entry["models"]:
            best = max(bar, key=lambda m: entry["models"][m][head][0])
            entry["bar"] = best
            entry["config_minus_bar"] = round(entry["models"]["dlcli config"][head][0]
                                              - entry["models"][best][head][0], 6) + 0.0
            if task == "regression":
                entry["rmse_ratio"] = entry["models"]["dlcli config"]["rmse"][0] / entry["models"][best]["rmse"][0]
        out[name] = entry
    return out


def print_report(summary: dict, seeds: list[int], validation: bool, total_s: float, overrides: list[str]):
    scored = "VALIDATION holdout (20% of each split's training rows; no test row read)" if validation else \
        "test (random 80/20 splits)"
    for task in ("regression", "multilabel"):
        names = [n for n, e in summary.items() if e["task"] == task]
        if not names:
            continue
        head = HEADLINE[task]
        models = [m for m in [f"dlcli {v}" for v in VARIANTS] + BASELINES[task]
                  if any(m in summary[n]["models"] for n in names)]
        print(f"\n{task}: {scored} {'R²' if task == 'regression' else 'micro F1'}, mean ± std over seeds "
              f"{', '.join(map(str, seeds))}{'; --set ' + ' '.join(overrides) if overrides else ''}; {machine()}\n")
        extra = ["config − best of " + "/".join(BAR[task])] + (["RMSE config / that one"] if task == "regression"
                                                               else [])
        cols = ["table", "rows", "features (cat.)", "targets" if task == "regression" else "labels", *models, *extra]
        print("| " + " | ".join(cols) + " |\n| " + " | ".join("---" for _ in cols) + " |")
        for n in names:
            e = summary[n]
            row = [n, str(e["rows"]), f"{e['features']} ({e['categorical']})", str(e["targets"])]
            row += [cell(e["models"][m]["per_seed"][head]) if m in e["models"] else "-" for m in models]
            if "bar" in e:
                row.append(f"{e['config_minus_bar']:+.4f} ({e['bar']})")
                if task == "regression":
                    row.append(f"{e['rmse_ratio']:.3f}")
            print("| " + " | ".join(row) + " |")
        if len(names) > 1:
            means = {m: statistics.fmean(summary[n]["models"][m][head][0] for n in names) for m in models
                     if all(m in summary[n]["models"] for n in names)}
            gaps = [summary[n]["config_minus_bar"] for n in names if "bar" in summary[n]]
            print(f"| mean of {len(names)} tables | | | | " + " | ".join(f"{means[m]:.4f}" if m in means else "-"
                                                                       for m in models)
                  + (f" | {statistics.fmean(gaps):+.4f} |" if gaps else " |") + (" |" if task == "regression" else ""))

        others = [k for k in METRICS[task] if k != head]
        print(f"\n{task}: {', '.join(others)} (mean over seeds)\n")
        print("| table | " + " | ".join(models) + " |\n| --- | " + " | ".join("---" for _ in models) + " |")
        for n in names:
            m = summary[n]["models"]
            fmt = (lambda v: f"{v:.4g}") if task == "regression" else (lambda v: f"{v:.4f}")
            print(f"| {n} | " + " | ".join(" / ".join(fmt(m[k][o][0]) for o in others) if k in m else "-"
                                           for k in models) + " |")

        print(f"\n{task}, dlcli per seed: epochs (set or auto), completed, best.pt's epoch, lowest val_loss's epoch; "
              f"val {head} at best.pt; wall s (summary.json, mean) and whole process s (mean)\n")
        print("| table | variant | epochs | completed | best epoch | lowest val_loss epoch | stopped early | "
              f"val {head} | wall s | process s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in names:
            for k in [f"dlcli {v}" for v in VARIANTS]:
                a = summary[n]["models"].get(k)
                if not a:
                    continue
                j = lambda key: "/".join(map(str, a[key]))  # noqa: E731
                print(f"| {n} | {k[6:]} | {j('epochs')} | {j('epochs_completed')} | {j('best_epoch')} | "
                      f"{j('min_val_loss_epoch')} | {a['stopped_early']}/{len(a['epochs'])} | "
                      f"{' / '.join(f'{v:.3f}' for v in a[f'val_{head}_at_best'])} | "
                      f"{statistics.fmean(a['wall_seconds']):.1f} | {statistics.fmean(a['process_seconds']):.1f} |")
        warns = [f"{n} {k} {e['models'][k]['not_converged']}/{len(seeds)}" for n in names
                 for e in [summary[n]] for k in BASELINES[task] if e["models"].get(k, {}).get("not_converged")]
        print(f"\n{task}: ConvergenceWarning (max_iter reached; tables, model, seeds): {', '.join(warns) or 'none'}")
    print(f"\nTotal {total_s:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split (and dlcli) seeds")
    parser.add_argument("--tables", nargs="+", default=TABLES, choices=TABLES)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--no-sklearn", action="store_true", help="dlcli only (choosing a recipe)")
    parser.add_argument("--draw", type=int, default=0,
                        help="another sample of the generated tables (random_state + DRAW; to choose a recipe on "
                             "rows the benchmark never scores)")
    parser.add_argument("--validation", action="store_true",
                        help="score a holdout of the training rows instead of the test rows (to choose a recipe)")
    parser.add_argument("--config-regression", type=Path, default=SHIPPED["regression"])
    parser.add_argument("--config-multilabel", type=Path, default=SHIPPED["multilabel"])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="an override for every dlcli run (repeatable), as dlcli train --set")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlcli-bench-small-tables-tasks"),
                        help="where the CSV files and the runs go (its runs/ is emptied first)")
    parser.add_argument("--jobs", type=int, default=1, help="dlcli runs at a time (default 1)")
    parser.add_argument("--in-process", action="store_true",
                        help="dlcli.training.train in --jobs worker processes instead of a `dlcli train` process a run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs scikit-learn: pip install scikit-learn")

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    start = time.perf_counter()
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    tables = {name: make_splits(name, args.seeds, args.work, args.validation, args.draw) for name in args.tables}
    recipes = {"regression": args.config_regression.resolve(), "multilabel": args.config_multilabel.resolve()}

    results = []
    if not args.no_sklearn:
        for name, table in tables.items():
            for seed in args.seeds:
                for kind in BASELINES[table["task"]]:
                    results.append(sklearn_run(kind, name, seed, table))
        log(f"scikit-learn: {len(results)} fits in {time.perf_counter() - start:.1f} s")

    jobs = [{"table": name, "task": table["task"], "seed": seed, "variant": variant,
             "config": dlcli_config(name, seed, table, variant, recipes),
             "overrides": args.overrides}
            for name, table in tables.items() for seed in args.seeds for variant in args.variants]
    pool = ProcessPoolExecutor(max(1, args.jobs)) if args.in_process else None

    def one(job):
        r = dlcli_run(job, runs, pool)
        head = HEADLINE[job["task"]]
        log(f"  {r['table']:<12} seed {r['seed']} {r['model']:<16} {head} {r[head]:.4f}  "
            f"epochs {r['epochs_completed']}/{r['epochs']} (best {r['best_epoch']})  {r['process_seconds']:.1f} s")
        return r

    log(f"dlcli: {len(jobs)} runs, {args.jobs} at a time{' (in-process)' if pool else ''}")
    with ThreadPoolExecutor(max(1, args.jobs)) as threads:
        results += list(threads.map(one, jobs))
    if pool is not None:
        pool.shutdown()

    summary = summarise(results, tables)
    total = time.perf_counter() - start
    if args.json:
        print(json.dumps({"machine": machine(), "seeds": args.seeds, "validation": args.validation,
                          "overrides": args.overrides, "total_seconds": round(total, 1), "summary": summary,
                          "runs": results}, indent=2, default=str))
    else:
        print_report(summary, args.seeds, args.validation, total, args.overrides)


if __name__ == "__main__":
    main()
