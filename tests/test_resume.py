"""`dlcli resume` and graceful interruption: a resumed run ends exactly where an uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

import dlcli.training
from dlcli import rundirs as runs
from dlcli.engine import Callback, Trainer
from tests.conftest import SLOW_TRAINER, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def rich_config(**train) -> dict:
    """Every piece of state a resume must carry: dropout and augmentation (torch RNG), a per-step schedule,
    early stopping and the best-checkpoint tracker."""
    cfg = tiny_config(
        model={"type": "cnn", "channels": [4], "hidden": [16], "dropout": 0.3},
        scheduler={"name": "exponential", "gamma": 0.9},
    )
    cfg["data"]["augment"] = [{"random_crop": 1}, "hflip"]
    cfg["train"] = {"epochs": 2, "batch_size": 32, "early_stopping": {"patience": 5}, **train}
    return cfg


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in runs.read_metrics(run)]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def assert_same_training(a: Path, b: Path):
    ma, mb = metrics(a), metrics(b)
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb]
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=1e-6), (key, x, y)
    wa = runs.load_checkpoint(a / "checkpoints" / "last.pt")["model"]
    wb = runs.load_checkpoint(b / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert summary(a)["test"] == pytest.approx(summary(b)["test"], abs=1e-6)
    assert summary(a)["best_epoch"] == summary(b)["best_epoch"]
    assert summary(a)["stopped_early"] == summary(b)["stopped_early"]


def train(cli, write_config, cfg, runs_dir, *extra) -> Path:
    result = cli("train", write_config(cfg, f"{cfg['name']}-{time.monotonic_ns()}.yaml"), "--runs-dir", runs_dir,
                 "-q", *extra)
    assert result.exit_code == 0, result.output
    return Path(runs_dir) / result.stdout.strip().splitlines()[-1]


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def inject(monkeypatch):
    """Train with extra callbacks placed first, as `dlcli train` would run with them."""

    def use(*callbacks):
        class WithCallbacks(Trainer):
            def __init__(self, cfg, data, model, device, cbs=(), *world):
                super().__init__(cfg, data, model, device, [*callbacks, *cbs], *world)

        monkeypatch.setattr(dlcli.training, "Trainer", WithCallbacks)

    return use


class SignalAt(Callback):
    """Sends real signals to this process after the given global step, as Ctrl-C or `kill` would; once."""

    def __init__(self, step: int, signum=signal.SIGINT, times: int = 1):
        self.at, self.signum, self.times = step, signum, times

    def on_step(self, trainer, seen, loss, correct):
        if trainer.state.step == self.at:
            self.at = None
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


# Strict early stopping (nothing improves by 100, patience 2) ends a run after epoch 3, but only if the epoch-end
# checkpoint holds the count after epoch 2's update.
@pytest.mark.parametrize("before, total, strict", [(1, 2, False), (2, 5, True)])
def test_n_epochs_then_resume_equals_a_straight_run(cli, write_config, tmp_path, before, total, strict):
    es = {"early_stopping": {"patience": 2, "min_delta": 100}} if strict else {}
    straight = train(cli, write_config, rich_config(epochs=total, **es), tmp_path / "a")
    first = train(cli, write_config, rich_config(epochs=before, **es), tmp_path / "b")
    result = cli("resume", first.name, "--epochs", total, "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == first.name
    assert_same_training(straight, first)
    done = 3 if strict else total
    assert len(runs.read_metrics(first)) == done  # appended to the same metrics.jsonl
    assert summary(first)["status"] == "completed" and summary(first)["run_id"] == first.name
    assert summary(first)["epochs_completed"] == done and len(summary(first)["resumed"]) == 1
    assert yaml.safe_load((first / "config.yaml").read_text())["train"]["epochs"] == total


# 192 training samples, batch 32: 6 steps an epoch. Step 8 is inside epoch 2, step 6 ends epoch 1, step 20 is in
# epoch 4, after the best epoch (3): a resume that forgot the best so far would overwrite best.pt with epoch 4.
# With `strict` early stopping (nothing improves by 100) the run stops after epoch 3: only if its count survives.
@pytest.mark.parametrize("signum, code, step, strict", [
    (signal.SIGINT, 130, 8, False), (signal.SIGTERM, 143, 8, False), (signal.SIGINT, 130, 6, False),
    (signal.SIGINT, 130, 2, False), (signal.SIGINT, 130, 20, False), (signal.SIGINT, 130, 8, True),
])
def test_signal_saves_mid_epoch_and_resume_finishes_identically(cli, write_config, tmp_path, inject, signum, code,
                                                                 step, strict):
    cfg = rich_config(epochs=5)
    cfg["scheduler"] = {"name": "cosine", "warmup_epochs": 0.5}  # steps every batch: its position must survive
    if strict:
        cfg["train"]["early_stopping"] = {"patience": 2, "min_delta": 100}
    straight = train(cli, write_config, cfg, tmp_path / "a")
    assert summary(straight)["epochs_completed"] == (3 if strict else 5)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    inject(SignalAt(step, signum))
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "b", "-q")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored after fit
    assert result.exit_code == code, result.output
    line = one_error_line(result)
    assert f"interrupted by {signal.Signals(signum).name}" in line and f"at step {step}" in line
    run = next((tmp_path / "b").iterdir())
    assert f"dlcli resume {run.name}" in line
    assert summary(run)["status"] == "interrupted" and summary(run)["step"] == step
    last = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == step
    assert last["progress"]["batch"] == step % 6  # the position inside the epoch (after step 6: epoch 2's start)
    result = cli("resume", run.name, "--runs-dir", tmp_path / "b")  # with the progress display, starting part-way
    assert result.exit_code == 0, result.output
    assert f"resuming at epoch {step // 6 + 1}, batch {step % 6 + 1} (step {step})" in result.stderr
    assert_same_training(straight, run)


def test_second_signal_stops_at_once_and_resume_uses_the_last_checkpoint(cli, write_config, tmp_path, inject):
    cfg = rich_config(epochs=2)
    straight = train(cli, write_config, cfg, tmp_path / "a")
    inject(SignalAt(8, signal.SIGINT, times=2))
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 130
    assert "second signal" in one_error_line(result)
    run = next((tmp_path / "b").iterdir())
    assert runs.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6  # epoch 1's checkpoint
    assert cli("resume", run.name, "--runs-dir", tmp_path / "b", "-q").exit_code == 0
    assert_same_training(straight, run)


class SwallowedSignals(Callback):
    """Two Ctrl-Cs that land inside code which, like a logger's, takes any Exception for its own failure."""

    def on_step(self, trainer, seen, loss, correct):
        if trainer.state.step == 8:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            except Exception:
                pass


def test_a_second_signal_stops_even_inside_code_that_catches_exceptions(cli, write_config, tmp_path, inject):
    inject(SwallowedSignals())
    result = cli("train", write_config(rich_config(epochs=2)), "--runs-dir", tmp_path, "-q")
    assert result.exit_code == 130
    assert "stopped at once by a second signal" in one_error_line(result)
    run = next(tmp_path.iterdir())
    assert runs.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6  # nothing saved after the signals
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back


def test_resume_stretches_schedules_tied_to_the_total(cli, write_config, tmp_path):
    # OneCycleLR refuses to step past its planned total: resuming with more epochs must re-plan it.
    cfg = tiny_config(scheduler={"name": "onecycle"}, train={"epochs": 1, "batch_size": 32})
    run = train(cli, write_config, cfg, tmp_path)
    result = cli("resume", run.name, "--epochs", "3", "--runs-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1, 2, 3]


def test_sigterm_to_a_training_process_then_resume(tmp_path, write_config):
    """A real `dlcli train` process, slowed by a sleeping callback so that the signal lands mid-run."""
    cfg = rich_config(epochs=3, threads=1)
    config = write_config(cfg)
    script = SLOW_TRAINER + textwrap.dedent("""
        import runpy, sys
        sys.argv = ["dlcli", *sys.argv[1:]]
        runpy.run_module("dlcli", run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def dlcli(*args, **kw):
        return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    reference = dlcli("train", config, "--runs-dir", tmp_path / "a", "-q")
    proc = dlcli("train", config, "--runs-dir", tmp_path / "b", "-q")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "b").glob("*/checkpoints/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGTERM"), err
    run = next((tmp_path / "b").iterdir())
    assert summary(run)["status"] == "interrupted"
    assert len(runs.read_metrics(run)) < 3
    resumed = dlcli("resume", run.name, "--runs-dir", tmp_path / "b", "-q")
    assert resumed.wait(timeout=120) == 0, resumed.communicate()
    assert reference.wait(timeout=120) == 0, reference.communicate()
    assert_same_training(next((tmp_path / "a").iterdir()), run)


def test_resume_after_a_crash_drops_metrics_the_checkpoint_lacks(cli, write_config, tmp_path):
    straight = train(cli, write_config, rich_config(epochs=2), tmp_path / "a")
    run = train(cli, write_config, rich_config(epochs=1), tmp_path / "b")
    # What a kill -9 can leave: a metrics line written before its checkpoint, a torn line, a temporary file,
    # and a summary still saying `running` for a process that is gone.
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 123.0}) + "\n" + '{"epoch": 3, "trai')
    (run / "checkpoints" / ".last.pt.tmp99999").write_bytes(b"half a checkpoint")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.write_json(run / "summary.json", {**summary(run), "status": "running", "pid": dead.pid})
    result = cli("resume", run.name, "--epochs", "2", "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    assert_same_training(straight, run)
    assert not list(run.glob("checkpoints/.*tmp*"))


def test_resume_refuses_a_run_another_process_is_training(cli, write_config, tmp_path):
    run = train(cli, write_config, tiny_config(train={"epochs": 1}), tmp_path)
    holder = ("import sys, time; from pathlib import Path; from dlcli.rundirs import RunLock; "
              "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    alive = subprocess.Popen([sys.executable, "-c", holder, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout.readline().strip() == "locked"
        runs.write_json(run / "summary.json", {**summary(run), "status": "running", "pid": alive.pid})
        before = (run / "summary.json").read_bytes()
        result = cli("resume", run.name, "--runs-dir", tmp_path)
        assert result.exit_code == 1 and f"process {alive.pid}" in one_error_line(result)
        assert (run / "summary.json").read_bytes() == before
        assert runs.overview(run)["status"] == "running"
    finally:
        alive.kill()
        alive.wait()


def test_resume_refusals_are_one_line(cli, write_config, tmp_path):
    run = train(cli, write_config, tiny_config(train={"epochs": 2}), tmp_path)
    for args, code, text in [
        ((run.name,), 2, "has completed (2 epochs): pass --epochs"),
        ((run.name, "--epochs", "2"), 2, "has trained 2 epochs already"),
        ((run.name, "--epochs", "0"), 2, "needs a positive number"),
        (("nope",), 2, "no run 'nope'"),
        (("../" + run.name,), 2, "is not a run id"),
    ]:
        result = cli("resume", *args, "--runs-dir", tmp_path)
        assert result.exit_code == code, (args, result.output)
        assert text in one_error_line(result)
    (run / "checkpoints" / "best.pt").unlink()
    (run / "checkpoints" / "last.pt").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("resume", run.name, "--epochs", "3", "--runs-dir", tmp_path)
    assert result.exit_code == 1 and "before its first checkpoint: there is nothing to resume" in \
        one_error_line(result)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # refused: nothing touched
    torch.save({"model": {}}, run / "checkpoints" / "last.pt")  # weights only, as an older tool might write
    result = cli("resume", run.name, "--epochs", "3", "--runs-dir", tmp_path)
    assert result.exit_code == 1 and "not the state a resume needs" in one_error_line(result)
