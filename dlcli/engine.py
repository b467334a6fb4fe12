"""The training engine: one fit loop over data resident on the device, and batched evaluation.

Batches are cut from tensors already in memory (on the GPU when training there) by a seeded permutation, then
normalised and augmented on the device. Loss and accuracy accumulate on the device and are read only when the
progress display refreshes, so the loop never waits for the device between steps.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dlcli.augment import apply_all
from dlcli.errors import DlcliError

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


@dataclass
class State:
    """What the callbacks see and may change; `stop` ends the fit after the current epoch."""

    epoch: int = 0
    step: int = 0
    stop: bool = False
    history: list[dict] = field(default_factory=list)


class Callback:
    def on_fit_start(self, trainer): ...
    def on_epoch_start(self, trainer, steps: int): ...
    def on_step(self, trainer, seen: int, loss: torch.Tensor, correct: torch.Tensor): ...
    def on_epoch_end(self, trainer, metrics: dict): ...
    def on_fit_end(self, trainer): ...


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

    def loss_fn(self, logits, y):
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.train.label_smoothing)
        if self.cfg.train.l1:
            loss = loss + self.cfg.train.l1 * sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)
        return loss

    def train_epoch(self) -> dict:
        tc, split, model = self.cfg.train, self.train_split, self.model
        model.train()
        order = torch.randperm(len(split), generator=self.generator).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for cb in self.callbacks:
            cb.on_epoch_start(self, self.steps_per_epoch)
        for i in range(self.steps_per_epoch):
            idx = order[i * tc.batch_size : (i + 1) * tc.batch_size]
            xb = prepare_batch(split.x[idx], self.data.normalizer, self.channels_last)
            yb = split.y[idx]
            if self.cfg.data.augment:
                xb = apply_all(self.cfg.data.augment, xb)
            with autocast(self.device, self.precision):
                logits = self.forward(xb)
            loss = self.loss_fn(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.scheduler is not None and self.cfg.scheduler.interval == "step":
                self.scheduler.step()
            self.state.step += 1
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            for cb in self.callbacks:
                cb.on_step(self, min((i + 1) * tc.batch_size, len(split)), loss_sum, correct)
        n = len(split)
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise DlcliError(f"the training loss became {train_loss} in epoch {self.state.epoch + 1}: "
                             "lower optimizer.lr or set train.grad_clip", 1)
        return {"train_loss": train_loss, "train_accuracy": correct.item() / n}

    def evaluate(self, split) -> dict:
        logits = predict_logits(self.forward, split.x, self.data.normalizer, self.device, self.precision,
                                self.cfg.train.eval_batch_size, self.channels_last)
        return score(logits, split.y.cpu())

    def fit(self) -> State:
        tc, state = self.cfg.train, self.state
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
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.state.epoch,
            "step": self.state.step,
        }


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
