"""k-fold cross-validation: `dlcli train CONFIG --cv K` (or `train.cv: K`).

On a few hundred rows a 10% validation split is a dozen samples, and whatever is chosen on it (the best epoch, early
stopping) is mostly noise. Cross-validation uses every training row for validation once instead:

  1. K runs of the config, run k validating on fold k of the rows left after the test cut (data.cv_fold, stratified
     by class where the task has classes) and training on the other K - 1 folds; each is an ordinary run, tagged
     as one group (tags.json `cv`) the way `train --repeat` tags its runs;
  2. the epoch count: the epoch whose validation figure (train.checkpoint_monitor, e.g. val_accuracy), averaged
     over the folds, is best (ties go to the better mean of its twin, the loss for a metric monitor, as best.pt's
     do), among the epochs every fold reached;
  3. a refit on all the training rows (no validation split) for that many epochs, which scores its last epoch on
     the test split. Its cv.json holds the folds' validation figures (mean +- std at the chosen epoch) and the curve.

The test split is the same rows in every run (it is cut first, from the seed), so no fold ever sees it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dlcli import rundirs as runs
from dlcli.errors import ConfigError

CV_FILE = "cv.json"


def fold_monitor(cfg) -> str:
    """What the folds choose by: train.checkpoint_monitor, or the task's validation default where a config without
    a validation split had it fall back to a training figure (every fold has a validation split)."""
    monitor = cfg.train.checkpoint_monitor
    return monitor if monitor.startswith("val_") else cfg.task.best_monitor()


def fold_config(cfg, k: int, folds: int):
    one = cfg.model_copy(deep=True)
    one.data.cv_fold = (k, folds)
    one.train.cv = None  # the resolved config trains this one fold
    one.train.checkpoint_monitor = fold_monitor(cfg)
    return one


def refit_config(cfg, epochs: int):
    """All the training rows, no validation split, `epochs` epochs and no early stopping; monitors that read the
    validation split fall back to their training twins, as with any val_split: 0."""
    one = cfg.model_copy(deep=True)
    one.data.val_split, one.data.cv_fold = 0.0, None
    one.train.cv, one.train.epochs, one.train.early_stopping = None, epochs, None
    one.monitor_training()
    return one


def choose_epoch(histories: list[list[dict]], monitor: str, twin: str | None) -> tuple[int, list[float]]:
    """(the epoch of the best mean `monitor` over the folds, that mean per epoch), over the epochs every fold
    reached; a tie goes to the better mean `twin`, then to the earlier epoch."""
    from dlcli.engine import monitor_mode

    reached = min(len(h) for h in histories)
    if reached == 0:
        raise ConfigError("train.cv: a fold finished no epoch")

    def mean_of(key: str, epoch: int) -> float | None:
        values = [h[epoch][key] for h in histories if isinstance(h[epoch].get(key), (int, float))]
        # rounded: equal figures summed in another order must tie, not differ in the last bit
        return round(sum(values) / len(values), 12) if len(values) == len(histories) else None

    curve = [mean_of(monitor, e) for e in range(reached)]
    sign = 1.0 if monitor_mode(monitor) == "max" else -1.0
    twin_sign = 1.0 if twin and monitor_mode(twin) == "max" else -1.0

    def rank(e: int):
        twin_mean = mean_of(twin, e) if twin else None
        return (sign * curve[e], twin_sign * twin_mean if twin_mean is not None else float("-inf"), -e)

    best = max((e for e in range(reached) if curve[e] is not None), key=rank, default=None)
    if best is None:
        raise ConfigError(f"train.cv: the folds recorded no {monitor}; choose a validation metric for "
                          f"train.checkpoint_monitor")
    return best + 1, curve


def _epochs(run: Path) -> list[dict]:
    """metrics.jsonl's epoch lines, one per epoch in order (a resumed epoch counts once, its last line)."""
    by_epoch = {m["epoch"]: m for m in runs.read_metrics(run) if isinstance(m.get("epoch"), int)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def cross_validate(cfg, runs_root: Path, console, show_progress: bool, world, folds: int) -> list[Path]:
    """Train the K folds and the refit; returns their runs, the refit last. Prints the folds' validation figures
    (mean +- std at the chosen epoch) to stderr, as `train --repeat` prints its test figures."""
    from dlcli.compare import mean_std
    from dlcli.finetune import resolve_init
    from dlcli.tasks import bare
    from dlcli.training import train

    if not type(cfg.data).folds:
        raise ConfigError(f"train.cv: the {cfg.data.dataset} dataset cuts its validation split its own way and has "
                          f"no cross-validation folds: train without --cv")
    if cfg.data.max_train_samples is not None:
        raise ConfigError("train.cv: data.max_train_samples would cap the fold and refit training rows "
                          "differently: remove it, or train without --cv")
    cfg.model.init = resolve_init(cfg.model.init, runs_root)  # `latest` is the run before the first fold
    group = f"{cfg.name}-cv{folds}-{time.strftime('%Y%m%d-%H%M%S')}"
    done = []
    for k in range(1, folds + 1):
        one = fold_config(cfg, k, folds)
        console.print(f"cv fold {k}/{folds}: validating on fold {k}, training on the other {folds - 1}",
                      soft_wrap=True)
        tags = {"cv": group, "fold": k, "of": folds, "seed": one.seed}
        done.append(train(one, runs_root, console, show_progress, world, tags=tags))
    histories = [_epochs(run) for run in done] if world.main else []
    monitor = fold_monitor(cfg)
    prefix = monitor[: len(monitor) - len(bare(monitor))]
    twin = prefix + (cfg.task.metrics[0] if bare(monitor) == "loss" else "loss")
    epochs, curve = choose_epoch(histories, monitor, twin) if world.main else (None, [])
    epochs = world.broadcast(epochs)
    figures = {}
    if world.main:
        at = [h[epochs - 1] for h in histories]
        for key in dict.fromkeys([monitor, *(f"val_{m}" for m in cfg.task.metrics), "val_loss"]):
            values = [m[key] for m in at if isinstance(m.get(key), (int, float))]
            if len(values) == folds:
                mean, std = mean_std(values)
                figures[key] = {"mean": mean, "std": std, "per_fold": values}
        shown = "  ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in figures.items())
        print(f"cv {folds} folds at epoch {epochs} (best mean {monitor}): {shown} (mean +- std; group {group})",
              file=sys.stderr)  # --quiet too, as `train --repeat` says its figures
    refit = refit_config(cfg, epochs)
    console.print(f"cv refit: all training rows for {epochs} epochs (the folds' choice), scoring the last",
                  soft_wrap=True)
    tags = {"cv": group, "refit": True, "of": folds, "epochs": epochs, "seed": refit.seed}
    final = train(refit, runs_root, console, show_progress, world, tags=tags, keep_last=True)
    if world.main:
        runs.write_json(final / CV_FILE, {
            "group": group, "folds": folds, "runs": [run.name for run in done], "monitor": monitor,
            "epochs": epochs, "reached": min(len(h) for h in histories), "curve": curve, "at_epoch": figures,
            "best": [{"run": run.name, "epoch": (runs.read_json(run / "summary.json") or {}).get("best_epoch")}
                     for run in done]})
    return [*done, final]
