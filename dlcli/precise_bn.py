"""`train.precise_bn`: BatchNorm running statistics recomputed from the training split before the model is scored.

In training mode a BatchNorm layer normalises with the batch's own statistics and keeps an exponential average of
them for evaluation. With a small momentum (torchvision's MobileNetV3 uses 0.01, MNASNet 0.0003, and dlcli's
`batchnorm` layer 0.01: its Keras-style momentum 0.99 is the running value's weight) that average forgets slowly: after
52 steps 59% of it is still the initial zeros and ones, and the rest describes weights that have moved on since. In
eval mode such a network can score at chance on the very images it fits in training.

PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; Detectron2's `PreciseBN` hook; torch's
`swa_utils.update_bn` for averaged weights) replaces the average by the statistics the current weights produce: reset
them, run the forward pass in training mode over a sample of the training split without updating any weight, and
keep the plain mean of the batch statistics. dlcli does that after an epoch's training steps, before validation, so
the validation figures, best.pt and last.pt all carry the recomputed buffers (evaluate, predict, export and serve
read them from there).
"""

from __future__ import annotations

import torch

from dlcli.engine import Callback, autocast, predict_logits, prepare_batch

PRECISE_BN_BATCHES = 200  # Detectron2's default: enough for a mean within about 1% of the split's
TORCH_MOMENTUM = 0.1  # torch's default momentum forgets its initial values within about 45 steps
STALE = 0.01  # the share of the average still from before training that makes it lag
CHECK_SAMPLES = 1024  # training samples scored in eval mode when a divergence needs explaining


def live_batchnorms(model) -> list:
    """The BatchNorm layers that update running statistics in training mode: not those a freeze keeps in eval mode
    (their statistics are the pretrained ones, on purpose), nor those without running statistics."""
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]


def lagging(norms, steps: int) -> str | None:
    """Why the running statistics of `norms` lag after `steps` training steps, or None where they keep up: a
    cumulative average (momentum None), a momentum below torch's default (its average spans more than 10 steps, over
    which the weights move), or too few steps to forget the initial values."""
    for m in norms:
        if m.momentum is None:
            return "a BatchNorm layer averages over all of training (momentum None)"
        if m.momentum < TORCH_MOMENTUM:
            return f"BatchNorm momentum {m.momentum:g}"
        if (1.0 - m.momentum) ** steps > STALE:
            return f"only {steps} steps for BatchNorm momentum {m.momentum:g}"
    return None


@torch.no_grad()
def recalibrate(norms, forward, batches) -> int:
    """Set the running mean and variance of `norms` to the mean of their batch statistics over `batches` (inputs
    ready for `forward`, which runs in training mode); no weight changes. num_batches_tracked and the momentum are
    kept as they were, so that training goes on as before. Returns the batches used."""
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # torch's cumulative average: every batch counts alike
    count = 0
    try:
        for xb in batches:
            forward(xb)
            count += 1
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
    return count


def sample_order(size: int, seed: int, epoch: int, count: int) -> torch.Tensor:
    """`count` training indices drawn by a generator of their own: the training's random stream (data order,
    dropout, augmentation) is the same whether or not statistics are recomputed, and a resumed run draws the same."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)[:count]


class PreciseBN(Callback):
    """train.precise_bn: true recomputes the statistics after every epoch, auto where they lag (`lagging`), false
    never. With the statistics left as they are, an epoch whose validation falls far behind training while the
    model scores its own training samples as badly in eval mode gets a warning naming the cause.

    auto without a validation split, in one process: nothing scores the model between epochs, so an epoch's
    statistics are recomputed only when a checkpoint keeps it to be scored (best.pt, the run's last epoch:
    `before_keeping`). A recomputation depends only on the epoch's weights and its own seeded sample, so those
    checkpoints hold what recomputing after every epoch gives; a last.pt in between holds the running averages."""

    def __init__(self, setting, console=None):
        self.setting, self.console = setting, console
        self.ran = False  # this epoch's statistics are recomputed ones
        self.live = False  # the model has BatchNorm layers that trained this epoch
        self.warned = False
        self.reason: str | None = None
        self.pending: tuple | None = None  # (layers, epoch) put off until a checkpoint keeps the epoch
        self.recomputed = 0  # recomputations this fit

    def on_epoch_start(self, trainer, steps):
        self.pending = None  # the weights move on: an epoch not kept is never recomputed

    def before_validation(self, trainer):
        self.ran = False
        norms = live_batchnorms(trainer.model)
        self.live = bool(norms)
        if not norms or self.setting is False:
            return
        reason = "train.precise_bn: true" if self.setting is True else lagging(norms, trainer.state.step)
        if reason is None:
            return
        self.reason = reason
        if self.setting == "auto" and trainer.val_split is None and not trainer.world.distributed:
            self.pending = (norms, trainer.state.epoch)
            return
        self.recompute(trainer, norms, trainer.state.epoch)

    def before_keeping(self, trainer):
        if self.pending is not None:
            norms, epoch = self.pending
            self.pending = None
            self.recompute(trainer, norms, epoch)

    def recompute(self, trainer, norms, epoch: int):
        split, batch = trainer.train_split, trainer.global_batch  # every DDP rank: the same samples, as one process
        order = sample_order(len(split), trainer.cfg.seed, epoch, min(len(split), PRECISE_BN_BATCHES * batch))
        chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
        if len(chunks) > 1 and len(chunks[-1]) < 2:  # a batch of one has no variance
            chunks.pop()
        norm, channels_last = trainer.data.normalizer, trainer.channels_last
        inputs = (prepare_batch(xb.to(trainer.device), norm, channels_last)
                  for xb, _ in split.batches(chunks, trainer.device))
        devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
        # dropout's draws here leave the training's random stream alone; the statistics serve scoring, so they are
        # computed in its precision
        with torch.random.fork_rng(devices=devices), autocast(trainer.device, trainer.scoring_precision):
            recalibrate(norms, trainer.model, inputs)
        self.ran = True
        self.recomputed += 1

    def on_epoch_end(self, trainer, metrics):
        if self.ran or self.warned or not self.live:
            return
        step = trainer.task.step_metric
        train, val = metrics.get(f"train_{step}"), metrics.get(f"val_{step}")
        if not isinstance(train, float) or not isinstance(val, float) or not far_behind(step, train, val):
            return
        seen = self.eval_mode_score(trainer, step)
        if seen is None or not far_behind(step, train, seen):
            return  # the model scores its training samples as well in eval mode: it overfits, the statistics are fine
        self.warned = True
        if self.console is not None:
            self.console.print(
                f"warning: epoch {metrics['epoch']}: {step} {train:.2f} while training, but {val:.2f} on validation "
                f"and {seen:.2f} on training samples in eval mode: the BatchNorm running statistics lag the weights; "
                "set train.precise_bn: true to recompute them before scoring", soft_wrap=True)

    def eval_mode_score(self, trainer, step: str) -> float | None:
        """The task's step metric for a sample of the training split, scored as validation is (eval mode)."""
        split = trainer.train_split
        idx = sample_order(len(split), trainer.cfg.seed, trainer.state.epoch, min(len(split), CHECK_SAMPLES))
        xs, ys = zip(*split.batches([idx], trainer.device))
        out = predict_logits(trainer.forward, xs[0], trainer.data.normalizer, trainer.device,
                             trainer.scoring_precision, trainer.cfg.train.eval_batch_size, trainer.channels_last)
        return trainer.task.scores(trainer.task.stats(out, ys[0].cpu())).get(step)

    def state_dict(self):
        return {"warned": self.warned}

    def load_state_dict(self, state):
        self.warned = bool(state.get("warned", False))


def far_behind(metric: str, train: float, other: float) -> bool:
    """`other` is far worse than `train` on the task's step metric: 0.25 lower for a score in [0, 1] that is
    better higher (accuracy), twice as large for an error (mae)."""
    from dlcli.tasks import metric_mode

    if metric_mode(metric) == "max":
        return train - other >= 0.25
    return other >= 2 * train and other - train > 1e-6

