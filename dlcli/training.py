"""`dlcli train` and `dlcli resume`: config -> data -> model -> a run directory with metrics, checkpoints, a test score.

A run's summary.json says `running`, `completed`, `interrupted` (Ctrl-C, SIGTERM: a checkpoint was saved at the step
it stopped) or `failed` (a non-finite loss, a failed write: the last good checkpoint is kept). `resume` continues any
of them from checkpoints/last.pt, exactly where it stopped.

In a DDP run (`world`, see dlcli.distributed) every rank trains and evaluates; rank 0 alone reads and writes the run
directory and shows progress, and hands the others what they need from it (the run id, the checkpoint to resume).
"""

from __future__ import annotations

import contextlib
import math
import platform
import sys
import time
from pathlib import Path

import torch

from dlcli import __version__, track
from dlcli import rundirs as runs
from dlcli.data import load_data
from dlcli.distributed import SINGLE, World
from dlcli.engine import (Callback, EarlyStopping, Interrupted, StopNow, Trainer, auto_threads, monitor_mode,
                          predict_logits, resolve_device, seed_everything, use_channels_last)
from dlcli.errors import RUNTIME, DlcliError, TrainingInterrupted
from dlcli.finetune import FreezeSchedule, frozen_note, init_from, model_for, resolve_image_size, resolve_init
from dlcli.models import count_parameters
from dlcli.precise_bn import PreciseBN


class RunRecorder(Callback):
    """metrics.jsonl line, last.pt and (when the monitored metric improves) best.pt after every epoch; last.pt
    also where a signal stopped the fit. Goes last among the callbacks, so checkpoints hold their epoch-end state.

    An epoch that ties the best monitored value is better when its twin metric is (the loss for an accuracy
    monitor, the accuracy for a loss monitor): a small validation split saturates at accuracy 1.0 within a few
    epochs, and without the tie-break best.pt would stay at the first of them however much the model improves.
    """

    def __init__(self, run: Path, monitor: str, task, summary: dict | None = None, keep_last: bool = False):
        from dlcli.tasks import bare

        self.run, self.monitor, self.mode = run, monitor, monitor_mode(monitor)
        self.summary = summary  # summary.json of a running run: updated with the checkpoints as they land
        # the twin: the loss for a metric monitor, the task's first metric for a loss monitor
        prefix = monitor[: len(monitor) - len(bare(monitor))]
        self.twin = prefix + (task.metrics[0] if bare(monitor) == "loss" else "loss")
        self.best_value, self.best_epoch, self.best_twin, self.reason = None, None, None, None
        # keep_last: best.pt is every epoch's, so the run scores its last (a cross-validation refit, dlcli.cv,
        # trains the epoch count the folds chose and has no validation split to choose by)
        self.keep_last = keep_last

    def _better(self, a, b, mode: str) -> bool:
        return a > b if mode == "max" else a < b

    def on_epoch_end(self, trainer, metrics):
        runs.append_jsonl(self.run / "metrics.jsonl", metrics)
        value, twin = metrics[self.monitor], metrics.get(self.twin)
        better = self.keep_last or self.best_value is None or self._better(value, self.best_value, self.mode)
        tie_won = not better and value == self.best_value and twin is not None and self.best_twin is not None \
            and self._better(twin, self.best_twin, monitor_mode(self.twin))
        if self.keep_last:
            self.reason = "the last epoch: a cross-validation refit"
        elif better:
            self.reason = f"{'highest' if self.mode == 'max' else 'lowest'} {self.monitor}"
        elif tie_won:
            self.reason = (f"{self.monitor} tied at {value:.4f} with epoch {self.best_epoch}, "
                           f"{'higher' if monitor_mode(self.twin) == 'max' else 'lower'} {self.twin}")
        if better or tie_won:
            self.best_value, self.best_epoch, self.best_twin = value, metrics["epoch"], twin
        if better or tie_won or trainer.state.stop or trainer.state.epoch >= trainer.cfg.train.epochs:
            for cb in trainer.callbacks:  # what was put off until a checkpoint keeps the epoch (dlcli.precise_bn)
                cb.before_keeping(trainer)
        state = self.checkpoint(trainer)
        # best.pt before last.pt: a kill between them leaves last.pt at the epoch before, whose tracker has not yet
        # seen this epoch, so the resumed run trains it again and writes best.pt again
        if better or tie_won:
            runs.save_checkpoint(self.run / "checkpoints" / "best.pt", state)
        runs.save_checkpoint(self.run / "checkpoints" / "last.pt", state)
        if self.summary is not None:  # what a killed run reached, for `runs`, `show` and `resume` to say
            self.summary.update(epochs_completed=metrics["epoch"],
                                checkpoints={"last": metrics["epoch"], "best": self.best_epoch})
            runs.write_json(self.run / "summary.json", self.summary)

    def on_interrupt(self, trainer):
        runs.save_checkpoint(self.run / "checkpoints" / "last.pt", self.checkpoint(trainer))
        if self.summary is not None:
            self.summary.setdefault("checkpoints", {})["last"] = trainer.state.epoch

    def checkpoint(self, trainer) -> dict:
        state = trainer.checkpoint_state()
        state["best"] = {"monitor": self.monitor, "value": self.best_value, "epoch": self.best_epoch}
        return state

    def state_dict(self):
        return {"value": self.best_value, "epoch": self.best_epoch, "twin": self.best_twin, "reason": self.reason,
                "keep_last": self.keep_last}

    def load_state_dict(self, state):
        self.best_value, self.best_epoch = state["value"], state["epoch"]
        self.best_twin, self.reason = state.get("twin"), state.get("reason")
        self.keep_last = state.get("keep_last", False)  # a resumed refit still scores its last epoch


class ProgressDisplay(Callback):
    """A rich progress bar per epoch (loss, the task's running metric, samples/s) and one summary line per epoch."""

    def __init__(self, console, epochs: int, task):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from dlcli.tasks import short_name

        self.console, self.epochs, self.learner = console, epochs, task
        self.stat = short_name(task.step_metric)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  " + self.stat +
                       " {task.fields[acc]:.4f}  {task.fields[speed]:,.0f} samples/s"),
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
        self.world = trainer.world.size
        total = len(trainer.train_split)
        self.resumed_at = min(trainer.progress.batch * trainer.global_batch, total)  # a resumed epoch starts part-way
        label = f"{trainer.state.epoch + 1}/{self.epochs}"
        self.task = self.progress.add_task("", total=total, epoch=label, loss=0.0, acc=0.0, speed=0.0)

    def on_step(self, trainer, seen, loss_sum, correct):
        # Under DDP the sums are rank 0's share (the epoch's line has every rank's); the bar counts all ranks.
        now, done = time.perf_counter(), min(seen * self.world, len(trainer.train_split))
        if now < self.next_refresh and done < len(trainer.train_split):
            return
        self.next_refresh = now + 0.25  # reading the sums waits for the device: only a few times a second
        self.progress.update(self.task, completed=done, loss=loss_sum.item() / seen, acc=correct.item() / seen,
                             speed=(done - self.resumed_at) / max(now - self.started, 1e-9))

    def on_epoch_end(self, trainer, m):
        self.progress.remove_task(self.task)
        from dlcli.tasks import short_name

        step = self.learner.step_metric
        parts = [f"epoch {m['epoch']}/{self.epochs}", f"loss {m['train_loss']:.4f}", f"{self.stat} {m[f'train_{step}']:.4f}"]
        shown = [k for k in ("val_loss", *(f"val_{k}" for k in self.learner.metrics)) if k in m]
        parts += [f"{short_name(k)} {m[k]:.4f}" for k in shown]  # detection has no val_loss, only its scores
        n = len(trainer.train_split) - self.resumed_at
        parts += [f"lr {m['lr']:.3g}", f"{m['seconds']:.1f}s", f"{n / max(m['seconds'], 1e-9):,.0f} samples/s"]
        if m.get("skipped_batches"):
            parts.append(f"skipped {m['skipped_batches']} non-finite batches")
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


def build(cfg, preprocessing: dict | None = None, world: World = SINGLE, pretrained: bool = True,
          resuming: bool = False, fits: dict | None = None):
    """Seeds, device, data and model for a config: everything that can fail on bad input, before any run exists.
    pretrained: load a backbone's weights (resume restores all weights from its checkpoint instead).
    resuming: keep the run's thread count (train.threads as recorded, else torch's default) for an exact resume.
    fits: {"preprocessing", "normalization", "target"} fitted elsewhere, used instead of this split's (the folds of
    train.cv_final: bag share those of all training rows, so that one module can average their models)."""
    track.require(cfg.track)  # a missing logger extra: one line, before any run exists
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    threads_said = None
    with world.together():  # under DDP: one rank failing here stops all, with one message
        device = world.device(resolve_device(cfg.train.device))
        if device.type == "cpu" and not cfg.train.threads and not resuming:  # a resume keeps the run's threads
            threads_said = auto_threads()
            if threads_said:  # recorded, so that a resume computes with the same threads, exactly
                cfg.train.threads = torch.get_num_threads()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        resolve_image_size(cfg)  # a pretrained backbone's image size, for an image folder without one
        with world.main_first(local=True):  # one process per machine downloads and caches; the others read it
            data = load_data(cfg, fits["preprocessing"] if fits else preprocessing)
        if fits:
            share_fits(data, fits)
        model = model_for(cfg, data, pretrained)  # with the backbone's input pipeline, and its frozen parts
        # recorded, so that resume, evaluate and predict compute in the layout the run trained in
        cfg.train.channels_last = use_channels_last(cfg.train.channels_last, model,
                                                    data.normalizer.output_shape(data.input_shape))
        _check_augment(cfg, data)
        cfg.task.bind(data.target, data.classes, cfg.train, None, data.train.y)  # a bad class name: before any run
        if threads_said:
            data.notes.append(threads_said)
    if world.distributed:
        seed_everything(cfg.seed + world.rank)  # the same initial weights, but each rank its own augmentation, dropout
    return device, data, model


AUTO_STEPS = 3000  # train.epochs: auto trains about this many steps...
AUTO_EPOCHS = (10, 300)  # ...in at least 10 and at most 300 epochs


def resolve_epochs(cfg, data, world: World = SINGLE) -> str | None:
    """train.epochs: auto -> a number of epochs for about AUTO_STEPS steps (a few hundred rows get hundreds of
    epochs, MNIST gets 10), with early stopping on val_loss when there is a validation split and none is set.
    The resolved config records both, so the run can be repeated and resumed exactly. Returns what was decided."""
    from dlcli.config import EarlyStopping as EarlyStoppingConfig

    if cfg.train.epochs != "auto":
        return None
    steps = math.ceil(len(data.train) / (cfg.train.batch_size * world.size))
    cfg.train.epochs = min(AUTO_EPOCHS[1], max(AUTO_EPOCHS[0], math.ceil(AUTO_STEPS / steps)))
    said = f"train.epochs auto: {cfg.train.epochs} epochs of {steps:,} steps"
    if cfg.train.early_stopping is None and data.val is not None:
        patience = max(5, cfg.train.epochs // 10)
        monitor = cfg.task.stop_monitor()
        cfg.train.early_stopping = EarlyStoppingConfig(monitor=monitor, patience=patience)
        better = "a lower val_loss" if monitor == "val_loss" else f"a better {monitor}"
        said += f", stopping early after {patience} epochs without {better}"
    return said


def make_trainer(cfg, run, device, data, model, console, show_progress, world: World = SINGLE,
                 summary: dict | None = None, extra: tuple = (), keep_last: bool = False):
    """extra: callbacks of the caller's (a sweep's trial reporter), placed before the checkpointing recorder."""
    recorder = RunRecorder(run, cfg.train.checkpoint_monitor, cfg.task, summary, keep_last) if world.main else None
    callbacks: list[Callback] = []
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        callbacks.append(EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
    if cfg.train.freeze:  # first: an unfreezing epoch says so before its progress bar
        callbacks.insert(0, FreezeSchedule(model, cfg.train.freeze, console if world.main else None))
    if show_progress and world.main:
        callbacks.append(ProgressDisplay(console, cfg.train.epochs, cfg.task))
    # after the progress display (its warning follows the epoch's line); every rank recomputes the statistics alike
    callbacks.append(PreciseBN(cfg.train.precise_bn, console if world.main else None))
    if world.main:  # loggers (dlcli.track) on rank 0 alone
        callbacks += track.attach(cfg.track, run)
    callbacks += extra
    return Trainer(cfg, data, model, device, [*callbacks, *([recorder] if recorder else [])], world), recorder


def train(cfg, runs_root: Path, console, show_progress: bool = True, world: World = SINGLE,
          tags: dict | None = None, callbacks: tuple = (), keep_last: bool = False, fits: dict | None = None) -> Path:
    """tags: what the run belongs to (a sweep, a repeat), kept in its tags.json; callbacks: see make_trainer;
    keep_last: score the last epoch, not the best monitored one (see RunRecorder); fits: see build."""
    started = time.perf_counter()
    cfg.train.devices = world.size  # what this run trains on, whatever asked for it: resume needs as many
    with world.together():
        if world.main:
            runs.check_writable(runs_root)  # before the data is read and the model built, not after an epoch
    device, data, model = build(cfg, world=world, fits=fits)
    decided = resolve_epochs(cfg, data, world)
    if data.val is None and cfg.monitor_training():  # the split came out empty: too few samples per class
        data.notes.append(f"the validation split is empty: best.pt and early stopping follow "
                          f"{cfg.train.checkpoint_monitor}")
    summary, lock, init = {}, None, None
    with contextlib.ExitStack() as held:  # the run's lock, released (with how the run ended) however this ends
        with world.together():
            if world.main:
                if cfg.model.init:  # rank 0's weights reach the other ranks when DDP wraps the model
                    cfg.model.init = resolve_init(cfg.model.init, runs_root)  # recorded as the exact run id
                    init = init_from(cfg.model.init, model, runs_root)
                run = runs.create_run(runs_root, cfg.name)  # only now: a bad config or missing data leaves no run
                lock = held.enter_context(runs.RunLock(run))  # held while this process trains: see RunLock
                runs.write_yaml(run / "config.yaml", cfg.resolved())
                runs.write_json(run / "data.json", data_info(cfg, data))
                summary = {"status": "running", "run_id": run.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           **runs.owner()}
                runs.write_json(run / "summary.json", summary)
                if tags:
                    runs.write_json(run / runs.TAGS, tags)
        run = runs_root / world.broadcast(run.name if world.main else None)
        trainer, recorder = make_trainer(cfg, run, device, data, model, console, show_progress, world, summary,
                                         callbacks, keep_last)
        console.print(f"run {run.name}: {cfg.data.dataset} ({len(data.train):,} train, "
                      f"{len(data.val) if data.val else 0:,} val, {len(data.test):,} test) on {placement(trainer)}, "
                      f"precision {trainer.precision}, {count_parameters(model):,} parameters"
                      f"{f' ({note})' if (note := frozen_note(cfg, model)) else ''}", soft_wrap=True)
        if init is not None:
            init.render(console)
        for note in ([decided] if decided else []) + data.notes:
            console.print(f"note: {note}", soft_wrap=True)
        return fit_and_test(run, cfg, trainer, recorder, summary, console, started, lock)


def data_info(cfg, data) -> dict:
    """data.json: what evaluate, predict, export and serve need to feed the model and read its outputs."""
    from dlcli.data.memory import describe, is_memory

    frames = {key: describe(path) for key in ("train_file", "test_file")
              if is_memory(path := getattr(cfg.data, key, None))}  # tables given as DataFrames: their fingerprints
    return {"classes": data.classes, "input_shape": list(data.input_shape),
            "normalization": data.normalizer.to_dict(), "preprocessing": data.preprocessing,
            "task": {"type": cfg.task.entry_name, **data.target}, **({"in_memory": frames} if frames else {}),
            **({SHARED_FITS: True} if getattr(data, SHARED_FITS, False) else {})}


SHARED_FITS = "shared_fits"  # data.json: the fits came from all training rows, not this run's split (see build)


def share_fits(data, fits: dict) -> None:
    """Use fits made on other rows: the normalisation and the task's target fit (the preprocessing was read with)."""
    from dlcli.data.bundle import Normalizer

    data.normalizer = Normalizer(**fits["normalization"])
    data.target = dict(fits["target"])
    setattr(data, SHARED_FITS, True)


def fits_of(info: dict) -> dict:
    """A run's stored fits (data.json) as build's `fits`."""
    return {"preprocessing": info.get("preprocessing"), "normalization": info["normalization"],
            "target": info["task"]}


def placement(trainer) -> str:
    """Where a run trains, for its first line: the device, or under DDP the processes and the batch each takes."""
    world = trainer.world
    if not world.distributed:
        return str(trainer.device)
    return (f"{world.size} x {trainer.device.type} (batch {trainer.cfg.train.batch_size} each, "
            f"{trainer.global_batch} in all)")


def run_devices(runs_root: Path, run_id: str) -> int:
    """How many devices a run trained on (train.devices in its config.yaml; 1 where unreadable)."""
    from dlcli.config import read_yaml

    try:
        devices = read_yaml(runs.resolve_run(runs_root, run_id) / "config.yaml")["train"]["devices"]
    except (DlcliError, KeyError, TypeError):
        return 1
    return devices if isinstance(devices, int) and devices > 0 else 1


def resume(runs_root: Path, run_id: str, console, epochs: int | None = None, show_progress: bool = True,
           world: World = SINGLE, callbacks: tuple = ()) -> Path:
    """Continue a run from checkpoints/last.pt (best.pt where last.pt is damaged); `epochs` sets a new total (and
    config.yaml says so)."""
    from dlcli.config import validate_config

    started = time.perf_counter()
    summary, lock, notices, stored = {}, None, [], None
    with contextlib.ExitStack() as held:
        with world.together():
            if world.main:
                run, cfg, summary, ckpt, stored, notices = _open_for_resume(runs_root, run_id, epochs, world)
                lock = held.enter_context(runs.RunLock(run))
        for notice in notices:  # said even under --quiet: which checkpoint a resume starts from matters
            print(f"notice: {notice}", file=sys.stderr)
        if world.distributed:  # rank 0 hands the others the run id, config and checkpoint
            shared = (run.name, cfg.resolved(), ckpt, stored) if world.main else None
            name, resolved, ckpt, stored = world.broadcast(shared)
            run, cfg = runs_root / name, validate_config(resolved)
        device, data, model = build(cfg, stored["preprocessing"], world, pretrained=False, resuming=True,
                                    fits=stored["fits"])
        record: dict = {}  # the new summary.json, filled once the checkpoint is restored
        trainer, recorder = make_trainer(cfg, run, device, data, model, console, show_progress, world, record,
                                         callbacks)
        try:
            trainer.restore(ckpt)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise DlcliError(f"{run / 'checkpoints'}: the checkpoint does not fit this run's model and optimizer "
                             f"({first})", RUNTIME, shared=True) from None
        done = ckpt["epoch"]
        if world.main:
            runs.remove_stale_temps(run)
            runs.write_yaml(run / "config.yaml", cfg.resolved())
            runs.keep_metrics_until(run, done)
            record.update({k: summary[k] for k in ("run_id", "started", "resumed") if k in summary})
            resumed = [*record.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S")]
            record.update(status="running", **runs.owner(), resumed=resumed, epochs_completed=done,
                          checkpoints={"last": done, "best": recorder.best_epoch})
            runs.write_json(run / "summary.json", record)
        where = f"epoch {done + 1}, batch {ckpt['progress']['batch'] + 1}" if ckpt["progress"] else \
            f"epoch {done + 1}"
        console.print(f"run {run.name}: resuming at {where} (step {ckpt['step']}) of {cfg.train.epochs} epochs "
                      f"on {placement(trainer)}", soft_wrap=True)
        return fit_and_test(run, cfg, trainer, recorder, record, console, started, lock)


def _open_for_resume(runs_root: Path, run_id: str, epochs: int | None, world: World):
    """Read and check what a resume needs: the run, its config (with a new epoch total), summary and checkpoint.
    Writes nothing: a refused resume leaves the run as it was."""
    from dlcli.config import read_yaml, validate_config

    run = runs.resolve_run(runs_root, run_id)
    cfg = validate_config(read_yaml(run / "config.yaml"), source=str(run / "config.yaml"), legacy=True)  # size-limited
    if cfg.train.cv and cfg.train.cv_final == "bag":
        raise DlcliError(f"run {run.name} averages its {cfg.train.cv} cross-validation folds' models (train.cv_final: "
                         f"bag) and trained none of its own: there is nothing to resume (a fold's run can be)")
    notices = []
    try:
        summary = runs.read_json(run / "summary.json")
        if not isinstance(summary, dict):
            raise DlcliError(f"{run / 'summary.json'}: damaged (not a JSON object)", RUNTIME)
    except DlcliError as err:  # the checkpoint holds all a resume needs; the summary is written anew
        summary = {}
        notices.append(f"{err}; it is written anew")
    runs.check_not_running(run, summary)
    if not any((run / "checkpoints" / f"{name}.pt").is_file() for name in ("last", "best")):
        how = {"killed": "was killed", "failed": "failed", "interrupted": "was interrupted"}.get(
            runs.status(run, summary or None), "stopped")
        raise DlcliError(f"run {run.name} {how} before its first checkpoint: there is nothing to resume; train it "
                         f"again with `dlcli train {run / 'config.yaml'}` (and remove it with `dlcli runs --clean`)",
                         RUNTIME)
    ckpt, _, fallback = runs.load_either_checkpoint(run, "last", resumable=True)
    if fallback:
        notices.append(fallback)
    done = ckpt["epoch"]
    if epochs is not None and epochs <= done:
        raise DlcliError(f"--epochs {epochs}: run {run.name} has trained {done} epochs already; give a larger total")
    if epochs is None and summary.get("status") == "completed":
        trained = summary.get("epochs_completed", done)
        raise DlcliError(f"run {run.name} has completed ({trained} epochs): pass --epochs N, N > {trained}, "
                         "to train on")
    if cfg.train.devices != world.size:
        raise DlcliError(f"run {run.name} trained on {cfg.train.devices} device(s), batch {cfg.train.batch_size} "
                         f"each: resume it with --devices {cfg.train.devices} (another count changes every batch)")
    if epochs is not None:
        cfg.train.epochs = epochs
    info = runs.read_json(run / "data.json")
    info = info if isinstance(info, dict) else {}
    stored = {"preprocessing": info.get("preprocessing"), "fits": fits_of(info) if info.get(SHARED_FITS) else None}
    return run, cfg, summary, ckpt, stored, notices


def fit_and_test(run, cfg, trainer, recorder, summary, console, started, lock=None) -> Path:
    """Fit, record how it ended in summary.json (and in the run's lock, which needs no new disk space), then score
    the best checkpoint on the test split."""
    model, data, device, world = trainer.model, trainer.data, trainer.device, trainer.world
    first_epoch = trainer.state.epoch
    try:
        fit_started = time.perf_counter()
        state = trainer.fit()
        train_seconds = time.perf_counter() - fit_started
    except BaseException as err:
        if isinstance(err, (Interrupted, StopNow)):
            saved = (f"saved a checkpoint at step {trainer.state.step}" if isinstance(err, Interrupted)
                     else "stopped at once by a second signal; resume starts from the last saved checkpoint")
            err = TrainingInterrupted(f"interrupted by {err.signame} in epoch {trainer.state.epoch + 1}: {saved}; "
                                      f"continue with `dlcli resume {run.name}`",
                                      143 if err.signame == "SIGTERM" else 130, shared=True)
        elif isinstance(err, OSError):
            err = DlcliError(f"run {run.name} failed: {err.strerror or err}", RUNTIME)
        interrupted = isinstance(err, KeyboardInterrupt) or getattr(err, "exit_code", 0) in (130, 143)
        summary.update(status="interrupted" if interrupted else "failed", error=str(err)[:500] or type(err).__name__,
                       epochs_completed=trainer.state.epoch, step=trainer.state.step)
        if lock is not None:
            lock.record_end(summary["status"], summary["error"])
        try:
            if world.main:
                runs.write_json(run / "summary.json", summary)
        except (OSError, DlcliError):
            pass  # the disk may be why we are here: the error itself matters more
        track.finish(trainer.callbacks, summary)
        raise err from None

    best = None  # rank 0 reads the best weights and sends them to the others: each scores its share of the test
    if world.main:
        where = "cpu" if world.distributed else device
        best, _, fallback = runs.load_either_checkpoint(run, "best", map_location=where)
        best = best["model"]
        if fallback:
            print(f"notice: {fallback}", file=sys.stderr)
    model.load_state_dict(world.broadcast(best))
    task = trainer.task
    if data.val is not None and task.tunes():  # what the task decides on validation (multilabel thresholds)
        val_out = predict_logits(trainer.forward, data.val.x, data.normalizer, device, trainer.scoring_precision,
                                 cfg.train.eval_batch_size, trainer.channels_last, task.shrink)
        tuned = task.tune(val_out, data.val.y.cpu())
        if tuned:
            data.target.update(tuned)
            task.bind(data.target, data.classes, cfg.train, device, data.train.y)
            if world.main:
                runs.write_json(run / "data.json", data_info(cfg, data))
    if task.tunes_on_history():  # conformal intervals: the errors over every window before the test split
        splits = [s for s in (data.train, data.val) if s is not None]
        outs = [predict_logits(trainer.forward, s.x, data.normalizer, device, trainer.scoring_precision,
                               cfg.train.eval_batch_size, trainer.channels_last, task.shrink) for s in splits]
        tuned = task.tune_history(torch.cat(outs), torch.cat([s.y.cpu() for s in splits]))
        if tuned:
            data.target.update(tuned)
            task.bind(data.target, data.classes, cfg.train, device, data.train.y)
            if world.main:
                runs.write_json(run / "data.json", data_info(cfg, data))
    test = trainer.evaluate(data.test.to(device))
    if not world.main:
        return run
    samples = len(data.train) * (state.epoch - first_epoch)
    summary.update(
        status="completed",
        epochs_completed=state.epoch,
        epochs=cfg.train.epochs,
        stopped_early=state.epoch < cfg.train.epochs,
        best_epoch=recorder.best_epoch,
        best_metric={"name": recorder.monitor, "value": recorder.best_value},
        best_reason=recorder.reason,
        task=task.entry_name,
        headline=task.headline,  # the test metric the runs table shows
        test=test,
        parameters=count_parameters(model),
        train_seconds=round(train_seconds, 3),
        wall_seconds=round(time.perf_counter() - started, 3),
        samples_per_second=round(samples / max(train_seconds, 1e-9), 1),
        device=str(device),
        world_size=world.size,  # processes, one per device: train.batch_size is per device
        effective_batch_size=trainer.global_batch,
        precision=trainer.precision,
        threads=torch.get_num_threads() if device.type == "cpu" else None,
        versions=versions(),
    )
    try:
        runs.write_json(run / "summary.json", summary)
    except DlcliError as err:
        if lock is not None:
            lock.record_end("failed", str(err))
        track.finish(trainer.callbacks, {**summary, "status": "failed", "error": str(err)[:500]})
        raise
    try:
        from dlcli.plots import write_curves

        write_curves(run)
    except Exception as err:  # a plot must never fail a finished training
        print(f"warning: curves.png not written ({err})", file=sys.stderr)
    track.finish(trainer.callbacks, summary)
    shown = dict.fromkeys((task.headline, *task.metrics, "loss"))  # the headline first, each figure once
    figures = "  ".join(f"test {k} {test[k]:.4f}" for k in shown if isinstance(test.get(k), float))
    console.print(f"{figures}  (best epoch {recorder.best_epoch}: {recorder.reason}; "
                  f"{summary['wall_seconds']:.1f}s)", soft_wrap=True)
    return run


def _check_augment(cfg, data):
    from dlcli.data.catalog import ImageEntry

    if isinstance(cfg.data, ImageEntry) and cfg.data.augmentations() and len(data.input_shape) != 3:
        raise DlcliError(f"data.augment: augmentations need image data; {cfg.data.dataset} gives shape "
                         f"{tuple(data.input_shape)}")
