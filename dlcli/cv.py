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
     With train.cv_final: bag there is no refit: the final run holds the K folds' best checkpoints as one model
     averaging their outputs (dlcli.models.bag; AutoGluon's bagging), scored on the test split. So that one module
     can average them, every fold reads its inputs with the preprocessing, normalisation and target scaling fitted on
     all the training rows (label-free statistics, plus the target's mean and standard deviation), as AutoGluon fits
     its feature generators before bagging; cv.json then also holds each fold's figures at its own best epoch, the
     out-of-fold score of the bag's recipe.

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
    one.train.cv, one.train.cv_final = None, "refit"  # the resolved config trains this one fold
    one.train.checkpoint_monitor = fold_monitor(cfg)
    return one


def refit_config(cfg, epochs: int):
    """All the training rows, no validation split, `epochs` epochs and no early stopping; monitors that read the
    validation split fall back to their training twins, as with any val_split: 0."""
    one = cfg.model_copy(deep=True)
    one.data.val_split, one.data.cv_fold = 0.0, None
    one.train.cv, one.train.cv_final, one.train.epochs, one.train.early_stopping = None, "refit", epochs, None
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
    """Train the K folds and the final run (the refit, or the bag: train.cv_final); returns their runs, the final
    one last. Prints the folds' validation figures (mean +- std at the chosen epoch; a bag's at each fold's own best)
    to stderr, as `train --repeat` prints its test figures."""
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
    bag = cfg.train.cv_final == "bag"
    fits = all_rows_fits(cfg) if bag else None
    group = f"{cfg.name}-cv{folds}-{time.strftime('%Y%m%d-%H%M%S')}"
    done = []
    for k in range(1, folds + 1):
        one = fold_config(cfg, k, folds)
        console.print(f"cv fold {k}/{folds}: validating on fold {k}, training on the other {folds - 1}",
                      soft_wrap=True)
        tags = {"cv": group, "fold": k, "of": folds, "seed": one.seed}
        done.append(train(one, runs_root, console, show_progress, world, tags=tags, fits=fits))
    histories = [_epochs(run) for run in done] if world.main else []
    monitor = fold_monitor(cfg)
    prefix = monitor[: len(monitor) - len(bare(monitor))]
    twin = prefix + (cfg.task.metrics[0] if bare(monitor) == "loss" else "loss")
    epochs, curve = choose_epoch(histories, monitor, twin) if world.main else (None, [])
    epochs = world.broadcast(epochs)
    figures, at_best = {}, own_best(histories, done) if bag and world.main else None
    if world.main and at_best is not None:
        shown = "  ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in at_best.items())
        print(f"cv {folds} folds, each at its best epoch (the bag's members): {shown} (mean +- std; group {group})",
              file=sys.stderr)
    if world.main:
        at = [h[epochs - 1] for h in histories]
        for key in dict.fromkeys([monitor, *(f"val_{m}" for m in cfg.task.metrics), "val_loss"]):
            values = [m[key] for m in at if isinstance(m.get(key), (int, float))]
            if len(values) == folds:
                mean, std = mean_std(values)
                figures[key] = {"mean": mean, "std": std, "per_fold": values}
        shown = "  ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in figures.items())
        if at_best is None:
            print(f"cv {folds} folds at epoch {epochs} (best mean {monitor}): {shown} (mean +- std; group {group})",
                  file=sys.stderr)  # --quiet too, as `train --repeat` says its figures
    if bag:
        final = bag_run(cfg, runs_root, console, world, done, epochs, fits,
                        {"cv": group, "bag": True, "of": folds, "seed": cfg.seed})
        if world.main:
            write_cv(final, group, folds, done, monitor, epochs, histories, curve, figures, at_best)
        return [*done, final]
    refit = refit_config(cfg, epochs)
    console.print(f"cv refit: all training rows for {epochs} epochs (the folds' choice), scoring the last",
                  soft_wrap=True)
    tags = {"cv": group, "refit": True, "of": folds, "epochs": epochs, "seed": refit.seed}
    final = train(refit, runs_root, console, show_progress, world, tags=tags, keep_last=True)
    if world.main:
        write_cv(final, group, folds, done, monitor, epochs, histories, curve, figures)
    return [*done, final]


def write_cv(final, group, folds, done, monitor, epochs, histories, curve, figures, at_best=None):
    runs.write_json(final / CV_FILE, {
        "group": group, "folds": folds, "runs": [run.name for run in done], "monitor": monitor,
        "epochs": epochs, "reached": min(len(h) for h in histories), "curve": curve, "at_epoch": figures,
        "best": [{"run": run.name, "epoch": (runs.read_json(run / "summary.json") or {}).get("best_epoch")}
                 for run in done], **({"at_best": at_best} if at_best is not None else {})})


def own_best(histories: list[list[dict]], done: list[Path]) -> dict:
    """Each fold's validation figures at its own best epoch (the checkpoint a bag keeps): mean and per fold."""
    from dlcli.compare import mean_std

    rows = []
    for history, run in zip(histories, done):
        best = (runs.read_json(run / "summary.json") or {}).get("best_epoch")
        rows.append(history[best - 1] if isinstance(best, int) and 0 < best <= len(history) else {})
    out = {}
    for key in sorted({k for r in rows for k in r if k.startswith("val_")}):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if len(values) == len(rows):
            mean, std = mean_std(values)
            out[key] = {"mean": mean, "std": std, "per_fold": values}
    return out


def all_rows_fits(cfg) -> dict:
    """The preprocessing, normalisation and target fit of all the training rows (the test split cut as always),
    which every fold of a bag reads its inputs with."""
    from dlcli.data import load_data

    data = load_data(refit_config(cfg, 1))
    return {"preprocessing": data.preprocessing, "normalization": data.normalizer.to_dict(), "target": data.target}


def bag_run(cfg, runs_root: Path, console, world, done: list[Path], epochs: int, fits: dict, tags: dict) -> Path:
    """The final run of train.cv_final: bag: one checkpoint holding the folds' best weights as a Bag, its data.json
    the all-rows fits, scored on the test split; nothing is trained."""
    from collections import OrderedDict

    from dlcli.engine import Trainer
    from dlcli.finetune import model_for
    from dlcli.models import count_parameters
    from dlcli.models.bag import Bag
    from dlcli.training import build, data_info, versions

    started = time.perf_counter()
    final = refit_config(cfg, epochs)  # all the training rows; the fold configs' epoch count, for the record
    final.train.cv, final.train.cv_final = len(done), "bag"
    device, data, _ = build(final, world=world, fits=fits)
    members, best = [], []
    for run in done:
        member = model_for(final, data, pretrained=False)
        state = runs.load_either_checkpoint(run, "best")[0] if world.main else None
        state = world.broadcast(state)
        member.load_state_dict(OrderedDict((k.removeprefix("_orig_mod."), v) for k, v in state["model"].items()))
        members.append(member)
        best.append(state.get("epoch"))
    model = Bag(members, final.task.bag_rule)
    trainer = Trainer(final, data, model, device, [], world)
    test = trainer.evaluate(data.test.to(device))
    run = runs_root / world.broadcast(runs.create_run(runs_root, cfg.name).name if world.main else None)
    if not world.main:
        return run
    with runs.RunLock(run):
        runs.write_yaml(run / "config.yaml", final.resolved())
        runs.write_json(run / "data.json", data_info(final, data))
        runs.write_json(run / runs.TAGS, tags)
        state = {"model": model.state_dict(), "epoch": epochs,
                 "best": {"monitor": "the folds' own best checkpoints", "value": None, "epoch": epochs}}
        runs.save_checkpoint(run / "checkpoints" / "best.pt", state)
        runs.save_checkpoint(run / "checkpoints" / "last.pt", state)
        task = trainer.task
        reason = f"the mean of the {len(done)} folds' models, each at its best epoch ({', '.join(map(str, best))})"
        runs.write_json(run / "summary.json", {
            "status": "completed", "run_id": run.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **runs.owner(), "epochs_completed": epochs, "epochs": epochs, "stopped_early": False,
            "best_epoch": epochs, "best_metric": {"name": fold_monitor(cfg), "value": None}, "best_reason": reason,
            "bagged": {"folds": [r.name for r in done], "best_epochs": best},
            "task": task.entry_name, "headline": task.headline, "test": test, "parameters": count_parameters(model),
            "train_seconds": 0.0, "wall_seconds": round(time.perf_counter() - started, 3), "device": str(device),
            "world_size": world.size, "effective_batch_size": trainer.global_batch, "precision": trainer.precision,
            "threads": torch_threads() if device.type == "cpu" else None, "versions": versions()})
    shown = dict.fromkeys((task.headline, *task.metrics, "loss"))
    figures = "  ".join(f"test {k} {test[k]:.4f}" for k in shown if isinstance(test.get(k), float))
    console.print(f"cv bag: run {run.name} averages the {len(done)} folds' models  {figures}", soft_wrap=True)
    return run


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
