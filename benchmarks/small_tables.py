"""Does a user who does not tune get results at least as good as scikit-learn's defaults on small tables?

    python benchmarks/small_tables.py                        # 6 tables x seeds 0 1 2 (3 to 15 minutes on 2 cores)
    python benchmarks/small_tables.py --seeds 0 --datasets iris wine   # a quick look
    python benchmarks/small_tables.py --jobs 2               # two dlcli processes at a time
    python benchmarks/small_tables.py --json                 # machine-readable (every run, then the summary)
    python benchmarks/small_tables.py --datasets iris wine breast_cancer --seeds 0 1 2 --model-seeds 0 1 \
        --variants auto cv5                                  # cross-validation against one validation split

Needs scikit-learn (`pip install scikit-learn`), which is not a dlcli dependency: it provides the data and the
baselines. Everything is offline.

Tables: scikit-learn's bundled iris, wine, breast_cancer and digits (load_*), and two made with make_classification
(fixed random_state, so only the split changes with the seed):
  imbalanced  600 rows, 12 numeric features, 3 classes weighted 0.85 / 0.10 / 0.05;
  mixed       800 rows, 3 classes: 8 numeric columns with 5% of their cells missing (empty strings in the CSV) and
              2 categorical columns of words, each the binned value of an informative feature (which is dropped).

For each table and seed: a stratified 80/20 train_test_split(random_state=seed) written as train.csv and test.csv
(header row, the class in a `label` column: names for iris, wine and breast_cancer, integers otherwise) under
--work. Both sides see exactly these files' rows.

dlcli: configs/table_csv.yaml's model (MLP 64-32, dropout 0.1), optimizer (Adam 3e-3) and batch size (32), with
`data: {dataset: csv, train_file, test_file, label_column: label}` and the config's seed set to the split seed. With
no train.epochs key the default applies (`auto`: about 3,000 steps in 10 to 300 epochs, early stopping on val_loss
since data.val_split defaults to 0.1 of train.csv; best.pt by val_accuracy, ties by val_loss). Variants:
  dlcli auto         no train.epochs
  dlcli epochs=20    --set train.epochs=20 (what configs/table_csv.yaml said before `auto`)
  dlcli auto+cw      --set train.class_weights=auto (the imbalanced table only)
  dlcli cv5          --set train.cv=5: five folds, then a refit on all of train.csv for the epoch count whose mean
                     validation accuracy over the folds was best; its test accuracy is the refit's (dlcli.cv)
--variants picks which run (default: auto, epochs=20, auto+cw). --model-seeds M...: each split is also trained with
dlcli seeds split + 1000 * M (weights, batch order, the validation cut), so the figures vary over splits and seeds.
Each is `python -m dlcli train CONFIG --runs-dir RUNS --quiet`; test accuracy, epochs and wall seconds come from the
run's summary.json. On the imbalanced table, `python -m dlcli evaluate RUN --json` gives balanced accuracy and
macro F1.

scikit-learn, with defaults, fitted on all of train.csv (no validation slice held out):
  LR          LogisticRegression() on the raw features
  scaled LR   make_pipeline(StandardScaler(), LogisticRegression())
  RF          RandomForestClassifier(random_state=seed)
  HGB         HistGradientBoostingClassifier()
On the mixed table each is preceded by ColumnTransformer([SimpleImputer() on the numeric columns (then StandardScaler
for scaled LR), OneHotEncoder(handle_unknown="ignore") on the categorical ones]). A LogisticRegression that stops
at max_iter without converging is counted (the "LR warns" line), not fixed: a default user gets that model.

Figures are test accuracy, mean +/- sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import machine  # noqa: E402

DATASETS = ["iris", "wine", "breast_cancer", "digits", "imbalanced", "mixed"]
IMBALANCED = "imbalanced"
SKLEARN_MODELS = ["LR", "scaled LR", "RF", "HGB"]
MISSING_SHARE = 0.05


# ---------------------------------------------------------------- the tables


def load(name: str):
    """(column names, rows as lists of float | str | None, labels, indices of categorical columns)."""
    import numpy as np
    from sklearn import datasets

    if name in ("iris", "wine", "breast_cancer", "digits"):
        bunch = getattr(datasets, f"load_{name}")()
        labels = [str(bunch.target_names[t]) for t in bunch.target] if name != "digits" else bunch.target.tolist()
        columns = [str(c) for c in bunch.feature_names]
        return columns, bunch.data.tolist(), labels, []
    if name == IMBALANCED:
        x, y = datasets.make_classification(n_samples=600, n_features=12, n_informative=6, n_redundant=2, n_classes=3,
                                            weights=[0.85, 0.1, 0.05], random_state=7)
        return [f"x{i}" for i in range(12)], x.tolist(), y.tolist(), []
    if name == "mixed":
        # shuffle=False: the informative features come first; x0 and x1 become words, x2..x9 stay numbers
        x, y = datasets.make_classification(n_samples=800, n_features=10, n_informative=5, n_redundant=2, n_classes=3,
                                            shuffle=False, random_state=11)
        size = np.array(["small", "medium", "large", "huge"])[np.digitize(x[:, 0], np.quantile(x[:, 0], [.25, .5, .75]))]
        color = np.array(["red", "green", "blue"])[np.digitize(x[:, 1], np.quantile(x[:, 1], [1 / 3, 2 / 3]))]
        numeric = x[:, 2:].astype(object)
        numeric[np.random.default_rng(11).random(numeric.shape) < MISSING_SHARE] = None
        rows = [[float(v) if v is not None else None for v in r] + [s, c]
                for r, s, c in zip(numeric.tolist(), size, color)]
        columns = [f"x{i}" for i in range(2, 10)] + ["size", "color"]
        return columns, rows, y.tolist(), [8, 9]
    raise SystemExit(f"unknown dataset {name}: choose from {', '.join(DATASETS)}")


def write_csv(path: Path, columns, rows, labels):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*columns, "label"])
        for r, label in zip(rows, labels):
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r] + [label])


def make_splits(name: str, seeds: list[int], work: Path) -> dict:
    from sklearn.model_selection import train_test_split

    columns, rows, labels, cat = load(name)
    out = {"columns": columns, "categorical": cat, "rows": len(rows), "classes": len(set(labels)),
           "features": len(columns), "splits": {}}
    for seed in seeds:
        tr_x, te_x, tr_y, te_y = train_test_split(rows, labels, test_size=0.2, stratify=labels, random_state=seed)
        folder = work / "data" / name / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "train.csv", columns, tr_x, tr_y)
        write_csv(folder / "test.csv", columns, te_x, te_y)
        out["splits"][seed] = {"dir": folder, "train": (tr_x, tr_y), "test": (te_x, te_y)}
    return out


# ---------------------------------------------------------------- dlcli


def dlcli_config(name: str, seed: int, folder: Path) -> Path:
    """configs/table_csv.yaml's model, optimizer and batch size; no train.epochs (the default, auto)."""
    path = folder / "dlcli.yaml"
    path.write_text(
        f"name: {name}-s{seed}\n"
        f"seed: {seed}\n"
        f"data: {{dataset: csv, train_file: {folder / 'train.csv'}, test_file: {folder / 'test.csv'}, "
        "label_column: label}\n"
        "model: {type: mlp, hidden: [64, 32], dropout: 0.1}\n"
        "optimizer: {name: adam, lr: 0.003}\n"
        "train: {batch_size: 32}\n")
    return path


VARIANTS = {"auto": [], "epochs=20": ["train.epochs=20"], "auto+cw": ["train.class_weights=auto"],
            "cv5": ["train.cv=5"]}
TAGS = {"auto": "auto", "epochs=20": "e20", "auto+cw": "cw", "cv5": "cv5"}  # in run names: ids never collide
DEFAULT_VARIANTS = ["auto", "epochs=20", "auto+cw"]


def dlcli_run(job: dict, runs: Path) -> dict:
    cmd = [sys.executable, "-m", "dlcli", "train", str(job["config"]), "--runs-dir", str(runs), "--quiet"]
    name = f"{job['dataset']}-s{job['seed']}-m{job['model_seed']}-{TAGS[job['variant']]}"
    for s in [f"name={name}", f"seed={job['seed'] + 1000 * job['model_seed']}", *VARIANTS[job["variant"]]]:
        cmd += ["--set", s]
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    process_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    run_id = proc.stdout.strip().splitlines()[-1]  # with train.cv, the refit
    summary = json.loads((runs / run_id / "summary.json").read_text())
    epochs = [json.loads(line) for line in (runs / run_id / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not any("val_loss" in e for e in epochs):  # a cv refit: the folds' validation curves
        cv = json.loads((runs / run_id / "cv.json").read_text())
        folds = [[json.loads(line) for line in (runs / r / "metrics.jsonl").read_text().splitlines() if line.strip()]
                 for r in cv["runs"]]
        epochs = [{"epoch": i + 1, "val_loss": sum(f[i]["val_loss"] for f in folds) / len(folds)}
                  for i in range(cv["reached"])]
    result = {"dataset": job["dataset"], "seed": job["seed"], "model_seed": job["model_seed"],
              "model": f"dlcli {job['variant']}", "run_id": run_id,
              "accuracy": summary["test"]["accuracy"], "epochs": summary["epochs"],
              "epochs_completed": summary["epochs_completed"], "best_epoch": summary["best_epoch"],
              "stopped_early": summary["stopped_early"], "wall_seconds": summary["wall_seconds"],
              "min_val_loss": min(e["val_loss"] for e in epochs), "min_val_loss_epoch":
                  min(epochs, key=lambda e: e["val_loss"])["epoch"],
              "process_seconds": round(process_s, 2)}
    if job["dataset"] == IMBALANCED:
        ev = subprocess.run([sys.executable, "-m", "dlcli", "evaluate", run_id, "--runs-dir", str(runs), "--json"],
                            check=False, capture_output=True, text=True, cwd=ROOT)
        if ev.returncode != 0:
            raise SystemExit(f"dlcli evaluate {run_id} failed:\n{ev.stderr[-3000:]}")
        report = json.loads(ev.stdout)
        result |= {"balanced_accuracy": report["balanced_accuracy"], "macro_f1": report["macro"]["f1"]}
    return result


# ---------------------------------------------------------------- scikit-learn


def sklearn_model(kind: str, seed: int, cat: list[int], n_columns: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimator = {"LR": LogisticRegression, "scaled LR": LogisticRegression,
                 "RF": lambda: RandomForestClassifier(random_state=seed), "HGB": HistGradientBoostingClassifier}[kind]()
    if not cat:
        return make_pipeline(StandardScaler(), estimator) if kind == "scaled LR" else estimator
    numeric = [i for i in range(n_columns) if i not in cat]
    num_steps = make_pipeline(SimpleImputer(), StandardScaler()) if kind == "scaled LR" else SimpleImputer()
    prep = ColumnTransformer([("num", num_steps, numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])
    return make_pipeline(prep, estimator)


def as_matrix(rows, cat: list[int]):
    import numpy as np

    if not cat:
        return np.asarray(rows, dtype=float)
    x = np.asarray(rows, dtype=object)
    for j in range(x.shape[1]):
        if j not in cat:
            x[:, j] = [np.nan if v is None else v for v in x[:, j]]
    return x


def sklearn_run(kind: str, name: str, seed: int, table: dict) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    split = table["splits"][seed]
    cat = table["categorical"]
    (tr_x, tr_y), (te_x, te_y) = split["train"], split["test"]
    model = sklearn_model(kind, seed, cat, table["features"])
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(as_matrix(tr_x, cat), tr_y)
    fit_s = time.perf_counter() - t
    pred = model.predict(as_matrix(te_x, cat))
    result = {"dataset": name, "seed": seed, "model": kind, "accuracy": float(accuracy_score(te_y, pred)),
              "fit_seconds": round(fit_s, 3),
              "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}
    if name == IMBALANCED:
        result |= {"balanced_accuracy": float(balanced_accuracy_score(te_y, pred)),
                   "macro_f1": float(f1_score(te_y, pred, average="macro"))}
    return result


# ---------------------------------------------------------------- the report


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.4f} ± {s:.4f}"


def summarise(results: list[dict], tables: dict, names: list[str]) -> dict:
    models = [*(f"dlcli {v}" for v in VARIANTS), *SKLEARN_MODELS]
    out = {}
    for name in names:
        mine = [r for r in results if r["dataset"] == name]
        by = {m: [r for r in mine if r["model"] == m] for m in models}
        entry = {"rows": tables[name]["rows"], "features": tables[name]["features"],
                 "classes": tables[name]["classes"], "models": {}}
        for m, rs in by.items():
            if not rs:
                continue
            e = {"accuracy": mean_std([r["accuracy"] for r in rs]), "per_seed": [r["accuracy"] for r in rs]}
            for key in ("balanced_accuracy", "macro_f1"):
                if key in rs[0]:
                    e[key] = mean_std([r[key] for r in rs])
            if m.startswith("dlcli"):
                for key in ("epochs", "epochs_completed", "best_epoch", "min_val_loss", "min_val_loss_epoch",
                            "wall_seconds"):
                    e[key] = [r[key] for r in rs]
                e["stopped_early"] = sum(r["stopped_early"] for r in rs)
            else:
                e["fit_seconds"] = statistics.fmean(r["fit_seconds"] for r in rs)
                e["not_converged"] = sum(not r["converged"] for r in rs)
            entry["models"][m] = e
        best_sk = max(SKLEARN_MODELS, key=lambda m: entry["models"][m]["accuracy"][0])
        entry["best_sklearn"] = best_sk
        head = "dlcli auto" if "dlcli auto" in entry["models"] else next(m for m in entry["models"] if "dlcli" in m)
        gap = entry["models"][head]["accuracy"][0] - entry["models"][best_sk]["accuracy"][0]
        entry["gap_auto_vs_best_sklearn"] = round(gap, 6) + 0.0  # no -0.0000
        if "dlcli cv5" in entry["models"] and "dlcli auto" in entry["models"]:
            # paired by (split, seed): the same train.csv, test.csv and dlcli seed on both sides
            a = {(r["seed"], r["model_seed"]): r["accuracy"] for r in by["dlcli auto"]}
            diffs = [r["accuracy"] - a[(r["seed"], r["model_seed"])] for r in by["dlcli cv5"]]
            entry["cv5_minus_auto"] = {"mean": statistics.fmean(diffs), "wins": sum(d > 0 for d in diffs),
                                       "ties": sum(d == 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
                                       "wall_ratio": statistics.fmean(r["process_seconds"] for r in by["dlcli cv5"])
                                       / statistics.fmean(r["process_seconds"] for r in by["dlcli auto"])}
        out[name] = entry
    return out


def over_tables(summary: dict) -> dict:
    """Each model's mean test accuracy over the tables (each table's mean over the seeds counts once)."""
    keys = [k for k in [*(f"dlcli {v}" for v in VARIANTS if v != "auto+cw"), *SKLEARN_MODELS]
            if all(k in e["models"] for e in summary.values())]
    return {k: statistics.fmean(e["models"][k]["accuracy"][0] for e in summary.values()) for k in keys}


def print_report(summary: dict, seeds: list[int], total_s: float, model_seeds: list[int] = (0,)):
    print(f"\nSmall tables: test accuracy, mean ± std over split seeds {', '.join(map(str, seeds))} (stratified "
          f"80/20 splits)" + (f" x dlcli model seeds {', '.join(map(str, model_seeds))}" if len(model_seeds) > 1
                              else "") + f"; {machine()}\n")
    mine = [k for k in (f"dlcli {v}" for v in VARIANTS if v != "auto+cw")
            if any(k in e["models"] for e in summary.values())]
    cols = ["dataset", "rows", "classes", *mine, *SKLEARN_MODELS, "dlcli − best sklearn"]
    print("| " + " | ".join(cols) + " |")
    print("| " + " | ".join("---" for _ in cols) + " |")
    for name, e in summary.items():
        m = e["models"]
        row = [name, str(e["rows"]), str(e["classes"])]
        row += [cell(m[k]["per_seed"]) if k in m else "-" for k in [*mine, *SKLEARN_MODELS]]
        row.append(f"{e['gap_auto_vs_best_sklearn']:+.4f} ({e['best_sklearn']})")
        print("| " + " | ".join(row) + " |")
    if len(summary) > 1:
        means = over_tables(summary)
        print(f"| mean of {len(summary)} tables | | | "
              + " | ".join(f"{means[k]:.4f}" if k in means else "-" for k in [*mine, *SKLEARN_MODELS])
              + f" | {means[mine[0]] - max(means[k] for k in SKLEARN_MODELS):+.4f} |")
    paired = {n: e["cv5_minus_auto"] for n, e in summary.items() if "cv5_minus_auto" in e}
    if paired:
        print("\ncv5 against auto, paired by split and seed: mean test accuracy difference, wins/ties/losses, "
              "wall time ratio\n")
        print("| dataset | cv5 − auto | wins / ties / losses | wall cv5 / auto |\n| --- | --- | --- | --- |")
        for n, d in paired.items():
            print(f"| {n} | {d['mean']:+.4f} | {d['wins']} / {d['ties']} / {d['losses']} | {d['wall_ratio']:.1f}x |")

    if IMBALANCED in summary:
        m = summary[IMBALANCED]["models"]
        print(f"\n{IMBALANCED}: test balanced accuracy and macro F1, mean ± std\n")
        print("| model | accuracy | balanced accuracy | macro F1 |\n| --- | --- | --- | --- |")
        for k in ["dlcli auto", "dlcli epochs=20", "dlcli auto+cw", *SKLEARN_MODELS]:
            if k in m:
                figures = " | ".join(f"{m[k][key][0]:.4f} ± {m[k][key][1]:.4f}"
                                     for key in ("accuracy", "balanced_accuracy", "macro_f1"))
                print(f"| {k} | {figures} |")

    if "dlcli auto" not in next(iter(summary.values()))["models"]:
        print(f"Total {total_s:.0f} s.")
        return
    print("\ndlcli auto, per seed: epochs chosen, completed, best (best.pt) and lowest val_loss (epoch); wall s (mean)\n")
    print("| dataset | epochs (auto) | completed | best epoch | lowest val_loss (epoch) | stopped early | wall s auto "
          "| wall s epochs=20 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, e in summary.items():
        for k in ["dlcli auto"] + (["dlcli auto+cw"] if "dlcli auto+cw" in e["models"] else []):
            a = e["models"][k]
            label = name if k == "dlcli auto" else f"{name} (+cw)"
            e20 = e["models"].get("dlcli epochs=20")
            print(f"| {label} | {'/'.join(map(str, a['epochs']))} | {'/'.join(map(str, a['epochs_completed']))} | "
                  f"{'/'.join(map(str, a['best_epoch']))} | "
                  f"{' / '.join(f'{v:.3g} ({ep})' for v, ep in zip(a['min_val_loss'], a['min_val_loss_epoch']))} | "
                  f"{a['stopped_early']}/{len(a['epochs'])} | "
                  f"{statistics.fmean(a['wall_seconds']):.1f} | "
                  + (f"{statistics.fmean(e20['wall_seconds']):.1f} |" if e20 else "- |"))
    warns = [f"{n} {k} {e['models'][k]['not_converged']}/{len(seeds)}" for n, e in summary.items()
             for k in ("LR", "scaled LR") if e["models"][k]["not_converged"]]
    print(f"\nLR warns (ConvergenceWarning at max_iter=100, seeds): {', '.join(warns) or 'none'}")
    print(f"Total {total_s:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split (and dlcli) seeds")
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0],
                        help="dlcli is also trained with seed split + 1000 * M for each M (default 0: the split's)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlcli-bench-small-tables"),
                        help="where the CSV files and the runs go (its runs/ is emptied first)")
    parser.add_argument("--jobs", type=int, default=1, help="dlcli processes at a time (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs scikit-learn: pip install scikit-learn")

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))
    start = time.perf_counter()
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    tables = {name: make_splits(name, args.seeds, args.work) for name in args.datasets}

    results = []
    for name, table in tables.items():
        for seed in args.seeds:
            for kind in SKLEARN_MODELS:
                results.append(sklearn_run(kind, name, seed, table))
    log(f"scikit-learn: {len(results)} fits in {time.perf_counter() - start:.1f} s")

    jobs = [{"dataset": name, "seed": seed, "model_seed": m, "variant": variant,
             "config": dlcli_config(name, seed, table["splits"][seed]["dir"])}
            for name, table in tables.items() for seed in args.seeds for m in args.model_seeds
            for variant in args.variants if variant != "auto+cw" or name == IMBALANCED]

    def one(job):
        r = dlcli_run(job, runs)
        log(f"  {r['dataset']:<13} seed {r['seed']}/{r['model_seed']} {r['model']:<15} acc {r['accuracy']:.4f}  "
            f"epochs {r['epochs_completed']}/{r['epochs']} (best {r['best_epoch']})  {r['wall_seconds']:.1f} s")
        return r

    log(f"dlcli: {len(jobs)} runs, {args.jobs} at a time")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results += list(pool.map(one, jobs))

    summary = summarise(results, tables, args.datasets)
    total = time.perf_counter() - start
    if args.json:
        print(json.dumps({"machine": machine(), "seeds": args.seeds, "model_seeds": args.model_seeds,
                          "variants": args.variants, "total_seconds": round(total, 1),
                          "summary": summary, "mean_over_tables": over_tables(summary), "runs": results}, indent=2))
    else:
        print_report(summary, args.seeds, total, args.model_seeds)


if __name__ == "__main__":
    main()
