"""The training engine: one fit loop over data resident on the device, and batched evaluation.

Batches are cut from tensors already in memory (on the GPU when training there) by a seeded permutation, then
normalised and augmented on the device. Loss and accuracy accumulate on the device and are read only when the
progress display refreshes, so the loop never waits for the device between steps.

Resume is exact: a checkpoint holds, besides weights and optimizer, every random generator, the callbacks' state and,
when written mid-epoch (Ctrl-C, SIGTERM), that epoch's data order, position and running sums.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dlcli.augment import apply_all
from dlcli.errors import RUNTIME, DlcliError

REFRESH_SECONDS = 0.25


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DlcliError(f"train.device is '{name}' but CUDA is not available here: use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DlcliError("train.device is 'mps' but MPS is not available here: use auto or cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32"
    if precision == "16-mixed" and device.type != "cuda":
        raise DlcliError("train.precision 16-mixed needs a CUDA device: use bf16 or 32")
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def prepare_batch(x, normalizer, channels_last: bool):
    x = normalizer(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@torch.inference_mode()
def predict_logits(model, x, normalizer, device, precision="32", batch_size=1024, channels_last=False):
    """Logits (float32, on the CPU) for every row of x, in large batches."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = prepare_batch(x[start : start + batch_size].to(device, non_blocking=True), normalizer, channels_last)
        with autocast(device, precision):
            out.append(model(xb).float())
    return torch.cat(out).cpu() if out else torch.empty(0)


def score(logits, y) -> dict:
    return {
        "loss": F.cross_entropy(logits, y).item() if len(y) else float("nan"),
        "accuracy": (logits.argmax(1) == y).float().mean().item() if len(y) else float("nan"),
    }


class Interrupted(DlcliError):
    """SIGINT or SIGTERM arrived during fit: exit 130 or 143, as a shell reports a process those signals ended."""

    def __init__(self, signame: str, saved: bool):
        self.signame, self.saved = signame, saved
        super().__init__(f"interrupted by {signame}", 143 if signame == "SIGTERM" else 130)


class NonFiniteLoss(DlcliError):
    def __init__(self, message: str):
        super().__init__(message, RUNTIME)


@dataclass
class State:
    """What the callbacks see and may change; `stop` ends the fit after the current epoch."""

    epoch: int = 0  # completed epochs
    step: int = 0  # batches trained, over all epochs
    stop: bool = False
    interrupt: str | None = None  # set by a signal: the fit saves and stops after the current step
    history: list[dict] = field(default_factory=list)


@dataclass
class EpochProgress:
    """Where the current epoch stands; a mid-epoch checkpoint stores it so a resumed epoch ends identically."""

    order: torch.Tensor  # this epoch's permutation of the training split
    batch: int  # the next batch to train
    loss_sum: torch.Tensor  # device scalars, read only at refresh points
    correct: torch.Tensor
    losses: torch.Tensor  # every batch's loss, to name the first non-finite one without a per-step sync
    skipped: int = 0  # batches skipped for a non-finite loss (train.on_nan: skip_batch)
    skipped_samples: int = 0

    def to_dict(self) -> dict:
        return {"order": self.order.cpu(), "batch": self.batch, "loss_sum": self.loss_sum.cpu(),
                "correct": self.correct.cpu(), "skipped": self.skipped, "skipped_samples": self.skipped_samples}


class Callback:
    def on_fit_start(self, trainer): ...
    def on_epoch_start(self, trainer, steps: int): ...
    def on_step(self, trainer, seen: int, loss: torch.Tensor, correct: torch.Tensor): ...
    def on_epoch_end(self, trainer, metrics: dict): ...
    def on_interrupt(self, trainer): ...
    def on_fit_end(self, trainer): ...
    def state_dict(self) -> dict | None: ...  # what a checkpoint keeps of this callback, if anything
    def load_state_dict(self, state: dict): ...


def rng_state(data_order: torch.Generator) -> dict:
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],  # tensors load weights-only
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "data_order": data_order.get_state(),
    }


def set_rng_state(state: dict, data_order: torch.Generator) -> None:
    import numpy as np

    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    data_order.set_state(state["data_order"])


@contextlib.contextmanager
def stop_on_signals(state: State):
    """SIGINT/SIGTERM set `state.interrupt`; the loop saves and stops after the current step. A second one stops
    at once. Handlers are installed only for the fit (and only where Python allows: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if state.interrupt:
            raise Interrupted(name, saved=False)
        state.interrupt = name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    def __init__(self, cfg, data, model, device, callbacks=()):
        self.cfg, self.data, self.device = cfg, data, device
        tc = cfg.train
        self.precision = resolve_precision(tc.precision, device)
        has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        self.channels_last = has_conv if tc.channels_last == "auto" else tc.channels_last
        self.model = model.to(device, memory_format=torch.channels_last) if self.channels_last else model.to(device)
        self.forward = torch.compile(self.model) if tc.compile else self.model
        self.train_split = data.train.to(device)
        self.val_split = data.val.to(device) if data.val is not None else None
        self.steps_per_epoch = math.ceil(len(self.train_split) / tc.batch_size)
        self.optimizer = cfg.optimizer.build(self.model.parameters(), device.type)
        self.scheduler = cfg.scheduler.build(self.optimizer, tc.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "16-mixed" else None
        self.callbacks = list(callbacks)
        self.state = State()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.progress: EpochProgress | None = None

    def loss_fn(self, logits, y):
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.train.label_smoothing)
        if self.cfg.train.l1:
            loss = loss + self.cfg.train.l1 * sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)
        return loss

    def new_epoch(self) -> EpochProgress:
        order = torch.randperm(len(self.train_split), generator=self.generator).to(self.device)
        zero = torch.zeros((), device=self.device)
        return EpochProgress(order, 0, zero, zero.long(), torch.zeros(self.steps_per_epoch, device=self.device))

    def optimizer_step(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and self.cfg.scheduler.interval == "step":
            self.scheduler.step()

    def train_epoch(self) -> dict:
        tc, split = self.cfg.train, self.train_split
        self.model.train()
        p = self.progress = self.progress or self.new_epoch()  # a resumed run starts inside its epoch
        for cb in self.callbacks:
            cb.on_epoch_start(self, self.steps_per_epoch)
        next_check = time.perf_counter() + REFRESH_SECONDS
        # In-memory splits cut batches by indexing; streamed image folders decode them in DataLoader workers.
        for i, (xb, yb) in enumerate(split.batches(p.order, p.batch, tc.batch_size, self.device), start=p.batch):
            if self.state.interrupt:
                self.save_and_stop(p)
            xb = prepare_batch(xb, self.data.normalizer, self.channels_last)
            if self.cfg.data.augment:
                xb = apply_all(self.cfg.data.augment, xb)
            with autocast(self.device, self.precision):
                logits = self.forward(xb)
            loss = self.loss_fn(logits, yb)
            # skip_batch must decide before the update, so it reads the loss every step (a host sync); `stop`
            # records each loss on the device and checks them only a few times a second and at the epoch's end.
            if tc.on_nan == "skip_batch" and not torch.isfinite(loss).item():
                p.skipped, p.skipped_samples = p.skipped + 1, p.skipped_samples + len(yb)
            else:
                self.optimizer_step(loss)
                p.losses[i] = loss.detach()
                p.loss_sum += loss.detach() * len(yb)
                p.correct += (logits.detach().argmax(1) == yb).sum()
            self.state.step += 1
            p.batch = i + 1
            for cb in self.callbacks:
                cb.on_step(self, min((i + 1) * tc.batch_size, len(split)), p.loss_sum, p.correct)
            if time.perf_counter() >= next_check:
                self.check_finite(p)
                next_check = time.perf_counter() + REFRESH_SECONDS
        self.check_finite(p)
        self.progress, counted = None, len(split) - p.skipped_samples
        if counted == 0:
            raise NonFiniteLoss(f"every batch of epoch {self.state.epoch + 1} had a non-finite loss: "
                                "lower optimizer.lr or set train.grad_clip")
        metrics = {"train_loss": p.loss_sum.item() / counted, "train_accuracy": p.correct.item() / counted}
        return metrics | ({"skipped_batches": p.skipped} if tc.on_nan == "skip_batch" else {})

    def check_finite(self, p: EpochProgress):
        """Stop at the first non-finite loss, naming its epoch and step; nothing after it is checkpointed."""
        if torch.isfinite(p.loss_sum).item():
            return
        found = (~torch.isfinite(p.losses[: p.batch])).nonzero()
        bad = int(found[0]) if len(found) else p.batch - 1  # or the sum itself overflowed
        step = self.state.step - p.batch + bad + 1
        raise NonFiniteLoss(
            f"the training loss became {p.losses[bad].item()} in epoch {self.state.epoch + 1} at step {step} "
            f"(batch {bad + 1} of {self.steps_per_epoch}): lower optimizer.lr, set train.grad_clip, "
            "or set train.on_nan: skip_batch"
        )

    def save_and_stop(self, p: EpochProgress):
        self.check_finite(p)
        for cb in self.callbacks:
            cb.on_interrupt(self)
        raise Interrupted(self.state.interrupt, saved=True)

    def evaluate(self, split) -> dict:
        logits = predict_logits(self.forward, split.x, self.data.normalizer, self.device, self.precision,
                                self.cfg.train.eval_batch_size, self.channels_last)
        return score(logits, split.y.cpu())

    def fit(self) -> State:
        tc, state = self.cfg.train, self.state
        with stop_on_signals(state):
            for cb in self.callbacks:
                cb.on_fit_start(self)
            while state.epoch < tc.epochs and not state.stop:
                started = time.perf_counter()
                metrics = {"epoch": state.epoch + 1, **self.train_epoch()}
                if self.val_split is not None:
                    metrics.update({f"val_{k}": v for k, v in self.evaluate(self.val_split).items()})
                metrics["lr"] = self.optimizer.param_groups[0]["lr"]
                if self.scheduler is not None and self.cfg.scheduler.interval == "epoch":
                    self.scheduler.step()
                elif self.scheduler is not None and self.cfg.scheduler.interval == "metric":
                    self.scheduler.step(metrics[self.cfg.scheduler.monitor])
                state.epoch += 1
                metrics["seconds"] = round(time.perf_counter() - started, 3)
                state.history.append(metrics)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, metrics)
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return state

    def checkpoint_state(self) -> dict:
        """Everything resume needs to continue exactly: weights, optimizer, schedule, RNGs, data order, callbacks."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "progress": self.progress.to_dict() if self.progress is not None else None,
            "rng": rng_state(self.generator),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks if cb.state_dict() is not None},
        }

    def restore(self, ckpt: dict) -> None:
        """Continue from `checkpoint_state()`; call after building everything, as building draws random numbers."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            saved, fresh = dict(ckpt["scheduler"]), self.scheduler.state_dict()
            for key in ("total_steps", "_schedule_phases", "lr_lambdas"):  # the horizon follows a new epoch total
                if key in fresh:
                    saved[key] = fresh[key]
            self.scheduler.load_state_dict(saved)
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state.epoch, self.state.step = ckpt["epoch"], ckpt["step"]
        for cb in self.callbacks:
            if type(cb).__name__ in ckpt["callbacks"]:
                cb.load_state_dict(ckpt["callbacks"][type(cb).__name__])
        if ckpt["progress"] is not None:
            p, dev = ckpt["progress"], self.device
            self.progress = EpochProgress(p["order"].to(dev), p["batch"], p["loss_sum"].to(dev),
                                          p["correct"].to(dev), torch.zeros(self.steps_per_epoch, device=dev),
                                          p["skipped"], p["skipped_samples"])
        set_rng_state(ckpt["rng"], self.generator)


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    return "max" if monitor.endswith("accuracy") else "min"


class EarlyStopping(Callback):
    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        self.monitor, self.mode = monitor, monitor_mode(monitor, mode)
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad_epochs = None, 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer, metrics):
        value = metrics[self.monitor]
        if self.improved(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                trainer.state.stop = True

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
