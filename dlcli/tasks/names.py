"""Metric names: which way each is better, and how run records name them. A leaf module (no imports), so the
run store and the plots read it without reaching up into the task entries (dlcli.tasks re-exports all of it)."""

from __future__ import annotations

# Which way is better, by metric name (any train_/val_/test_ prefix removed): higher for these, lower for the rest
# (loss, mae, rmse, ...).
HIGHER_IS_BETTER = frozenset({
    "accuracy", "balanced_accuracy", "top5_accuracy", "r2", "f1_micro", "f1_macro", "subset_accuracy",
    "label_accuracy", "map", "map50", "map75", "recall", "iou", "roc_auc", "average_precision", "miou",
    "miou_foreground", "dice", "pixel_accuracy",
})
PREFIXES = ("train_", "val_", "test_")


def bare(metric: str) -> str:
    for prefix in PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def metric_mode(metric: str, mode: str = "auto") -> str:
    """`max` or `min`: how a monitor improves (an explicit mode wins)."""
    if mode != "auto":
        return mode
    return "max" if bare(metric) in HIGHER_IS_BETTER else "min"


def short_name(metric: str) -> str:
    """The progress display's name of a metric: `val_acc` for val_accuracy, the rest as they are."""
    return metric.replace("accuracy", "acc")


def running_metric(row: dict) -> str:
    """The task's running metric in a metrics.jsonl row (accuracy, mae, ...): its train_ key besides the loss."""
    found = [k[len("train_"):] for k in row if k.startswith("train_") and k != "train_loss"]
    return found[0] if found else "accuracy"


def headline(summary: dict) -> tuple[str, float | None]:
    """(name, value) of a finished run's test headline (summary.json; runs from before tasks: accuracy)."""
    name = summary.get("headline") if isinstance(summary.get("headline"), str) else "accuracy"
    test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
    value = test.get(name)
    return name, value if isinstance(value, (int, float)) else None
