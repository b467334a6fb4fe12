import os
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlcli.cli import app

# Every test computes with as many torch threads as there are cores, whatever else the machine is doing: a
# training decides its thread count from the idle cores (dlcli.engine.auto_threads) unless OMP_NUM_THREADS is set,
# and the exact-resume tests compare separate trainings bit for bit. The tests of that choice itself unset it
# (tests/test_precision.py).
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1))

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)


# Python source that slows every training step of `dlcli train` (run before dlcli's main, in the same process), so
# that a test's signal lands mid-run in a real process.
SLOW_TRAINER = textwrap.dedent("""
    import time
    import dlcli.training
    from dlcli.engine import Callback, Trainer

    class Slow(Callback):
        def on_step(self, trainer, seen, loss, correct):
            time.sleep(0.03)

    class SlowTrainer(Trainer):
        def __init__(self, cfg, data, model, device, callbacks=(), *world):
            super().__init__(cfg, data, model, device, [Slow(), *callbacks], *world)

    dlcli.training.Trainer = SlowTrainer
""")


def tiny_config(**sections) -> dict:
    """A synthetic 8x8 config that trains in well under a second; sections override whole keys."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "dataset": "synthetic",
            "val_split": 0.2,
            "shape": [1, 8, 8], "num_classes": 3, "train_samples": 240, "test_samples": 60,
        },
        "model": {"type": "mlp", "hidden": [16]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 2, "batch_size": 32},
    }
    cfg.update(sections)
    return cfg


@pytest.fixture
def write_config(tmp_path):
    def write(cfg: dict, name: str = "config.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    return write


@pytest.fixture
def cli():
    """Invoke dlcli as a user would type it: cli("train", path, "--runs-dir", d) -> click Result."""
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DLCLI_RUNS_DIR", raising=False)
    monkeypatch.delenv("DLCLI_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(autouse=True)
def _torch_threads():
    """A test that trains with train.threads (or a sweep's share of the cores) in this process leaves torch's thread
    count as it found it: the next test's numbers must not depend on the order the tests ran in."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# Tests that skip on a machine without something they need (a chromium binary, root and tmpfs mounts) must not skip
# in CI: `.ci/run` sets DLCLI_CI=1, and there a skip of a test marked `must_run_in_ci` is a failure.
def in_ci() -> bool:
    return os.environ.get("DLCLI_CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    config.addinivalue_line("markers", "must_run_in_ci: a skip of this test fails the run where DLCLI_CI=1 (CI)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("must_run_in_ci") and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (DLCLI_CI is set), where this test must run: {reason}"
    return report


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    required = sum("must_run_in_ci" in report.keywords for report in skipped)
    note = f" ({required} of them must run in CI: DLCLI_CI=1 fails them)" if required else ""
    terminalreporter.write_line(f"skipped: {len(skipped)}{note}")
