"""More than one device: DistributedDataParallel in worker processes started by torch's elastic launcher.

`dlcli train CONFIG --devices N` starts N workers through torch.distributed's elastic launch (what
`torchrun --standalone --nproc_per_node N` does), each running the same command without --devices;
`torchrun ... -m dlcli train CONFIG` starts them itself, on one machine or several. A worker learns its place from
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK). Rank 0 alone touches the run directory and shows progress;
what every rank must know or decide alike (metrics, a signal, a non-finite loss, the checkpoint to resume) goes
through a collective. CUDA tensors travel over NCCL, CPU tensors (and so every collective here) over gloo.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dlcli.errors import RUNTIME, DlcliError


STOPPING = {signal.SIGINT, signal.SIGTERM}
joined = False  # whether this process joined a process group: it then ends through exit_worker


def exit_worker(code) -> None:
    """End a DDP worker now, with `code` (SystemExit's). Past this point the interpreter's own exit would destroy
    the communication threads in an order C++ does not define, which can abort the process ("terminate called
    without an active exception") after its work is done: everything is written and flushed, so leave at once."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def launched() -> bool:
    """Whether torchrun (or `--devices`) started this process as one of its workers."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; `World()` is one process alone, for which every collective is the
    identity, so the training code reads the same either way."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """Each rank's device: cuda:LOCAL_RANK on CUDA, the CPU otherwise."""
        if not self.distributed or device.type == "cpu":
            return device
        if device.type != "cuda":
            raise DlcliError(f"train.device is '{device}': more than one device needs CUDA or the CPU")
        if device.index is not None:
            raise DlcliError(f"train.device is '{device}', one GPU: with several devices use cuda or auto (each "
                             "rank takes cuda:LOCAL_RANK; pick GPUs with CUDA_VISIBLE_DEVICES)")
        if self.local_size > torch.cuda.device_count():
            raise DlcliError(f"{self.local_size} processes on this machine but {torch.cuda.device_count()} GPUs: "
                             "use at most one process per GPU", RUNTIME)
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel: the same weights on every rank, gradients averaged over ranks in backward."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def same_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (batchnorm's running statistics) on every rank. DDP broadcasts them before each training
        forward, which then updates each rank's copy from its own batch: without this, validation would score every
        rank's share with other statistics than the checkpoint (rank 0's) holds."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)

    @contextlib.contextmanager
    def main_first(self, local: bool = False):
        """Rank 0 (with `local`, each machine's first rank) runs the block, then the others do: one process
        downloads or caches, the rest find its result. If a first rank fails, it says why; the others stop with
        it, and rank 0 says so where it was not the one that failed."""
        first = (self.local_rank if local else self.rank) == 0
        if not self.distributed:
            yield
            return
        if not first:
            self._first_failed(False)  # waits for the first ranks' verdict
        try:
            yield
        except BaseException:
            if first:
                self._first_failed(True)
            raise
        if first:
            self._first_failed(False)

    @contextlib.contextmanager
    def together(self):
        """A stage that may fail on any rank (reading the data, building the model; rank 0 alone opening the run):
        the ranks compare how it went, so that all stop if one fails, and the error is said once. Rank 0 says its
        own; another rank says its own only where rank 0 did not fail too (then rank 0 says that it failed)."""
        if not self.distributed:
            yield
            return
        try:
            yield
        except Exception as err:
            failed = self.gather(True)
            if not self.main and failed[0]:  # the same failure, most likely: rank 0 reports it
                code = err.exit_code if isinstance(err, DlcliError) else RUNTIME
                raise DlcliError(str(err), code, shared=True) from err
            raise
        failed = self.gather(False)
        if any(failed):
            ranks = ", ".join(str(r) for r, f in enumerate(failed) if f)
            raise DlcliError(f"rank {ranks} failed (its error says why)", RUNTIME, shared=not self.main)

    def _first_failed(self, failed: bool) -> None:
        """Every rank calls this once in main_first: a first rank after its block, the others before theirs."""
        flag = torch.tensor([float(failed)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not failed:
            raise DlcliError("another process failed while preparing the data (its error says why)", RUNTIME,
                             shared=True)

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (any picklable object: a run id, a config, a checkpoint)."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of a tensor (float64 on the CPU); on one process the tensor itself."""
        if not self.distributed:
            return t
        t = t.detach().to("cpu", torch.float64, copy=True)
        dist.all_reduce(t)
        return t

    def totals(self, *values) -> list:
        """Sums over ranks of numbers or scalar tensors, as Python numbers."""
        if not self.distributed:
            return [v.item() if isinstance(v, torch.Tensor) else v for v in values]
        return self.total(torch.tensor([float(v) for v in values], dtype=torch.float64)).tolist()

    def all_true(self, flag: torch.Tensor) -> bool:
        if not self.distributed:
            return bool(flag.item())
        return self.total(flag.logical_not().double()).item() == 0

    def agree(self, interrupt: str | None, next_check: int) -> tuple[str | None, int]:
        """A check point: a signal any rank received (now, or one pending since the last check) stops every rank,
        and rank 0's proposal for the next check point is everyone's."""
        if interrupt is None:
            taken = signal.sigtimedwait(STOPPING, 0)
            interrupt = signal.Signals(taken.si_signo).name if taken else None
        flags = torch.tensor([signal.Signals[interrupt].value if interrupt else 0, next_check if self.main else 0])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signum, next_check = flags.tolist()
        return (signal.Signals(signum).name if signum else None), next_check


SINGLE = World()


@contextlib.contextmanager
def join(devices: int | None = None):
    """This process's World: from torchrun's environment when started as a worker (joining the process group,
    left again at the end), else one process alone."""
    if not launched():
        yield SINGLE
        return
    env = os.environ
    world = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                  int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    if devices is not None and devices != world.size:
        raise DlcliError(f"--devices {devices}, but torchrun started {world.size} processes (WORLD_SIZE): "
                         "leave --devices out under torchrun")
    if not world.distributed:
        yield world
        return
    global joined
    joined = True
    # A worker keeps SIGINT and SIGTERM blocked in every thread, from before the first one starts: they wait,
    # pending, for the training loop's next check point (World.agree), where all ranks stop at the same step. A
    # handler would interrupt whichever thread the signal lands on, and a communication thread interrupted in a
    # system call fails or hangs its rank's collective alone (seen with gloo).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    # CPU tensors over gloo (metrics, flags, objects), CUDA tensors over NCCL (DDP's gradients).
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield world
        dist.barrier()  # rank 0 may still be writing the run; a rank leaving early ends its peers' connections
    finally:
        dist.destroy_process_group()  # on an error too, but with no barrier: a failed rank must not wait for others


def launch(argv: list[str], nproc: int) -> int:
    """Run `python -m dlcli ARGV` in `nproc` worker processes on this machine through torch's elastic launcher and
    return the exit code to end with. Workers inherit stdout and stderr: rank 0 prints the run id and the errors.
    A signal to this process reaches the workers (torchrun forwards it), which save a checkpoint and stop."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    # Workers share the CPU cores rather than each starting a thread per core (torchrun would set 1).
    threads = None if "OMP_NUM_THREADS" in os.environ else str(max(1, (os.cpu_count() or 1) // nproc))
    quiet = {name: logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
             if name.startswith("torch.distributed")}
    levels = {name: log.level for name, log in quiet.items()}
    try:
        if threads:
            os.environ["OMP_NUM_THREADS"] = threads
        for log in quiet.values():  # the workers say what happened; the agent's own reports repeat it
            log.setLevel(logging.CRITICAL)
        elastic_launch(config, sys.executable)("-u", "-m", "dlcli", *argv)
        return 0
    except ChildFailedError as err:
        # The rank that failed by itself (an exit code, not the launcher's signal) reported why.
        rank, failure = min(err.failures.items(), key=lambda kv: (kv[1].exitcode < 0, kv[0]))
        return failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
    except SignalException as err:
        return 128 + int(err.sigval)
    finally:
        if threads:
            del os.environ["OMP_NUM_THREADS"]
        for name, log in quiet.items():
            log.setLevel(levels[name])
