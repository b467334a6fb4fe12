"""PNG figures of a run: learning curves (`curves.png`) and confusion matrices (`confusion-<split>.png`).

matplotlib is imported inside the functions, with the Agg backend, so importing this module costs nothing and
plotting works without a display.
"""

from __future__ import annotations

from pathlib import Path

from dlcli import rundirs as runs
from dlcli.errors import RUNTIME, DlcliError

CURVES = "curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    try:
        runs.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    except OSError as err:
        raise DlcliError(f"could not write {path} ({err.strerror or err})", RUNTIME) from None
    finally:
        plt.close(fig)
    return path


def write_curves(run_dir) -> Path:
    """`<run>/curves.png`: loss and the task's running metric (accuracy, mae, ...) per epoch, train against
    validation, from metrics.jsonl."""
    run = Path(run_dir)
    try:
        history = runs.read_metrics(run)
    except ValueError as err:  # a damaged metrics.jsonl line
        raise DlcliError(f"{run / 'metrics.jsonl'}: damaged ({err})", RUNTIME) from None
    history = [m for m in history if isinstance(m, dict) and "epoch" in m]
    if not history:
        raise DlcliError(f"run {run.name} has no finished epoch yet: nothing to plot", RUNTIME)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = [m["epoch"] for m in history]
    from dlcli.tasks.names import running_metric

    second = running_metric(history[0])  # accuracy, or the task's running metric (mae, subset_accuracy)
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], second, second.replace("_", " ").capitalize())):
        for prefix, label, style in (("train", "train", "-o"), ("val", "validation", "--s")):
            points = [(e, m[f"{prefix}_{metric}"]) for e, m in zip(epochs, history) if f"{prefix}_{metric}" in m]
            if points:
                ax.plot(*zip(*points), style, label=label, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    fig.suptitle(run.name)
    return _save(fig, run / CURVES)


def write_confusion(path: Path, matrix: list[list[int]], classes: list[str], title: str) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) as a heat map; counts written in when it fits."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    side = min(4 + 0.55 * k, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), constrained_layout=True)
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    if k <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, Path(path))


def plot_files(run_dir) -> list[Path]:
    """The PNG files a run has now, curves first."""
    run = Path(run_dir)
    found = [run / CURVES] if (run / CURVES).is_file() else []
    return found + sorted(p for pattern in ("confusion-*.png", "regression-*.png", "labels-*.png", "forecast-*.png")
                          for p in run.glob(pattern))


def write_regression(path: Path, pred, actual, names: list[str], title: str) -> Path:
    """Predicted against actual (with the identity line) and residuals against predicted, one column per target
    (the first six)."""
    plt = _pyplot()
    k = min(len(names), 6)
    fig, axes = plt.subplots(2, k, figsize=(4 * k, 7.5), constrained_layout=True, squeeze=False)
    for j in range(k):
        p, a = pred[:, j], actual[:, j]
        lo, hi = float(min(p.min(), a.min())), float(max(p.max(), a.max()))
        top, bottom = axes[0][j], axes[1][j]
        top.scatter(a, p, s=8, alpha=0.6)
        top.plot([lo, hi], [lo, hi], color="black", linewidth=1)
        top.set_xlabel(f"actual {names[j]}")
        top.set_ylabel(f"predicted {names[j]}")
        bottom.scatter(p, a - p, s=8, alpha=0.6)
        bottom.axhline(0, color="black", linewidth=1)
        bottom.set_xlabel(f"predicted {names[j]}")
        bottom.set_ylabel("residual (actual - predicted)")
    fig.suptitle(title)
    return _save(fig, Path(path))


def write_label_scores(path: Path, per_label: list[dict], title: str) -> Path:
    """Precision, recall and F1 per label as grouped bars (the first 40 labels)."""
    import numpy as np

    plt = _pyplot()
    rows = per_label[:40]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 4.5), constrained_layout=True)
    for i, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], width=0.27, label=key)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title)
    return _save(fig, Path(path))
