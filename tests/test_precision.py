"""train.precision auto on a CPU: bf16 autocast where the CPU has native bf16 and the network has the layers it speeds
up, float32 elsewhere; the detection is patched, so these run on any CPU."""

import io
import os
import platform

import pytest
import torch
import yaml
from torch import nn

from dlcli import engine
from tests.conftest import tiny_config
from tests.test_resume import assert_same_training, rich_config, summary, train

CPU = torch.device("cpu")
CNN = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))
LSTM = nn.LSTM(8, 8)
MLP = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("caps, model, expected", [
    ({"avx512_bf16": True}, CNN, "bf16"),
    ({"amx_bf16": True, "avx512_bf16": False}, LSTM, "bf16"),
    ({"avx512_bf16": True, "amx_bf16": True}, MLP, "32"),  # small dense layers lose under bf16
    ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, CNN, "32"),  # AVX-512 alone emulates bf16: slower
    ({"neon": True}, CNN, "32"),
    ({}, CNN, "32"),  # torch could not say
])
def test_auto_precision_on_a_cpu_follows_its_bf16_support_and_the_model(monkeypatch, caps, model, expected):
    monkeypatch.setattr(engine, "cpu_capabilities", lambda: caps)
    assert engine.resolve_precision("auto", CPU, model) == expected


def test_auto_scores_in_float32_on_a_cpu_so_evaluate_and_exports_agree(monkeypatch):
    monkeypatch.setattr(engine, "cpu_capabilities", lambda: {"avx512_bf16": True})
    assert engine.resolve_precision("auto", CPU, CNN, scoring=True) == "32"
    assert engine.resolve_precision("bf16", CPU, CNN, scoring=True) == "bf16"  # asked for: kept


def test_explicit_precisions_are_kept_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(engine, "cpu_capabilities", lambda: {"avx512_bf16": True})
    assert engine.resolve_precision("32", CPU, CNN) == "32"
    monkeypatch.setattr(engine, "cpu_capabilities", lambda: {})
    assert engine.resolve_precision("bf16", CPU, MLP) == "bf16"


def test_the_cpu_capabilities_come_from_torch():
    caps = engine.cpu_capabilities()
    assert isinstance(caps, dict)
    if platform.machine() in ("x86_64", "AMD64"):  # torch reports the x86 feature flags it dispatches on
        assert "avx2" in caps and "avx512_bf16" in caps and "amx_bf16" in caps


@pytest.mark.parametrize("native", [True, False])
def test_auto_records_the_precision_it_chose_and_a_bf16_run_resumes_exactly(cli, write_config, tmp_path,
                                                                            monkeypatch, native):
    monkeypatch.setattr(engine, "cpu_capabilities", lambda: {"avx512_bf16": native})
    straight = train(cli, write_config, rich_config(epochs=2, precision="auto"), tmp_path / "a")
    assert summary(straight)["precision"] == ("bf16" if native else "32")
    first = train(cli, write_config, rich_config(epochs=1, precision="auto"), tmp_path / "b")
    result = cli("resume", first.name, "--epochs", 2, "--runs-dir", tmp_path / "b", "-q")
    assert result.exit_code == 0, result.output
    assert_same_training(straight, first)


# ---------------------------------------------------------------- threads on a shared CPU


def fake_proc_stat(monkeypatch, samples):
    """/proc/stat as two successive reads: {cpu: (busy ticks, idle ticks)} each."""
    reads = iter(samples)

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/stat"
        sample = next(reads)
        lines = ["cpu  0 0 0 0 0 0 0 0"] + [f"{cpu} {busy} 0 0 {idle} 0 0 0 0" for cpu, (busy, idle) in sample.items()]
        return io.StringIO("\n".join(lines) + "\n")

    monkeypatch.setattr(engine, "open", fake_open, raising=False)
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(engine.time, "sleep", lambda s: None)


def test_idle_cores_counts_the_cpus_other_processes_leave(monkeypatch):
    fake_proc_stat(monkeypatch, [{"cpu0": (100, 100), "cpu1": (100, 100), "cpu2": (0, 0)},
                                 {"cpu0": (200, 100), "cpu1": (110, 190), "cpu2": (0, 999)}])
    assert engine.idle_cores() == pytest.approx(0.9)  # cpu0 busy, cpu1 90% idle; cpu2 is not ours


@pytest.mark.parametrize("busy, expected", [((0, 0), None), ((100, 0), 1), ((100, 100), 1)])
def test_auto_threads_leaves_the_busy_cores_to_their_processes(monkeypatch, busy, expected):
    fake_proc_stat(monkeypatch, [{"cpu0": (0, 0), "cpu1": (0, 0)},
                                 {"cpu0": (busy[0], 100 - busy[0]), "cpu1": (busy[1], 100 - busy[1])}])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    chosen = []
    monkeypatch.setattr(engine.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(engine.torch, "set_num_threads", chosen.append)
    said = engine.auto_threads()
    assert chosen == ([] if expected is None else [expected])
    assert (said is None) == (expected is None)
    if said:
        assert said.startswith("train.threads: 1 of 2")


def test_auto_threads_keeps_an_explicit_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(engine, "idle_cores", lambda: pytest.fail("sampled the CPU despite OMP_NUM_THREADS"))
    assert engine.auto_threads() is None


@pytest.mark.parametrize("idle, chosen", [(1.0, 1), (2.0, None)])
def test_train_without_omp_num_threads_takes_the_idle_cores_and_resume_keeps_them(cli, write_config, tmp_path,
                                                                                   monkeypatch, idle, chosen):
    """End to end, with OMP_NUM_THREADS unset as a user's shell has it (conftest sets it for every other test): a
    training on a 2-core CPU with one core busy computes with 1 thread and records it; a resume on a machine that
    has since got busier or idler keeps the thread count the run trained with, without sampling the CPU."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)  # torch's default on a 2-core machine (the threads fixture restores the count)
    monkeypatch.setattr(engine, "idle_cores", lambda seconds=0.1: idle)
    cfg = tiny_config(train={"epochs": 1, "batch_size": 32})
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / result.stdout.strip().splitlines()[-1]
    assert ("train.threads: 1 of 2 (1.0 cores are busy with other processes)" in result.stderr) == (chosen == 1)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["threads"] == chosen
    assert summary(run)["threads"] == (chosen or 2)

    torch.set_num_threads(2)  # a new process starts with torch's default again
    monkeypatch.setattr(engine, "idle_cores", lambda seconds=0.1: pytest.fail("a resume sampled the idle cores"))
    resumed = cli("resume", run.name, "--epochs", 2, "--runs-dir", tmp_path / "runs", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert summary(run)["threads"] == (chosen or 2) and summary(run)["epochs_completed"] == 2


def test_idle_cores_reads_this_machine():
    idle = engine.idle_cores(0.05)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= idle <= len(os.sched_getaffinity(0)) + 1e-6
