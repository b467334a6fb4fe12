"""Fault injection: real SIGKILLs at chosen and random points of a training, a full disk for every file a run
writes, and damaged run files. After each: a truthful status, then `resume` or a clean one-line refusal.

The kills run `dlcli train` in a child process with one function wrapped to SIGKILL the process at its n-th call
(midway through a file write, right after a call returns, or at a training step): the kernel ends it as the OOM
killer would, with no Python cleanup. The full disk is a real tmpfs where the machine lets us mount one, and a
file object that raises ENOSPC everywhere else.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from dlcli import rundirs as runs
from tests.conftest import tiny_config

pytestmark = pytest.mark.faults

EPOCHS = 3
STEPS_PER_EPOCH = 6  # 240 samples, 20% validation, batch 32

# Runs before dlcli's main in the child: argv = point, n, then dlcli's own arguments.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import dlcli.engine, dlcli.rundirs, dlcli.training

    point, nth, sys.argv = sys.argv[1], int(sys.argv[2]), ["dlcli", *sys.argv[3:]]
    calls = 0

    def due():
        global calls
        calls += 1
        return calls == nth

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfThenDie:  # the first write of the file reaches the disk halfway, then the process dies
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[:max(1, len(data) // 2)])
            self.f.flush()
            os.fsync(self.f.fileno())
            die()
        def __getattr__(self, name):
            return getattr(self.f, name)

    kind, _, target = point.partition(":")
    if kind == "write":
        real = dlcli.rundirs.atomic_write
        def atomic_write(path, write, needed=None):
            if path.name == target and due():
                return real(path, lambda f: write(HalfThenDie(f)), needed)
            return real(path, write, needed)
        dlcli.rundirs.atomic_write = atomic_write
    elif kind == "after":
        owner, name = target.rsplit(".", 1)
        holder = {"runs": dlcli.rundirs, "RunLock": dlcli.rundirs.RunLock, "Trainer": dlcli.engine.Trainer}[owner]
        real = getattr(holder, name)
        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            if due():
                die()
            return out
        setattr(holder, name, wrapped)
    elif kind == "step":
        class Killer(dlcli.engine.Callback):
            def on_step(self, trainer, seen, loss, correct):
                if due():
                    die()
        Base = dlcli.training.Trainer
        class KillingTrainer(Base):
            def __init__(self, cfg, data, model, device, callbacks=(), *world):
                super().__init__(cfg, data, model, device, [Killer(), *callbacks], *world)
        dlcli.training.Trainer = KillingTrainer

    from dlcli.cli import main
    main()
""")

# (kill point, n-th call, epoch of the last checkpoint the run keeps: None for none, "done" for a finished run)
KILL_POINTS = [
    ("after:runs.create_run", 1, None),  # an empty run directory
    ("write:config.yaml", 1, None),  # halfway through the first file
    ("write:data.json", 1, None),
    ("write:summary.json", 1, None),
    ("step:", 3, None),  # mid-way through epoch 1
    ("after:runs.append_jsonl", 1, None),  # epoch 1's metrics written, its checkpoint not
    ("write:best.pt", 1, None),  # halfway through the first checkpoint (best.pt goes first)
    ("write:last.pt", 1, 1),  # best.pt of epoch 1 stands: resume starts from it
    ("write:summary.json", 2, 1),  # the summary after epoch 1's checkpoints
    ("write:last.pt", 2, 1),  # halfway through the second checkpoint: the first one stands
    ("step:", STEPS_PER_EPOCH + 3, 1),  # mid-way through epoch 2
    ("write:last.pt", 3, 2),
    ("after:Trainer.evaluate", EPOCHS + 1, EPOCHS),  # scoring the test split, after the last epoch
    ("write:summary.json", EPOCHS + 2, EPOCHS),  # writing the final summary
    ("write:curves.png", 1, "done"),  # after the final summary: the run has completed
]


def config(tmp_path: Path) -> Path:
    cfg = tiny_config(train={"epochs": EPOCHS, "batch_size": 32, "threads": 1})
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def reference(cli, tmp_path):
    """The same training, never interrupted: every resumed run must end exactly like it."""
    root = tmp_path / "reference"
    result = cli("train", config(tmp_path), "--runs-dir", root, "-q")
    assert result.exit_code == 0, result.output
    (run,) = runs.list_runs(root)
    return run


def child_env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def kill_at(point: str, nth: int, cfg: Path, root: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", KILLER, point, str(nth), "train", str(cfg), "--runs-dir", str(root),
                           "-q"], capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr
    return proc.returncode


def same_result(run: Path, reference: Path) -> None:
    got, want = runs.read_json(run / "summary.json"), runs.read_json(reference / "summary.json")
    assert got["status"] == "completed" and got["test"] == pytest.approx(want["test"], abs=1e-6)
    assert [m["val_loss"] for m in runs.read_metrics(run)] == \
        pytest.approx([m["val_loss"] for m in runs.read_metrics(reference)], abs=1e-6)
    wa = runs.load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    wb = runs.load_checkpoint(reference / "checkpoints" / "best.pt")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def files_of(run: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != runs.LOCK}


def check_after_kill(cli, root: Path, expected, reference: Path, monkeypatch) -> str:
    """The status the killed run shows, then resume it (or see it refused cleanly); returns what happened."""
    listed = runs.list_runs(root)
    if expected is None and not listed:  # killed before config.yaml existed: a half-made directory, not a run
        monkeypatch.setattr(runs, "HALF_MADE_AGE", 0.0)
        (half,) = [p for p in root.iterdir() if p.is_dir()]
        assert [p for p, _ in runs.never_checkpointed(root)] == [half]
        assert cli("runs", "--clean", "--yes", "--runs-dir", root).exit_code == 0
        assert not half.exists()
        return "half-made, cleaned"
    (run,) = listed
    row = runs.overview(run)
    if expected == "done":
        assert row["status"] == "completed"
        result = cli("resume", run.name, "--runs-dir", root, "-q")
        assert result.exit_code == 2 and "has completed" in error_line(result)
        return "completed, resume refused"
    assert row["status"] == "killed", row
    assert row["last_checkpoint"] == expected, row
    shown = cli("show", run.name, "--json", "--runs-dir", root)
    assert json.loads(shown.stdout)["summary"]["status"] == "killed"
    if expected is None:
        before = files_of(run)
        result = cli("resume", run.name, "--runs-dir", root, "-q")
        assert result.exit_code == 1 and "before its first checkpoint" in error_line(result)
        assert files_of(run) == before
        assert cli("runs", "--clean", "--yes", "--runs-dir", root).exit_code == 0
        assert not run.exists()
        return "no checkpoint: resume refused, cleaned"
    result = cli("resume", run.name, "--runs-dir", root, "-q")
    assert result.exit_code == 0, result.output
    same_result(run, reference)
    assert runs.overview(run)["status"] == "completed"
    assert not list(run.rglob(".*.tmp*"))
    return f"resumed from epoch {expected}"


@pytest.mark.parametrize("point,nth,expected", KILL_POINTS, ids=[f"{p}{n}" for p, n, _ in KILL_POINTS])
def test_sigkill_at_a_chosen_point_then_resume_or_a_clean_refusal(cli, tmp_path, reference, point, nth, expected,
                                                                  monkeypatch):
    root = tmp_path / "runs"
    assert kill_at(point, nth, config(tmp_path), root) == -signal.SIGKILL
    check_after_kill(cli, root, expected, reference, monkeypatch)


def test_a_resume_killed_midway_is_resumed_again(cli, tmp_path, reference, monkeypatch):
    root = tmp_path / "runs"
    assert kill_at("write:last.pt", 2, config(tmp_path), root) == -signal.SIGKILL
    (run,) = runs.list_runs(root)
    resumed = subprocess.run([sys.executable, "-c", KILLER, "write:last.pt", "1", "resume", run.name, "--runs-dir",
                              str(root), "-q"], capture_output=True, text=True, env=child_env(), timeout=120)
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr
    assert runs.overview(run)["status"] == "killed"
    check_after_kill(cli, root, 1, reference, monkeypatch)


@pytest.mark.must_run_in_ci
def test_a_runs_directory_that_cannot_be_written_is_one_line_before_training(cli, tmp_path):
    (tmp_path / "afile").write_text("")
    result = cli("train", config(tmp_path), "--runs-dir", tmp_path / "afile" / "runs", "-q")
    assert result.exit_code == 1 and "afile is not a directory" in error_line(result)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a read-only file system needs a tmpfs mount (root, a machine that allows it)")
    try:
        result = cli("train", config(tmp_path), "--runs-dir", ro / "runs", "-q")
        assert result.exit_code == 1 and "read-only file system" in error_line(result)
    finally:
        subprocess.run(["umount", str(ro)], check=False)


# The child of the random kills: every step sleeps STEP_SLEEP, so a training of EPOCHS x STEPS_PER_EPOCH steps lasts
# at least that long on any machine, however fast, and a kill timed from the first checkpoint lands mid-run.
STEP_SLEEP = 0.1
PACED = textwrap.dedent(f"""
    import sys, time
    import dlcli.training
    from dlcli.engine import Callback

    class Paced(Callback):
        def on_step(self, trainer, seen, loss, correct):
            time.sleep({STEP_SLEEP})

    Base = dlcli.training.Trainer
    class PacedTrainer(Base):
        def __init__(self, cfg, data, model, device, callbacks=(), *world):
            super().__init__(cfg, data, model, device, [Paced(), *callbacks], *world)
    dlcli.training.Trainer = PacedTrainer
    sys.argv = ["dlcli", *sys.argv[1:]]
    from dlcli.cli import main
    main()
""")


def test_sigkill_at_random_moments(cli, tmp_path, reference, monkeypatch):
    """Three kills at seeded random times of real child processes (run side by side, to keep the suite short), each
    timed from the moment its first checkpoint appears, so that it lands mid-run whatever the machine's load
    (asserted): the status is true and resume ends exactly like the uninterrupted run."""
    rng = random.Random(20261125)
    cfg = config(tmp_path)
    # After epoch 1's checkpoint, 2 epochs of steps (each at least STEP_SLEEP long) are left: a delay well below
    # that, with a margin for noticing the checkpoint late, kills the run in epoch 2 or 3, before its end.
    left = (EPOCHS - 1) * STEPS_PER_EPOCH * STEP_SLEEP
    delays = [rng.uniform(0.05, left - 0.4) for _ in range(3)]
    roots = [tmp_path / f"random-{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", PACED, "train", str(cfg), "--runs-dir", str(root), "-q"],
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for root in roots]
    try:
        due: dict[int, float] = {}  # child -> when to kill it
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            assert now < deadline, "the trainings made no progress"
            for i, (proc, root) in enumerate(zip(procs, roots)):
                if proc.poll() is not None:
                    continue
                if i not in due and any(root.glob("*/checkpoints/last.pt")):
                    due[i] = now + delays[i]
                if i in due and now >= due[i]:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=60)
            time.sleep(0.005)
    finally:
        for proc in procs:
            proc.kill()
    for proc in procs:
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # killed, not finished
        proc.stderr.close()
    resumed_from = []
    for root in roots:
        (run,) = runs.list_runs(root)
        row = runs.overview(run)
        assert row["status"] == "killed" and row["last_checkpoint"] in range(1, EPOCHS), row
        assert check_after_kill(cli, root, row["last_checkpoint"], reference, monkeypatch).startswith("resumed")
        resumed_from.append(row["last_checkpoint"])
    print("random kills resumed from epochs", resumed_from)


def test_a_killed_run_shows_as_killed_in_the_runs_table(cli, tmp_path):
    root = tmp_path / "runs"
    kill_at("step:", STEPS_PER_EPOCH + 2, config(tmp_path), root)
    table = cli("runs", "--runs-dir", root)
    assert "killed (checkpoint: epoch 1)" in table.stdout


def test_a_run_trained_elsewhere_is_not_called_killed(tmp_path):
    """On a shared runs directory another machine's lock may be invisible: a fresh heartbeat keeps it `running`."""
    run = tmp_path / "shared-20261125-120000"
    (run / "checkpoints").mkdir(parents=True)
    (run / runs.LOCK).write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    summary = {"status": "running", "pid": 1, "host": "another-machine"}
    assert runs.status(run, summary) == "running"
    old = time.time() - runs.STALE - 5
    os.utime(run / runs.LOCK, (old, old))
    assert runs.status(run, summary) == "killed"


# ---------------------------------------------------------------- a full disk, for every file a run writes


def enospc_open(target: str, from_nth: int):
    """open() for dlcli.rundirs that fails with ENOSPC on the n-th and later writes of `target` (the disk is full
    from then on for that file), after a part of the bytes reached it."""
    seen = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[:len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        name = Path(path).name
        if "b" in mode and (name == target or name.startswith(f".{target}.tmp")):
            seen["n"] += 1
            if seen["n"] >= from_nth:
                return Full(f)
        return f

    return fake


FULL_DISK = [  # (file, the write from which on the disk is full, status the run then shows)
    ("data.json", 1, "failed"),
    ("summary.json", 1, "failed"),
    ("metrics.jsonl", 1, "failed"),
    ("last.pt", 1, "failed"),
    ("best.pt", 1, "failed"),
    ("summary.json", 2, "failed"),  # after epoch 1
    ("metrics.jsonl", 2, "failed"),
    ("last.pt", 2, "failed"),
    ("summary.json", EPOCHS + 2, "failed"),  # the final summary
    ("curves.png", 1, "completed"),  # a plot never fails a finished run
]


@pytest.mark.parametrize("target,nth,status", FULL_DISK, ids=[f"{t}{n}" for t, n, _ in FULL_DISK])
def test_a_full_disk_is_named_for_every_file_a_run_writes(cli, tmp_path, monkeypatch, target, nth, status):
    root = tmp_path / "runs"
    monkeypatch.setattr(runs, "open", enospc_open(target, nth), raising=False)
    result = cli("train", config(tmp_path), "--runs-dir", root, "-q")
    monkeypatch.undo()
    (run,) = runs.list_runs(root)
    if status == "completed":
        assert result.exit_code == 0 and "warning: curves.png not written" in result.stderr
        assert "no space left on device" in result.stderr
    else:
        line = error_line(result)
        assert result.exit_code == 1 and f"{target}: no space left on device (ENOSPC)" in line, line
        assert ("the previous" in line) == (nth > 1 and target != "metrics.jsonl"), line
    assert not list(run.rglob(".*.tmp*"))  # no temporary file left behind
    assert runs.overview(run)["status"] == status
    last = runs.last_checkpoint(run, runs.read_json(run / "summary.json") if (run / "summary.json").exists() else {})
    if last is not None:  # the previous checkpoint stands, and the run goes on from it once there is space
        assert runs.load_either_checkpoint(run, "last")[0]["epoch"] >= 1
        if status == "failed":
            resumed = cli("resume", run.name, "--runs-dir", root, "-q")
            assert resumed.exit_code == 0, resumed.output
            assert runs.overview(run)["status"] == "completed"


def can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.mark.must_run_in_ci
def test_a_real_full_disk_tmpfs(cli, tmp_path, write_config):
    """A 1 MB tmpfs and a model whose checkpoint needs about 1.8 MB: the kernel's ENOSPC, named in one line."""
    mnt = tmp_path / "small"
    if not can_mount_tmpfs(mnt):
        pytest.skip("mounting a tmpfs needs root and a machine that allows it (the ENOSPC tests above patch open)")
    try:
        cfg = tiny_config(model={"type": "mlp", "hidden": [2048]}, train={"epochs": 1})
        result = cli("train", write_config(cfg), "--runs-dir", mnt / "runs", "-q")
        line = error_line(result)
        assert result.exit_code == 1 and "best.pt: no space left on device (ENOSPC)" in line, line
        needed, free = re.search(r"it needs ([\d.]+) MB, ([\d.]+) MB free on (\S+);", line).group(1, 2)
        assert float(needed) > float(free) and f"free on {mnt};" in line
        (run,) = runs.list_runs(mnt / "runs")
        assert runs.overview(run)["status"] == "failed"
        assert not list(run.rglob(".*.tmp*"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_file_size_limit_is_named_in_words(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse a write with EFBIG: any errno comes out as words and its name."""
    script = textwrap.dedent("""
        import resource, signal, sys, torch
        from pathlib import Path
        from dlcli import rundirs as runs
        from dlcli.errors import DlcliError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            runs.save_checkpoint(Path(sys.argv[1]), {"model": {"w": torch.zeros(100_000)}})
        except DlcliError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "last.pt")], capture_output=True, text=True,
                         env=child_env(), timeout=60)
    assert "last.pt: file too large (EFBIG)" in out.stdout, out.stdout + out.stderr
    assert "ulimit -f" in out.stdout and not (tmp_path / "last.pt").exists()
    assert not list(tmp_path.glob(".*.tmp*"))


# ---------------------------------------------------------------- damaged run files

DAMAGES = {"empty": lambda b: b"", "truncated": lambda b: b[: len(b) // 2]}
# file -> (exit code of evaluate, text in its output, exit code of resume --epochs 4, text in its output)
DAMAGED_FILES = {
    "last.pt": (0, "", 0, "using best.pt"),
    "best.pt": (0, "using last.pt", 0, ""),
    "summary.json": (0, "", 0, "written anew"),
    "metrics.jsonl": (0, "", 0, ""),
    "data.json": (1, "data.json", 1, "data.json"),
}


@pytest.mark.parametrize("name", list(DAMAGED_FILES))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_file_is_handled_in_one_line(cli, tmp_path, reference, name, damage):
    root = tmp_path / "damaged"
    root.mkdir()
    run = Path(shutil.copytree(reference, root / reference.name))
    path = run / ("checkpoints" if name.endswith(".pt") else "") / name
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    eval_code, eval_text, resume_code, resume_text = DAMAGED_FILES[name]

    listed = cli("runs", "--json", "--runs-dir", root)
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["id"] == run.name
    assert cli("show", run.name, "--runs-dir", root).exit_code == 0

    result = cli("evaluate", run.name, "--runs-dir", root)
    assert result.exit_code == eval_code, result.output
    if eval_code:
        assert eval_text in error_line(result)
    else:
        assert eval_text in result.stderr and "Traceback" not in result.output

    result = cli("resume", run.name, "--epochs", EPOCHS + 1, "--runs-dir", root, "-q")
    assert result.exit_code == resume_code, result.output
    if resume_code:
        assert resume_text in error_line(result)
    else:
        assert resume_text in result.stderr and "Traceback" not in result.output
        assert runs.overview(run)["status"] == "completed"
