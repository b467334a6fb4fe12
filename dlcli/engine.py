"""The training engine: one fit loop over data resident on the device, and batched evaluation.

Batches are cut from tensors already in memory (on the GPU when training there) by a seeded permutation, then
normalised and augmented on the device. Loss and accuracy accumulate on the device and are read only when the
progress display refreshes, so the loop never waits for the device between steps.

Resume is exact: a checkpoint holds, besides weights and optimizer, every random generator, the callbacks' state and,
when written mid-epoch (Ctrl-C, SIGTERM), that epoch's data order, position and running sums.

Under DDP (dlcli.distributed) every rank draws the same permutation and trains its share of each global batch of
devices x batch_size samples; whatever the ranks must decide alike is summed or agreed over them.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import torch

from dlcli.augment import apply_all
from dlcli.distributed import SINGLE, World
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


def cpu_capabilities() -> dict:
    """The CPU's instruction-set features as torch sees them (avx512_bf16, amx_bf16, ...); empty where unknown."""
    get = getattr(torch.cpu, "get_capabilities", None) or getattr(torch._C._cpu, "_get_cpu_capability", None)
    try:
        found = get() if get else {}
    except Exception:  # an older torch, an unusual platform: no claim either way
        return {}
    try:
        return dict(found)  # a read-only mapping in recent torch
    except (TypeError, ValueError):
        return {}


# The layers whose matrix work bf16 speeds up on a CPU with native bf16 (AVX512-BF16, AMX): measured on a 2-core
# Xeon with AMX, one training step of seed 000's CNN runs 1.5-1.8x faster under bf16 autocast and an LSTM over
# tokens 1.7-2.4x, while small dense networks lose (a 20-64-64-2 table MLP at 0.5-0.7x, an MNIST MLP at 0.75-1.1x):
# their matrices are too small to pay for the casts. benchmarks/README.md has the table.
BF16_PAYS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN,
             torch.nn.MultiheadAttention)


def cpu_bf16_pays(model) -> bool:
    caps = cpu_capabilities()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return native and any(isinstance(m, BF16_PAYS) for m in model.modules())


def idle_cores(seconds: float = 0.1) -> float | None:
    """How many of the CPUs this process may use sat idle over a short sample of /proc/stat (Linux); None
    where that cannot be read."""
    allowed = {f"cpu{n}" for n in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}

    def sample() -> dict:
        times = {}
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if name in allowed:
                    ticks = [int(v) for v in values[:8]]
                    times[name] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait, all
        return times

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except (OSError, ValueError, IndexError):
        return None
    idle = 0.0
    for name, (i1, t1) in after.items():
        i0, t0 = before.get(name, (i1, t1))
        idle += (i1 - i0) / (t1 - t0) if t1 > t0 else 1.0
    return idle if after else None


def auto_threads() -> str | None:
    """train.threads unset, training on a CPU: one torch thread per idle core. torch's default team uses every
    core, and its threads wait for each other at every operation: with one core taken by another busy process,
    seed 000's CNN fell from 5,740 to 1,280-1,510 images/s with 2 threads and held 3,920 with 1. Alone, nothing
    changes. OMP_NUM_THREADS set by the user, a sweep or DDP is kept. Returns what was decided, if anything."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    default = torch.get_num_threads()
    idle = idle_cores() if default > 1 else None
    if idle is None:
        return None
    threads = max(1, min(default, round(idle)))
    if threads == default:
        return None
    torch.set_num_threads(threads)
    return f"train.threads: {threads} of {default} ({default - idle:.1f} cores are busy with other processes)"


def resolve_precision(precision: str, device: torch.device, model=None, scoring: bool = False) -> str:
    """train.precision auto: bf16 on CUDA where supported (else float16 with a scaler); on a CPU, bf16 autocast for
    the training steps of networks with convolutions or recurrent layers where the CPU has native bf16, float32
    everywhere else. `scoring` (validation, test, evaluate, predict): on a CPU, auto scores in float32, so that
    evaluate reproduces the run's test figure and predict an exported model's probabilities to 1e-4; scoring is a
    small part of a CPU run's time."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "16-mixed"
        if device.type == "cpu" and model is not None and not scoring and cpu_bf16_pays(model):
            return "bf16"
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


# channels_last (NHWC) against torch's default NCHW, per training step on one CPU thread at batch 32 (`python
# benchmarks/finetune.py --layouts`, benchmarks/README.md): NHWC wins clearly for seed 000's CNN (1.1-2.0x) and
# MobileNetV3 (1.1-2.2x: depthwise convolutions), and for resnet18 from 128 px (1.1-1.2x); for resnet18 at 64 px it
# loses or draws (0.84-0.98x trained, 0.79-1.00x frozen; 32 px: 0.77-1.08x), where its 3x3 convolutions of 256-512
# channels run on maps of 4x4 and less, and 96 px is a draw. Hence NHWC unless dense convolutions on small maps do a
# third of the work.
SMALL_MAP = 64  # output pixels (8x8): resnet18's maps at 64 px from its third stage on
SMALL_MAP_SHARE = 1 / 3


def use_channels_last(setting, model, input_shape) -> bool:
    """train.channels_last: a bool as given; auto: for networks with 2-d convolutions, unless dense (groups 1, larger
    than 1x1) convolutions with outputs under SMALL_MAP pixels do SMALL_MAP_SHARE of their work, found by one forward
    pass of a blank sample in eval mode (no statistics change)."""
    if setting != "auto":
        return bool(setting)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs or len(input_shape) != 3:
        return False
    work = {"all": 0.0, "small": 0.0}

    def count(conv, _, out):
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return
        kh, kw = conv.kernel_size
        flops = out[0].numel() * conv.in_channels // conv.groups * kh * kw
        work["all"] += flops
        if conv.groups == 1 and kh * kw > 1 and out.shape[2] * out.shape[3] < SMALL_MAP:
            work["small"] += flops

    modes = {m: m.training for m in model.modules()}
    hooks = [c.register_forward_hook(count) for c in convs]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=convs[0].weight.device))
    except Exception:  # a model this probe cannot feed: NHWC, as for any conv network before the rule
        return True
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return work["small"] < SMALL_MAP_SHARE * work["all"]


def prepare_batch(x, normalizer, channels_last: bool):
    x = normalizer(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


EVAL_VALUES = 1 << 20  # input values per evaluation batch at most: 1,024 MNIST digits, 85 RGB images of 64x64


@torch.inference_mode()
def predict_logits(model, x, normalizer, device, precision="32", batch_size=1024, channels_last=False, shrink=None):
    """Logits (float32, on the CPU) for every row of x, in large batches: at most `batch_size` rows and EVAL_VALUES
    input values (a conv layer's activations for 1,024 images of 64x64 would take half a GB). `shrink` (a task's):
    what is kept of each batch's outputs (detection keeps its decoded boxes, not the dense outputs)."""
    model.eval()
    batch_size = eval_rows(x, batch_size)
    out = []
    for start in range(0, len(x), batch_size):
        xb = prepare_batch(x[start : start + batch_size].to(device, non_blocking=True), normalizer, channels_last)
        with autocast(device, precision):
            found = model(xb).float()
        out.append(shrink(found) if shrink is not None else found)
    return torch.cat(out).cpu() if out else torch.empty(0)


def eval_rows(x, batch_size: int) -> int:
    """Rows of x per evaluation batch: at most batch_size and EVAL_VALUES input values."""
    return max(1, min(batch_size, EVAL_VALUES // max(1, math.prod(x.shape[1:]))))


def chunked_stats(task, model, x, y, normalizer, device, precision="32", batch_size=1024, channels_last=False):
    """A task's stats of (x, y) summed over batches of outputs, never holding more than one batch's (what a task
    with figure_rows scores by: its stats are additive, as DDP's sums over ranks need them to be)."""
    rows = eval_rows(x, batch_size)
    total = None
    for start in range(0, len(x), rows):
        out = predict_logits(model, x[start:start + rows], normalizer, device, precision, rows, channels_last,
                             task.shrink)
        found = task.stats(out, y[start:start + rows].cpu())
        total = found if total is None else {k: total[k] + found[k] for k in total}
    return total if total is not None else task.stats(torch.empty(0), y[:0].cpu())


class Interrupted(DlcliError):
    """SIGINT or SIGTERM arrived during fit: exit 130 or 143, as a shell reports a process those signals ended."""

    def __init__(self, signame: str, saved: bool):
        self.signame, self.saved = signame, saved
        super().__init__(f"interrupted by {signame}", 143 if signame == "SIGTERM" else 130, shared=True)


class StopNow(KeyboardInterrupt):
    """A second SIGINT or SIGTERM during fit: stop wherever the loop is. A KeyboardInterrupt, not an Exception, so that
    no `except Exception` on its way (a logger's, a plot's) takes it for a failure and carries on."""

    def __init__(self, signame: str):
        self.signame = signame
        super().__init__(f"interrupted by a second {signame}")


class NonFiniteLoss(DlcliError):
    def __init__(self, message: str):
        super().__init__(message, RUNTIME, shared=True)


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
    correct: torch.Tensor  # the sum of the task's running metric (correct samples for classification)
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
    def before_validation(self, trainer): ...  # the epoch's steps are done; may set buffers (dlcli.precise_bn)
    def before_keeping(self, trainer): ...  # this epoch's model is checkpointed to be scored (best.pt, the last)
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
    at once (StopNow), and puts the handlers from before back, so that a third acts as it would outside dlcli.
    Handlers are installed only for the fit (and only where Python allows: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if state.interrupt:
            for s, h in previous.items():
                signal.signal(s, h)
            raise StopNow(name)
        state.interrupt = name

    previous.update({s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)})
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    def __init__(self, cfg, data, model, device, callbacks=(), world: World = SINGLE):
        self.cfg, self.data, self.device, self.world = cfg, data, device, world
        tc = cfg.train
        self.precision = resolve_precision(tc.precision, device, model)
        self.scoring_precision = resolve_precision(tc.precision, device, model, scoring=True)
        self.channels_last = use_channels_last(tc.channels_last, model, data.normalizer.output_shape(data.input_shape))
        self.model = model.to(device, memory_format=torch.channels_last) if self.channels_last else model.to(device)
        self.forward = torch.compile(self.model) if tc.compile else self.model  # evaluates; trains on one device
        self.wrap_for_training()
        self.train_split = data.train.to(device)
        self.val_split = data.val.to(device) if data.val is not None else None
        self.global_batch = tc.batch_size * world.size
        # the task (dlcli.tasks) owns the loss, the running metric and the scores, with its fit on the targets
        self.task = cfg.task.bind(data.target, data.classes, tc, device, data.train.y)
        self.steps_per_epoch = math.ceil(len(self.train_split) / self.global_batch)
        self.optimizer = cfg.optimizer.build(self.model, device.type)
        self.scheduler = cfg.scheduler.build(self.optimizer, tc.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "16-mixed" else None
        self.callbacks = list(callbacks)
        self.state = State()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.progress: EpochProgress | None = None
        self.next_check: float = 0.0  # one process: a time; DDP: a step the ranks agreed on
        self.last_check = (0, 0.0)  # DDP: the step and time of the last check
        self.rank_states: list | None = None  # DDP: every rank's generators and running sums, for checkpoints

    def wrap_for_training(self):
        """The training forward: under DDP, which averages the gradients over ranks (evaluation needs no collectives),
        the model wrapped. DDP syncs the parameters that require gradients when it wraps: a callback that freezes or
        unfreezes parameters (dlcli.finetune.FreezeSchedule) wraps again, on every rank at the same step."""
        self.train_forward = self.forward
        if self.world.distributed:
            ddp = self.world.wrap(self.model, self.device)
            self.train_forward = torch.compile(ddp) if self.cfg.train.compile else ddp

    def loss_fn(self, logits, y):
        if self.world.distributed:  # a rank's share of a last batch smaller than the world may be empty: loss 0
            loss = self.task.criterion(logits, y, reduction="sum") / max(len(y), 1)
        else:
            loss = self.task.criterion(logits, y)
        if self.cfg.train.l1:
            loss = loss + self.cfg.train.l1 * sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)
        return loss

    def new_epoch(self) -> EpochProgress:
        order = torch.randperm(len(self.train_split), generator=self.generator).to(self.device)
        zero = torch.zeros((), device=self.device)
        stat = torch.zeros((), device=self.device, dtype=self.task.step_dtype())
        return EpochProgress(order, 0, zero, stat, torch.zeros(self.steps_per_epoch, device=self.device))

    def batch_indices(self, p: EpochProgress):
        """This rank's sample indices of batches p.batch, p.batch + 1, ...: global batch k is the k-th slice of
        world x batch_size samples of the order (batch k of one process with that batch size), and rank r takes
        every world-th sample of it."""
        world = self.world
        for start in range(p.batch * self.global_batch, len(p.order), self.global_batch):
            chunk = p.order[start : start + self.global_batch]
            yield chunk[world.rank :: world.size] if world.distributed else chunk

    def rank_weight(self, i: int, count: int) -> float:
        """DDP averages the ranks' gradients. Weighting a rank's mean loss by its share of global batch i (world x
        count / the batch's samples: 1 when the batch splits evenly) makes that average the whole batch's mean."""
        return count * self.world.size / min(self.global_batch, len(self.train_split) - i * self.global_batch)

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
        tc, split, world = self.cfg.train, self.train_split, self.world
        augment = self.cfg.data.augmentations()
        self.model.train()
        p = self.progress = self.progress or self.new_epoch()  # a resumed run starts inside its epoch
        for cb in self.callbacks:
            cb.on_epoch_start(self, self.steps_per_epoch)
        self.next_check = p.batch if world.distributed else time.perf_counter() + REFRESH_SECONDS
        self.last_check = (p.batch, time.perf_counter())
        # In-memory splits cut batches by indexing; streamed image folders decode them in DataLoader workers.
        for i, (xb, yb) in enumerate(split.batches(self.batch_indices(p), self.device), start=p.batch):
            if self.check_due(i):
                self.check(i, p)
            xb = prepare_batch(xb, self.data.normalizer, self.channels_last)
            if augment:  # boxes and masks move with the pixels
                xb, yb = apply_all(augment, xb, yb, self.task.spatial, self.task.ignore_index) \
                    if self.task.spatial else (apply_all(augment, xb), yb)
            with autocast(self.device, self.precision):
                logits = self.train_forward(xb)
            loss = self.loss_fn(logits, yb)
            # skip_batch must decide before the update, so it reads the loss every step (a host sync); `stop`
            # records each loss on the device and checks them only a few times a second and at the epoch's end.
            if tc.on_nan == "skip_batch" and not world.all_true(torch.isfinite(loss)):
                p.skipped, p.skipped_samples = p.skipped + 1, p.skipped_samples + len(yb)
            else:
                self.optimizer_step(loss * self.rank_weight(i, len(yb)) if world.distributed else loss)
                p.losses[i] = loss.detach()
                p.loss_sum += loss.detach() * len(yb)
                p.correct += self.task.step_stat(logits, yb)
            self.state.step += 1
            p.batch = i + 1
            for cb in self.callbacks:
                cb.on_step(self, i * tc.batch_size + len(yb), p.loss_sum, p.correct)  # this rank's samples so far
        self.check_finite(p)
        loss_sum, correct, skipped_samples = world.totals(p.loss_sum, p.correct, p.skipped_samples)
        self.progress, counted = None, len(split) - skipped_samples
        if counted == 0:
            raise NonFiniteLoss(f"every batch of epoch {self.state.epoch + 1} had a non-finite loss: "
                                "lower optimizer.lr or set train.grad_clip")
        metrics = {"train_loss": loss_sum / counted, f"train_{self.task.step_metric}": correct / counted}
        return metrics | ({"skipped_batches": p.skipped} if tc.on_nan == "skip_batch" else {})

    def check_due(self, i: int) -> bool:
        """One process checks for a signal before every step and for a non-finite loss a few times a second; DDP
        ranks must act at the same step, so they check together, at steps rank 0 spaces REFRESH_SECONDS apart."""
        if self.world.distributed:
            return i == self.next_check
        return self.state.interrupt is not None or time.perf_counter() >= self.next_check

    def check(self, i: int, p: EpochProgress):
        """Fail on a non-finite loss so far; save and stop on a signal (under DDP, a signal to any rank)."""
        now = time.perf_counter()
        if self.world.distributed:  # rank 0 proposes the next check point, REFRESH_SECONDS at its recent pace
            last_i, last_t = self.last_check
            pace = (i - last_i) / max(now - last_t, 1e-9)
            gap = min(max(int(pace * REFRESH_SECONDS), 1), 10_000) if i > last_i else 1
            self.state.interrupt, self.next_check = self.world.agree(self.state.interrupt, i + gap)
            self.last_check = (i, now)
        else:
            self.next_check = now + REFRESH_SECONDS
        self.check_finite(p)
        if self.state.interrupt:
            self.gather_rank_states()
            for cb in self.callbacks:
                cb.on_interrupt(self)
            raise Interrupted(self.state.interrupt, saved=True)

    def check_finite(self, p: EpochProgress):
        """Stop at the first non-finite loss, naming its epoch and step; nothing after it is checkpointed. DDP ranks
        test the sum over all of them, so all stop together."""
        if torch.isfinite(self.world.total(p.loss_sum)).item():
            return
        losses = self.world.total(p.losses[: p.batch])
        found = (~torch.isfinite(losses)).nonzero()
        bad = int(found[0]) if len(found) else p.batch - 1  # or the sum itself overflowed
        step = self.state.step - p.batch + bad + 1
        raise NonFiniteLoss(
            f"the training loss became {losses[bad].item()} in epoch {self.state.epoch + 1} at step {step} "
            f"(batch {bad + 1} of {self.steps_per_epoch}): lower optimizer.lr, set train.grad_clip, "
            "or set train.on_nan: skip_batch"
        )

    def gather_rank_states(self):
        """DDP: what differs between ranks, for rank 0's checkpoint: the random generators (augmentation,
        dropout) and, mid-epoch, the running sums. Every rank calls this at the same points."""
        if self.world.distributed:
            p = self.progress
            sums = {k: v for k, v in p.to_dict().items() if k not in ("order", "batch")} if p else None
            self.rank_states = self.world.gather({"rng": rng_state(self.generator), "progress": sums})

    def outputs(self, split):
        """The model's outputs (float32, CPU) for a split's samples; under DDP for this rank's share (every
        world-th sample), with its targets."""
        r, w = self.world.rank, self.world.size
        x, y = (split.x, split.y) if not self.world.distributed else (split.x[r::w], split.y[r::w])
        return predict_logits(self.forward, x, self.data.normalizer, self.device, self.scoring_precision,
                              self.cfg.train.eval_batch_size, self.channels_last, self.task.shrink), y.cpu()

    def evaluate(self, split) -> dict:
        """The split's loss and the task's metrics. Under DDP each rank scores every world-th sample and the
        task's additive sums over ranks give the split's figures."""
        self.world.same_buffers(self.model)  # every rank scores with the statistics the checkpoint keeps
        if self.task.figure_rows is not None:  # outputs too large to hold for a split
            r, w = self.world.rank, self.world.size
            x, y = (split.x, split.y) if not self.world.distributed else (split.x[r::w], split.y[r::w])
            stats = chunked_stats(self.task, self.forward, x, y, self.data.normalizer, self.device,
                                  self.scoring_precision, self.cfg.train.eval_batch_size, self.channels_last)
        else:
            outputs, y = self.outputs(split)
            stats = self.task.stats(outputs, y)
        if self.world.distributed and self.task.rank_stats == "join":
            stats = self.task.join(self.world.gather({k: v.cpu() for k, v in stats.items()}))
        elif self.world.distributed:
            stats = {k: self.world.total(v) for k, v in stats.items()}
        return self.task.scores(stats)

    def fit(self) -> State:
        tc, state = self.cfg.train, self.state
        with stop_on_signals(state):
            for cb in self.callbacks:
                cb.on_fit_start(self)
            while state.epoch < tc.epochs and not state.stop:
                started = time.perf_counter()
                metrics = {"epoch": state.epoch + 1, **self.train_epoch()}
                for cb in self.callbacks:
                    cb.before_validation(self)
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
                self.gather_rank_states()
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
        } | ({"world_size": self.world.size, "ranks": self.rank_states} if self.world.distributed else {})

    def restore(self, ckpt: dict) -> None:
        """Continue from `checkpoint_state()`; call after building everything, as building draws random numbers."""
        if ckpt.get("world_size", 1) != self.world.size:
            raise ValueError(f"it was saved by {ckpt.get('world_size', 1)} processes, not {self.world.size}")
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
        mine = ckpt["ranks"][self.world.rank] if self.world.distributed else ckpt
        if ckpt["progress"] is not None:
            p, dev = ckpt["progress"] | mine["progress"], self.device
            self.progress = EpochProgress(p["order"].to(dev), p["batch"], p["loss_sum"].to(dev),
                                          p["correct"].to(dev), torch.zeros(self.steps_per_epoch, device=dev),
                                          p["skipped"], p["skipped_samples"])
        set_rng_state(mine["rng"], self.generator)


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    from dlcli.tasks import metric_mode

    return metric_mode(monitor, mode)


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
