"""`dlcli train`: config -> data -> model -> a run directory with metrics, checkpoints and a test score."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from dlcli import __version__, runs
from dlcli.data import load_data
from dlcli.engine import Callback, EarlyStopping, Trainer, monitor_mode, resolve_device, seed_everything
from dlcli.models import build_model, count_parameters


class RunRecorder(Callback):
    """metrics.jsonl line, last.pt and (when the monitored metric improves) best.pt after every epoch."""

    def __init__(self, run: Path, monitor: str):
        self.run, self.monitor, self.mode = run, monitor, monitor_mode(monitor)
        self.best_value, self.best_epoch = None, None

    def on_epoch_end(self, trainer, metrics):
        runs.append_jsonl(self.run / "metrics.jsonl", metrics)
        state = trainer.checkpoint_state()
        value = metrics[self.monitor]
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if better:
            self.best_value, self.best_epoch = value, metrics["epoch"]
        state["best"] = {"monitor": self.monitor, "value": self.best_value, "epoch": self.best_epoch}
        runs.save_checkpoint(self.run / "checkpoints" / "last.pt", state)
        if better:
            runs.save_checkpoint(self.run / "checkpoints" / "best.pt", state)


class ProgressDisplay(Callback):
    """A rich progress bar per epoch (loss, accuracy, samples/s) and one summary line per epoch."""

    def __init__(self, console, epochs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console, self.epochs = console, epochs
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.4f}  {task.fields[speed]:,.0f} samples/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task, self.next_refresh = None, 0.0

    def on_fit_start(self, trainer):
        self.progress.start()

    def on_epoch_start(self, trainer, steps):
        self.started = time.perf_counter()
        self.next_refresh = self.started + 0.25
        label = f"{trainer.state.epoch + 1}/{self.epochs}"
        self.task = self.progress.add_task("", total=len(trainer.train_split), epoch=label, loss=0.0, acc=0.0, speed=0.0)

    def on_step(self, trainer, seen, loss_sum, correct):
        now = time.perf_counter()
        if now < self.next_refresh and seen < len(trainer.train_split):
            return
        self.next_refresh = now + 0.25  # reading the sums waits for the device: only a few times a second
        self.progress.update(self.task, completed=seen, loss=loss_sum.item() / seen, acc=correct.item() / seen,
                             speed=seen / max(now - self.started, 1e-9))

    def on_epoch_end(self, trainer, m):
        self.progress.remove_task(self.task)
        parts = [f"epoch {m['epoch']}/{self.epochs}", f"loss {m['train_loss']:.4f}", f"acc {m['train_accuracy']:.4f}"]
        if "val_loss" in m:
            parts += [f"val_loss {m['val_loss']:.4f}", f"val_acc {m['val_accuracy']:.4f}"]
        n = len(trainer.train_split)
        parts += [f"lr {m['lr']:.3g}", f"{m['seconds']:.1f}s", f"{n / max(m['seconds'], 1e-9):,.0f} samples/s"]
        self.console.print("  ".join(parts), soft_wrap=True)

    def on_fit_end(self, trainer):
        self.progress.stop()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"dlcli": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        out["torchvision"] = version("torchvision")
    except PackageNotFoundError:
        pass
    return out


def train(cfg, runs_root: Path, console, show_progress: bool = True) -> Path:
    started = time.perf_counter()
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = load_data(cfg)
    model, _ = build_model(cfg.model, data.input_shape, len(data.classes))
    _check_augment(cfg, data)

    run = runs.create_run(runs_root, cfg.name)  # only now: a bad config or missing data leaves no directory
    runs.write_yaml(run / "config.yaml", cfg.resolved())
    runs.write_json(run / "data.json", {"classes": data.classes, "input_shape": list(data.input_shape),
                                        "normalization": data.normalizer.to_dict()})
    summary = {"status": "running", "run_id": run.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    runs.write_json(run / "summary.json", summary)

    recorder = RunRecorder(run, cfg.train.checkpoint_monitor)
    callbacks: list[Callback] = [recorder]
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        callbacks.append(EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
    if show_progress:
        callbacks.append(ProgressDisplay(console, cfg.train.epochs))
    trainer = Trainer(cfg, data, model, device, callbacks)
    console.print(f"run {run.name}: {cfg.data.dataset} ({len(data.train):,} train, "
                  f"{len(data.val) if data.val else 0:,} val, {len(data.test):,} test) on {device}, "
                  f"precision {trainer.precision}, {count_parameters(model):,} parameters", soft_wrap=True)
    try:
        fit_started = time.perf_counter()
        state = trainer.fit()
        train_seconds = time.perf_counter() - fit_started
    except BaseException as err:
        summary.update(status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                       error=str(err)[:500], epochs_completed=trainer.state.epoch)
        runs.write_json(run / "summary.json", summary)
        raise

    best = runs.load_checkpoint(run / "checkpoints" / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    test = trainer.evaluate(data.test.to(device))
    samples = len(data.train) * state.epoch
    summary.update(
        status="completed",
        epochs_completed=state.epoch,
        epochs=cfg.train.epochs,
        stopped_early=state.epoch < cfg.train.epochs,
        best_epoch=recorder.best_epoch,
        best_metric={"name": recorder.monitor, "value": recorder.best_value},
        test=test,
        parameters=count_parameters(model),
        train_seconds=round(train_seconds, 3),
        wall_seconds=round(time.perf_counter() - started, 3),
        samples_per_second=round(samples / max(train_seconds, 1e-9), 1),
        device=str(device),
        precision=trainer.precision,
        versions=versions(),
    )
    runs.write_json(run / "summary.json", summary)
    console.print(f"test accuracy {test['accuracy']:.4f}  test loss {test['loss']:.4f}  (best epoch "
                  f"{recorder.best_epoch} by {recorder.monitor}; {summary['wall_seconds']:.1f}s)", soft_wrap=True)
    return run


def _check_augment(cfg, data):
    from dlcli.errors import DlcliError

    if cfg.data.augment and len(data.input_shape) != 3:
        raise DlcliError(f"data.augment: augmentations need image data; {cfg.data.dataset} gives shape "
                         f"{tuple(data.input_shape)}")
