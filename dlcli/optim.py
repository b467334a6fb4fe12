"""Optimizer and scheduler registries: the YAML `name` picks the entry, the other keys are its arguments."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from dlcli.registry import Entry, Registry, Strict

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


class ParamGroup(Strict):
    """Parameters trained with their own learning rate or weight decay; the others keep the optimizer's."""

    layers: list[int | str] = Field(min_length=1, description="layer indices or names (dense_2, or a kind: "
                                    "backbone), or parameter-name patterns (backbone_1.net.layer4.*)")
    lr: PositiveFloat | None = None
    weight_decay: NonNegativeFloat | None = None


class Optimizer(Entry):
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    groups: list[ParamGroup] = []  # the first group that selects a parameter takes it

    def build(self, params, device_type: str):
        """params: the model (its parameters split into `groups`) or an iterable of parameters."""
        import torch

        if isinstance(params, torch.nn.Module):
            params = self.param_groups(params)
        cls, kwargs = self.torch_class(torch.optim), self.kwargs()
        # Fused kernels do the whole update in one pass; fall back where this torch or device lacks them.
        if device_type in ("cpu", "cuda") and "fused" in cls.__init__.__code__.co_varnames:
            try:
                return cls(params, fused=True, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                pass
        return cls(params, **kwargs)

    def kwargs(self) -> dict:
        return self.model_dump(exclude={"groups"})

    def param_groups(self, model) -> list[dict]:
        """The model's parameters in torch's param groups: first those in no group (the optimizer's own settings,
        whose lr the epoch lines report), then each group's."""
        from dlcli.finetune import select

        named = dict(model.named_parameters())
        taken: set[str] = set()
        groups = []
        for i, group in enumerate(self.groups):
            names = [n for n in select(model, group.layers, f"optimizer.groups[{i}].layers")[0] if n not in taken]
            taken.update(names)
            settings = {k: v for k, v in (("lr", group.lr), ("weight_decay", group.weight_decay)) if v is not None}
            groups.append({"params": [named[n] for n in names], **settings})
        rest = [p for n, p in named.items() if n not in taken]
        return [{"params": rest}, *groups] if rest or not groups else groups


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    lr: PositiveFloat = 0.01
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    def torch_class(self, optim):
        return optim.SGD

    def kwargs(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        return self.model_dump(exclude={"groups"})


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    amsgrad: bool = False

    def torch_class(self, optim):
        return optim.Adam


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    weight_decay: NonNegativeFloat = 0.01

    def torch_class(self, optim):
        return optim.AdamW


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    alpha: float = Field(0.99, gt=0.0, lt=1.0)
    eps: PositiveFloat = 1e-8
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    centered: bool = False

    def torch_class(self, optim):
        return optim.RMSprop


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    lr: PositiveFloat = 1.0
    rho: float = Field(0.9, gt=0.0, lt=1.0)
    eps: PositiveFloat = 1e-6

    def torch_class(self, optim):
        return optim.Adadelta


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    lr: PositiveFloat = 0.01
    eps: PositiveFloat = 1e-10

    def torch_class(self, optim):
        return optim.Adagrad


class Scheduler(Entry):
    # When the scheduler steps: after every optimizer step, after every epoch, or after every epoch with a metric.
    interval: ClassVar[str] = "epoch"

    def build(self, optimizer, epochs: int, steps_per_epoch: int):
        raise NotImplementedError


@SCHEDULERS.register("none")
class NoScheduler(Scheduler):
    def build(self, optimizer, epochs, steps_per_epoch):
        return None


@SCHEDULERS.register("step")
class StepLR(Scheduler):
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        return lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)


@SCHEDULERS.register("multistep")
class MultiStepLR(Scheduler):
    milestones: list[PositiveInt] = Field(min_length=1)
    gamma: PositiveFloat = 0.1

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        return lr_scheduler.MultiStepLR(optimizer, sorted(self.milestones), self.gamma)


@SCHEDULERS.register("exponential", positional="gamma")
class ExponentialLR(Scheduler):
    gamma: PositiveFloat = 0.95

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        return lr_scheduler.ExponentialLR(optimizer, self.gamma)


class WarmupCosine:
    """Linear warm-up from 0, then a half cosine down to min_lr; a picklable callable for LambdaLR."""

    def __init__(self, warmup: int, total: int, floor: float):
        self.warmup, self.total, self.floor = warmup, max(total, 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULERS.register("cosine")
class Cosine(Scheduler):
    interval: ClassVar[str] = "step"
    warmup_epochs: NonNegativeFloat = 0.0
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of the initial lr")

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        warmup = round(self.warmup_epochs * steps_per_epoch)
        return lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, epochs * steps_per_epoch, self.min_lr_ratio))


@SCHEDULERS.register("onecycle")
class OneCycle(Scheduler):
    interval: ClassVar[str] = "step"
    max_lr: PositiveFloat | None = Field(None, description="defaults to the optimizer's lr")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        lrs = [group["lr"] for group in optimizer.param_groups]
        if len(lrs) == 1:
            max_lr = self.max_lr or lrs[0]
        else:  # parameter groups keep the ratios of their learning rates to the optimizer's
            max_lr = [lr * self.max_lr / optimizer.defaults["lr"] for lr in lrs] if self.max_lr else lrs
        # torch divides by the warm-up's length in steps minus one: a warm-up of exactly one step (pct_start x total
        # steps == 1, e.g. 4 steps at 0.25) would divide by zero, so it is lengthened by a negligible fraction.
        pct = self.pct_start
        if abs(pct * epochs * steps_per_epoch - 1.0) < 1e-9:
            pct *= 1.0 + 1e-6
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=pct
        )


@SCHEDULERS.register("plateau")
class Plateau(Scheduler):
    interval: ClassVar[str] = "metric"
    monitor: str = Field("val_loss", description="a metric of the task (checked with the config)")
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: PositiveInt = 5
    min_lr: NonNegativeFloat = 0.0

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        from dlcli.tasks import metric_mode

        mode = metric_mode(self.monitor)
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode, self.factor, self.patience, min_lr=self.min_lr)
