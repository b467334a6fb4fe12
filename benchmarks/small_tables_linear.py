"""Small real tables: the config `dlcli init` writes, trained as it stands, against a cross-validated linear model
and gradient boosting on the same splits.

    python benchmarks/small_tables_linear.py                          # 12 tables x splits 0 1 2, test scores
    python benchmarks/small_tables_linear.py --validation --variants init linear   # candidates for a default
    python benchmarks/small_tables_linear.py --tables iris diabetes --seeds 0     # a quick look

Needs scikit-learn (tables and baselines) and, for six of the tables, the CSV files that statsmodels and aeon ship
inside their wheels, found through --bench-python (default /work/bench-venv/bin/python, or $DLCLI_BENCH_PYTHON: the
environment benchmarks/sequence_classification.py uses). Everything is offline.

Tables (rows; task; what is predicted):
  iris, wine, breast_cancer, digits   scikit-learn's bundled classification tables (150, 178, 569, 1,797)
  anes96         statsmodels, 1996 American National Election Study (944): vote (Clinton 0 / Dole 1)
  affairs        statsmodels fair_pt, Fair's 1978 survey (601): whether naffairs > 0 (identifier, constant and
                 naffairs left out)
  diabetes       scikit-learn's bundled regression table (442): disease progression
  star98         statsmodels, California schools' 1998 maths scores (303): PR50M / MATHTOT, the share of pupils
                 above the national median (the two counts left out)
  grunfeld       statsmodels, Grunfeld's investment panel (220): invest from value, capital, firm (a category), year
  engel          statsmodels, Engel's 1857 Belgian households (235): food expenditure from income
  uschange       aeon, quarterly US changes 1970-2016 (187): Consumption from Income, Production, Savings,
                 Unemployment (the quarter left out)
  longley_like   statsmodels macrodata (203): realinv from realgdp, realcons, realgovt, realdpi, cpi, m1, tbilrate,
                 unemp, pop (year, quarter, infl and realint left out)
Per split seed, train_test_split(test_size=0.2, random_state=seed) (stratified for classification) written as
train.csv and test.csv; --validation splits the training rows once more the same way (20% held out, random_state =
seed) and scores that holdout: no test row is then written or read.

dlcli: `dlcli init DIR --label LABEL` on the folder holding train.csv and test.csv (the config a user gets), then
dlcli.training.train on it in a worker process with the variant's overrides and `seed: SEED`. Variants:
  init        the config as init writes it (val_split 0.1, Adam lr 0.003, an MLP sized by the encoded width, epochs
              auto; under 2,000 rows, since #31 item 1, also train.cv 5 and train.cv_final bag, so bag5's recipe)
  single      init's config as it was before: one run, no cross-validation; every variant below is init's config
              with its split and optimizer spelled out and no cross-validation, plus:
  linear      a linear path beside the MLP (`model.linear: true`: the hidden layers inside a residual block whose
              shortcut is a dense map from the inputs to the outputs, the forecasting recipe's shape)
  wd          AdamW, weight decay 0.1 (lr unchanged)
  linear_wd   both
  val20       data.val_split 0.2
  linear_val20  both
  l2          Adam with weight_decay 0.01 (an L2 penalty in the gradient)
  val20_l2    val20 and l2
  gelu        configs/table_regression.yaml's network: one layer of 256 GELU units, dropout 0.3, batch 64
  cv5         train.cv 5: five folds choose the epoch count, then a refit on all training rows (6 trainings)
  bag5        train.cv 5 with train.cv_final bag: the five fold models (each at its own best epoch) averaged as
              the final model, no refit (5 trainings)
  bag5_linear bag5 with the linear path (model.linear true)
  bag5_wd     bag5 with AdamW, weight decay 0.1
scikit-learn, after SimpleImputer + StandardScaler (numeric; the imputer alone for HGB) and
OneHotEncoder(handle_unknown="ignore") (categorical): RidgeCV(alphas=logspace(-3, 3, 13)) or
LogisticRegressionCV(max_iter=5000) ("linear"), HistGradientBoostingRegressor/Classifier(random_state=seed) ("HGB").
Scores: test accuracy or R² (x 100 in the "points" columns); every process computes with one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy, scikit-learn and torch are imported

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

CLASSIFICATION = ["iris", "wine", "breast_cancer", "digits", "anes96", "affairs"]
REGRESSION = ["diabetes", "star98", "grunfeld", "engel", "uschange", "longley_like"]
TABLES = CLASSIFICATION + REGRESSION
# init's split and optimizer for a table, spelled out, and one run (no cross-validation, which init writes under
# 2,000 rows since #31 item 1): each candidate is them plus its change, as measured before init bagged its folds
BASE = ["data.val_split=0.1", "optimizer={name: adam, lr: 0.003}", "train.cv=null", "train.cv_final=refit"]
L2 = "optimizer={name: adam, lr: 0.003, weight_decay: 0.01}"
ADAMW = "optimizer={name: adamw, lr: 0.003, weight_decay: 0.1}"
VARIANTS = {  # overrides on init's config
    "init": [],
    "single": BASE,
    "linear": [*BASE, "model.linear=true"],
    "wd": [*BASE, ADAMW],
    "linear_wd": [*BASE, "model.linear=true", ADAMW],
    "val20": [*BASE, "data.val_split=0.2"],
    "linear_val20": [*BASE, "model.linear=true", "data.val_split=0.2"],
    "l2": [*BASE, L2],
    "val20_l2": [*BASE, "data.val_split=0.2", L2],
    "gelu": [*BASE, "model={type: mlp, hidden: [256], activation: gelu, dropout: 0.3}", "train.batch_size=64"],
    "cv5": [*BASE, "train.cv=5"],
    "bag5": [*BASE, "train.cv=5", "train.cv_final=bag"],
    "bag5_linear": [*BASE, "train.cv=5", "train.cv_final=bag", "model.linear=true"],
    "bag5_wd": [*BASE, "train.cv=5", "train.cv_final=bag", ADAMW],
}
PACKAGED = r'''
import os, statsmodels, aeon
print(os.path.join(os.path.dirname(statsmodels.__file__), "datasets"))
print(os.path.join(os.path.dirname(aeon.__file__), "datasets", "data"))
'''


def packaged_dirs(bench_python: str) -> tuple[Path, Path]:
    done = subprocess.run([bench_python, "-c", PACKAGED], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{bench_python} cannot import statsmodels and aeon (their CSV files are six of the tables): "
                         f"{done.stderr.strip()[-300:]}")
    statsmodels, aeon = done.stdout.split()
    return Path(statsmodels), Path(aeon)


def load(name: str, dirs: tuple[Path, Path]):
    """A DataFrame with the label in column 'label' (classification) or 'y' (regression)."""
    import pandas as pd
    from sklearn import datasets

    sm, aeon = dirs
    if name in ("iris", "wine", "breast_cancer", "digits", "diabetes"):
        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "label" if name != "diabetes" else "y"})
        return frame
    if name == "anes96":
        frame = pd.read_csv(sm / "anes96" / "anes96.csv", sep="\t")
        frame.columns = [c.strip("'") for c in frame.columns]
        return frame.rename(columns={"vote": "label"})
    if name == "affairs":
        frame = pd.read_csv(sm / "fair" / "fair_pt.csv")
        frame["label"] = (frame.pop("naffairs") > 0).astype(int)
        return frame.drop(columns=["identifier", "constant"])
    if name == "star98":
        frame = pd.read_csv(sm / "star98" / "star98.csv")
        frame["y"] = frame.pop("PR50M") / frame.pop("MATHTOT")
        return frame
    if name == "grunfeld":
        return pd.read_csv(sm / "grunfeld" / "grunfeld.csv").rename(columns={"invest": "y"})
    if name == "engel":
        return pd.read_csv(sm / "engel" / "engel.csv").rename(columns={"foodexp": "y"})
    if name == "uschange":
        frame = pd.read_csv(aeon / "Uschange" / "Uschange.csv")
        return frame.drop(columns=[frame.columns[0], "Quarter"]).rename(columns={"Consumption": "y"})
    if name == "longley_like":
        frame = pd.read_csv(sm / "macrodata" / "macrodata.csv")
        return frame.drop(columns=["year", "quarter", "infl", "realint"]).rename(columns={"realinv": "y"})
    raise SystemExit(f"unknown table {name}")


def label_of(name: str) -> str:
    return "label" if name in CLASSIFICATION else "y"


def make_splits(name: str, frame, seeds: list[int], work: Path, validation: bool) -> dict:
    from sklearn.model_selection import train_test_split

    label = label_of(name)
    splits = {}
    for seed in seeds:
        strat = (lambda f: f[label]) if name in CLASSIFICATION else (lambda f: None)
        train, test = train_test_split(frame, test_size=0.2, random_state=seed, stratify=strat(frame))
        if validation:  # the test rows are dropped here, unread
            train, test = train_test_split(train, test_size=0.2, random_state=seed, stratify=strat(train))
        folder = work / ("validation" if validation else "test") / name / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        train.to_csv(folder / "train.csv", index=False)
        test.to_csv(folder / "test.csv", index=False)
        splits[seed] = {"dir": folder, "train": train, "test": test}
    return splits


# ---------------------------------------------------------------- dlcli


def init_config(folder: Path, label: str) -> Path:
    """`dlcli init FOLDER --label LABEL -o FOLDER/init.yaml`, as a user types it."""
    target = folder / "init.yaml"
    target.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "dlcli", "init", str(folder), "--label", label, "-o", str(target)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dlcli init {folder} failed: {done.stderr.strip()[-500:]}")
    return target


def train_in_process(config: str, overrides: list[str], runs: str) -> str:
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.training import train

    cfg = load_config(config, overrides)
    console = Console(stderr=True, quiet=True)
    if cfg.train.cv:  # the folds, then the refit, which is scored
        from dlcli.cv import cross_validate
        from dlcli.distributed import SINGLE

        return cross_validate(cfg, Path(runs), console, False, SINGLE, cfg.train.cv)[-1].name
    return train(cfg, Path(runs), console, show_progress=False).name


def dlcli_run(pool, name: str, seed: int, split: dict, config: Path, variant: str, runs: Path) -> dict:
    overrides = VARIANTS[variant]
    start = time.perf_counter()
    run_id = pool.submit(train_in_process, str(config), [*overrides, f"seed={seed}"], str(runs)).result()
    took = time.perf_counter() - start
    summary = json.loads((runs / run_id / "summary.json").read_text())
    head = "accuracy" if name in CLASSIFICATION else "r2"
    return {"table": name, "seed": seed, "model": f"dlcli {variant}", "score": summary["test"][head],
            "seconds": took, "epochs": summary["epochs_completed"], "best_epoch": summary["best_epoch"]}


# ---------------------------------------------------------------- scikit-learn


def sklearn_run(kind: str, name: str, seed: int, split: dict) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    label = label_of(name)
    train, test = split["train"], split["test"]
    x, xt = train.drop(columns=[label]), test.drop(columns=[label])
    cat = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    num = [c for c in x.columns if c not in cat]
    classify = name in CLASSIFICATION
    if kind == "linear":
        prep = ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), num),
                                  ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])
        model = LogisticRegressionCV(max_iter=5000) if classify else RidgeCV(alphas=np.logspace(-3, 3, 13))
    else:
        prep = ColumnTransformer([("num", SimpleImputer(), num),
                                  ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])
        model = (HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor)(random_state=seed)
    pipe = make_pipeline(prep, model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(x, train[label])
    took = time.perf_counter() - start
    return {"table": name, "seed": seed, "model": kind, "score": float(pipe.score(xt, test[label])),
            "seconds": took}


# ---------------------------------------------------------------- the report


def report(results: list[dict], tables: list[str], seeds: list[int], variants: list[str], validation: bool,
           total: float) -> None:
    models = [f"dlcli {v}" for v in variants] + [m for m in ("linear", "HGB") if any(r["model"] == m for r in results)]

    def scores(table, model):
        return [r["score"] for r in sorted(results, key=lambda r: r["seed"]) if r["table"] == table
                and r["model"] == model]

    split = "validation holdouts (20% of each split's training rows; no test row read)" if validation else "test"
    print(f"\n{split} accuracy (classification) or R² (regression), mean over split seeds "
          f"{', '.join(map(str, seeds))}\n")
    cols = ["table", "rows", "task", *models] + [f"{m} − linear (points)" for m in models if m.startswith("dlcli")]
    print("| " + " | ".join(cols) + " |\n| " + " | ".join("---" for _ in cols) + " |")
    means = {m: [] for m in models}
    for t in tables:
        n = next((r.get("rows") for r in results if r["table"] == t and "rows" in r), "")
        row = [t, str(n), "classification" if t in CLASSIFICATION else "regression"]
        for m in models:
            s = scores(t, m)
            means[m].append(statistics.fmean(s) if s else float("nan"))
            row.append(f"{statistics.fmean(s):.4f}" if s else "-")
        lin = scores(t, "linear")
        for m in models:
            if m.startswith("dlcli"):
                s = scores(t, m)
                row.append(f"{100 * (statistics.fmean(s) - statistics.fmean(lin)):+.1f}" if s and lin else "-")
        print("| " + " | ".join(row) + " |")
    lin_mean = statistics.fmean(means["linear"]) if "linear" in means else None
    row = [f"mean of {len(tables)}", "", ""] + [f"{statistics.fmean(v):.4f}" for v in means.values()]
    row += [f"{100 * (statistics.fmean(means[m]) - lin_mean):+.1f}" if lin_mean is not None else "-"
            for m in models if m.startswith("dlcli")]
    print("| " + " | ".join(row) + " |")

    print("\nwins / ties / losses per split (a tie: within 0.5 points), worst table (points), mean seconds a fit")
    print("| model | vs linear | vs HGB | worst table vs linear | seconds |\n| --- | --- | --- | --- | --- |")
    for m in models:
        if not m.startswith("dlcli"):
            secs = statistics.fmean(r["seconds"] for r in results if r["model"] == m)
            print(f"| {m} | | | | {secs:.2f} |")
            continue
        line = [m]
        for other in ("linear", "HGB"):
            w = t_ = lo = 0
            for t in tables:
                for a, b in zip(scores(t, m), scores(t, other)):
                    d = 100 * (a - b)
                    w, t_, lo = w + (d > 0.5), t_ + (abs(d) <= 0.5), lo + (d < -0.5)
            line.append(f"{w} / {t_} / {lo}")
        gaps = [(100 * (statistics.fmean(scores(t, m)) - statistics.fmean(scores(t, "linear"))), t) for t in tables
                if scores(t, m) and scores(t, "linear")]
        worst = min(gaps) if gaps else (float("nan"), "-")
        line.append(f"{worst[0]:+.1f} ({worst[1]})")
        line.append(f"{statistics.fmean(r['seconds'] for r in results if r['model'] == m):.2f}")
        print("| " + " | ".join(line) + " |")
    print(f"\nTotal {total:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=TABLES, choices=TABLES)
    parser.add_argument("--variants", nargs="+", default=["init"], choices=list(VARIANTS))
    parser.add_argument("--validation", action="store_true", help="score a holdout of the training rows")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="dlcli worker processes")
    parser.add_argument("--bench-python", default=os.environ.get("DLCLI_BENCH_PYTHON", "/work/bench-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlcli-bench-small-linear"))
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="no training: report the results these --json files hold (a later file's result for "
                             "the same table, split and model replaces an earlier one's)")
    args = parser.parse_args()

    if args.merge:
        merged = {}
        for path in args.merge:
            for r in json.loads(path.read_text()):
                merged[(r["table"], r["seed"], r["model"])] = r
        results = list(merged.values())
        found = {r["model"][6:] for r in results if r["model"].startswith("dlcli ")}
        report(results, [t for t in args.tables if any(r["table"] == t for r in results)],
               sorted({r["seed"] for r in results}), [v for v in VARIANTS if v in found], args.validation, 0.0)
        return
    start = time.perf_counter()
    dirs = packaged_dirs(args.bench_python)
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    results = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for name in args.tables:
            frame = load(name, dirs)
            splits = make_splits(name, frame, args.seeds, args.work, args.validation)
            for seed, split in splits.items():
                if not args.no_sklearn:
                    for kind in ("linear", "HGB"):
                        results.append(sklearn_run(kind, name, seed, split) | {"rows": len(frame)})
                config = init_config(split["dir"], label_of(name))
                for variant in args.variants:
                    r = dlcli_run(pool, name, seed, split, config, variant, runs) | {"rows": len(frame)}
                    results.append(r)
                    print(f"  {name:<13} seed {seed} {r['model']:<18} {r['score']:.4f}  epochs {r['epochs']} "
                          f"(best {r['best_epoch']})  {r['seconds']:.1f} s", file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    report(results, args.tables, args.seeds, args.variants, args.validation, time.perf_counter() - start)


if __name__ == "__main__":
    main()
