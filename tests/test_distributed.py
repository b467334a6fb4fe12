"""DDP over gloo on this CPU: 2 worker processes train like one process with twice the batch, and stop and resume
together. Each test starts real processes through `dlcli train --devices 2` or torchrun, as a user would."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlcli import rundirs as runs
from dlcli.config import read_yaml
from tests.conftest import SLOW_TRAINER, tiny_config
from tests.test_image_folder import folder_config, make_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def ddp_config(**train) -> dict:
    # 250 samples, 200 after validation: with 2 x 16 per step the last global batch holds 8, 4 per rank.
    cfg = tiny_config(model={"type": "cnn", "channels": [4], "hidden": [16]},
                      scheduler={"name": "cosine", "warmup_epochs": 0.5})
    cfg["data"]["train_samples"] = 250
    # float32: the sums of 2 x 16 and of 32 samples agree to 1e-5 only without bf16's rounding (auto picks bf16
    # for a CNN on CPUs with native bf16)
    cfg["train"] = {"epochs": 2, "batch_size": 16, "grad_clip": 1.0, "label_smoothing": 0.1, "precision": "32",
                    **train}
    return cfg


def dlcli(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlcli", *map(str, args)], env=env or ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def finished(proc: subprocess.Popen, code: int = 0) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err[-3000:]
    return out


def run_of(runs_dir: Path) -> Path:
    (run,) = list(runs_dir.iterdir())
    return run


def weights(run: Path) -> dict:
    return runs.load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in runs.read_metrics(run)]


def assert_same(a: Path, b: Path, atol: float):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol), (k, (wa[k] - wb[k]).abs().max())
    for x, y in zip(metrics(a), metrics(b), strict=True):
        assert x == pytest.approx(y, abs=atol), (x, y)


def test_two_processes_with_batch_b_train_like_one_with_batch_2b(tmp_path, write_config):
    config = write_config(ddp_config())
    single = dlcli("train", config, "--set", "train.batch_size=32", "--runs-dir", tmp_path / "one", "-q")
    finished(single)
    ddp = dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "two")
    out = finished(ddp)
    run = run_of(tmp_path / "two")
    assert out.strip() == run.name  # only rank 0 prints the id
    assert_same(run_of(tmp_path / "one"), run, atol=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 32
    assert read_yaml(run / "config.yaml")["train"]["devices"] == 2
    assert list((tmp_path / "two").glob("*/checkpoints/*.pt"))  # and nothing beside the one run
    # torchrun's own launcher runs the same workers and gives the same run.
    torchrun = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", "-m", "dlcli", "train", config, "--runs-dir", tmp_path / "torchrun", "-q"],
                                env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finished(torchrun)
    assert_same(run, run_of(tmp_path / "torchrun"), atol=1e-6)
    # Rank 0 alone opens the run to resume; its refusal stops both workers, and is said once.
    refused = dlcli("resume", run.name, "--runs-dir", tmp_path / "two")
    assert one_line(refused, 2).startswith(f"error: run {run.name} has completed (2 epochs)")


def one_line(proc: subprocess.Popen, code: int) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_failure_every_rank_meets_is_said_once_and_leaves_no_run(tmp_path, write_config):
    cfg = ddp_config()
    cfg["model"] = {"type": "mlp", "hidden": [16]}
    cfg["data"]["shape"] = [12]  # a table: image augmentations cannot apply
    cfg["data"]["augment"] = ["hflip"]
    proc = dlcli("train", write_config(cfg), "--devices", "2", "--runs-dir", tmp_path / "runs")
    assert one_line(proc, 2) == "error: data.augment: augmentations need image data; synthetic gives shape (12,)"
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_interrupting_a_two_process_run_then_resuming_it(tmp_path, write_config):
    # Dropout and augmentation: each rank's generators must be saved and restored, not only rank 0's.
    cfg = ddp_config(epochs=8)  # the signal lands in epoch 2 or 3: the run has time left to stop
    cfg["model"]["dropout"] = 0.3
    cfg["data"]["augment"] = ["hflip"]
    config = write_config(cfg)
    finished(dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "a", "-q"))

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_TRAINER)  # every Python process of the run imports it
    slow_env = {**ENV, "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"}
    proc = dlcli("train", config, "--devices", "2", "--runs-dir", tmp_path / "b", "-q", env=slow_env)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "b").glob("*/checkpoints/last.pt")):  # epoch 1 is done: stop in epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the launcher, which hands it to the workers
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGINT"), err  # one line, from rank 0
    run = run_of(tmp_path / "b")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] < 8
    ckpt = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2

    wrong = dlcli("resume", run.name, "--devices", "1", "--runs-dir", tmp_path / "b")
    assert "resume it with --devices 2" in one_line(wrong, 2)

    finished(dlcli("resume", run.name, "--runs-dir", tmp_path / "b", "-q"))  # the run's 2 devices, by itself
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same(run_of(tmp_path / "a"), run, atol=1e-6)


def test_devices_under_torchrun_must_agree(tmp_path, write_config):
    env = {**ENV, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}  # what torchrun sets for one process
    proc = dlcli("train", write_config(ddp_config()), "--devices", "2", "--runs-dir", tmp_path, env=env)
    assert "torchrun started 1 processes" in one_line(proc, 2)
    assert not tmp_path.joinpath("tiny").exists() and not list(tmp_path.glob("tiny-*"))


def test_a_streamed_image_folder_shards_like_the_in_memory_path(tmp_path, write_config):
    # Each rank's DataLoader workers decode only that rank's share of every global batch, in the seeded order.
    make_folder(tmp_path / "shapes", per_class=11)  # 33 images, 27 after validation: a ragged last global batch
    cfg = folder_config(tmp_path / "shapes", stream=False)
    cfg["train"] = {"epochs": 2, "batch_size": 16, "precision": "32"}  # see ddp_config
    finished(dlcli("train", write_config(cfg, "memory.yaml"), "--runs-dir", tmp_path / "one", "-q"))
    cfg["data"].update(stream=True, num_workers=1)
    cfg["train"]["batch_size"] = 8
    finished(dlcli("train", write_config(cfg, "stream.yaml"), "--devices", "2", "--runs-dir", tmp_path / "two", "-q"))
    assert_same(run_of(tmp_path / "one"), run_of(tmp_path / "two"), atol=1e-5)
