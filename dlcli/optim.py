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
    lr: PositiveFloat | None = Field(None, description="this group's learning rate (unset: the optimizer's)")
    weight_decay: NonNegativeFloat | None = Field(None, description="this group's weight decay (unset: the "
                                                                    "optimizer's)")


LR = "the learning rate (a scheduler scales it)"
DECAY = "L2 penalty on the weights (decoupled from the gradient for adamw)"


class Optimizer(Entry):
    lr: PositiveFloat = Field(1e-3, description=LR)
    weight_decay: NonNegativeFloat = Field(0.0, description=DECAY)
    groups: list[ParamGroup] = Field([], description="parameters with their own lr or weight decay; the first "
                                                     "group that selects a parameter takes it")

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
    lr: PositiveFloat = Field(0.01, description=LR)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="the share of the last update added to this one")
    nesterov: bool = Field(False, description="Nesterov momentum: the gradient taken after the momentum step")

    def torch_class(self, optim):
        return optim.SGD

    def kwargs(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        return self.model_dump(exclude={"groups"})


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    betas: tuple[float, float] = Field((0.9, 0.999), description="decay rates of the gradient's running mean and "
                                                                  "of its square's (Keras: beta_1, beta_2)")
    eps: PositiveFloat = Field(1e-8, description="added to the denominator (Keras' Adam uses 1e-7)")
    amsgrad: bool = Field(False, description="keep the largest squared-gradient average seen (Reddi et al. 2018)")

    def torch_class(self, optim):
        return optim.Adam


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    weight_decay: NonNegativeFloat = Field(0.01, description=DECAY)

    def torch_class(self, optim):
        return optim.AdamW


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="decay rate of the squared-gradient average (Keras: rho)")
    eps: PositiveFloat = Field(1e-8, description="added to the denominator")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="the share of the last update added to this one")
    centered: bool = Field(False, description="divide by the gradient's estimated variance instead of its second "
                                              "moment")

    def torch_class(self, optim):
        return optim.RMSprop


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    lr: PositiveFloat = Field(1.0, description=LR + "; Keras 2's Adadelta used 1.0, Keras 3's 0.001")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="decay rate of the running averages")
    eps: PositiveFloat = Field(1e-6, description="added inside the square roots")

    def torch_class(self, optim):
        return optim.Adadelta


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    lr: PositiveFloat = Field(0.01, description=LR)
    eps: PositiveFloat = Field(1e-10, description="added to the denominator")

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
    step_size: PositiveInt = Field(10, description="epochs between decays: the lr is multiplied by gamma every "
                                                   "step_size epochs")
    gamma: PositiveFloat = Field(0.1, description="the factor the lr is multiplied by at each decay")

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        return lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)


@SCHEDULERS.register("multistep")
class MultiStepLR(Scheduler):
    milestones: list[PositiveInt] = Field(min_length=1, description="epoch counts, in any order: when training "
                                                                    "has done that many epochs, the lr is multiplied "
                                                                    "by gamma")
    gamma: PositiveFloat = Field(0.1, description="the factor the lr is multiplied by at each milestone")

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        return lr_scheduler.MultiStepLR(optimizer, sorted(self.milestones), self.gamma)


@SCHEDULERS.register("exponential", positional="gamma")
class ExponentialLR(Scheduler):
    gamma: PositiveFloat = Field(0.95, description="the factor the lr is multiplied by after every epoch")

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
    warmup_epochs: NonNegativeFloat = Field(0.0, description="epochs (fractions too) of linear warm-up from "
                                                             "lr / warm-up steps up to lr, step by step, before the "
                                                             "half cosine down to min_lr_ratio x lr")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of the initial lr")

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        warmup = round(self.warmup_epochs * steps_per_epoch)
        return lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, epochs * steps_per_epoch, self.min_lr_ratio))


@SCHEDULERS.register("onecycle")
class OneCycle(Scheduler):
    interval: ClassVar[str] = "step"
    max_lr: PositiveFloat | None = Field(None, description="defaults to the optimizer's lr")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="the share of all training steps spent rising from "
                                                              "max_lr / 25 to max_lr; the rest anneals (cosine) to "
                                                              "max_lr / 25e4 (torch's OneCycleLR)")

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
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="the factor the lr is multiplied by at each cut")
    patience: PositiveInt = Field(5, description="the lr is cut when monitor has not improved for more than this "
                                                 "many epochs in a row")
    min_lr: NonNegativeFloat = Field(0.0, description="the lr is never cut below this")

    def build(self, optimizer, epochs, steps_per_epoch):
        from torch.optim import lr_scheduler

        from dlcli.tasks import metric_mode

        mode = metric_mode(self.monitor)
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode, self.factor, self.patience, min_lr=self.min_lr)
