"""What dlcli survives: failed writes, corrupt or hostile checkpoints, non-finite losses, hostile run ids and YAML.

Every failure is one `error: ...` line on stderr and an exit code, never a traceback.
"""

import copy
import errno
import io
import json
import math
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlcli.training
from dlcli import rundirs as runs
from dlcli.config import load_config, read_yaml, validate_config
from dlcli.engine import Trainer
from dlcli.errors import DlcliError
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def train(cli, write_config, cfg, runs_dir, code=0):
    result = cli("train", write_config(cfg), "--runs-dir", runs_dir, "-q")
    assert result.exit_code == code, result.output
    return result


def only_run(runs_dir) -> Path:
    (run,) = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    return run


# ---------------------------------------------------------------- checkpoints written atomically


def failing_save(after_bytes=1000):
    def save(obj, f, *args, **kwargs):
        f.write(b"\0" * after_bytes)  # part of a checkpoint reached the disk, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    runs.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    monkeypatch.setattr(torch, "save", failing_save())
    with pytest.raises(DlcliError) as err:
        runs.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    assert "no space left on device (ENOSPC)" in str(err.value)
    assert "the previous last.pt is intact" in str(err.value)
    monkeypatch.undo()
    assert runs.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_failed_first_write_does_not_claim_a_previous_one(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", failing_save())
    with pytest.raises(DlcliError, match="there was no last.pt before"):
        runs.save_checkpoint(tmp_path / "last.pt", {"model": {}})
    assert not list(tmp_path.iterdir())


def test_disk_full_during_training_fails_the_run_and_keeps_the_last_checkpoint(cli, write_config, tmp_path,
                                                                               monkeypatch):
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:  # epoch 1 writes best.pt and last.pt; epoch 2's first checkpoint meets a full disk
            return real_save(obj, f, *args, **kwargs)
        return failing_save()(obj, f)

    monkeypatch.setattr(torch, "save", save)
    result = train(cli, write_config, tiny_config(train={"epochs": 2}), tmp_path, code=1)
    line = one_error_line(result)
    name = "best.pt" if "best.pt: no space" in line else "last.pt"  # best.pt first, where epoch 2 improved
    assert "could not write" in line and f"{name}: no space left on device" in line
    assert f"the previous {name} is intact" in line
    run = only_run(tmp_path)
    assert runs.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    assert cli("resume", run.name, "--runs-dir", tmp_path, "-q").exit_code == 0  # and it carries on from there


# ---------------------------------------------------------------- checkpoints loaded weights-only


class Payload:
    """Unpickling this would create a file: a weights-only loader must refuse before that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def truncated(tmp_path):
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(1000)}, "epoch": 1}, buf)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("kind, content, says", [
    ("random bytes", lambda tmp: os.urandom(4096), "damaged"),
    ("empty file", lambda tmp: b"", "damaged"),
    ("truncated", truncated, "damaged or truncated"),
    ("plain pickle of a class", lambda tmp: pickle.dumps(Payload(tmp / "pwned")), "not a readable dlcli checkpoint"),
    ("torch.save of a class", "torch-payload", "names Python objects"),
    ("a plain tensor", "tensor", "not a dlcli checkpoint"),
    ("a dict without weights", "dict", "not a dlcli checkpoint"),
])
def test_a_corrupt_or_foreign_checkpoint_is_one_clear_line(tmp_path, kind, content, says):
    path = tmp_path / "last.pt"
    if content == "torch-payload":
        torch.save({"model": Payload(tmp_path / "pwned")}, path)
    elif content == "tensor":
        torch.save(torch.randn(3, 3), path)
    elif content == "dict":
        torch.save({"weights": [1, 2, 3]}, path)
    else:
        path.write_bytes(content(tmp_path))
    with pytest.raises(DlcliError) as err:
        runs.load_checkpoint(path)
    message = str(err.value)
    assert says in message and str(path) in message and "\n" not in message, message
    assert not (tmp_path / "pwned").exists()  # nothing in the file ran


def real_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(4, 4)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "epoch": 1, "rng": {"python": (3, tuple(range(625)), None)}}, buf)
    return buf.getvalue()


REAL = real_checkpoint()


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=3000),
    st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda flips: bytes(b if i not in dict(flips) else dict(flips)[i] for i, b in enumerate(REAL))),
    st.integers(0, len(REAL) - 1).map(lambda n: REAL[:n]),
))
def test_any_damage_to_a_checkpoint_is_a_dlcli_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    path.write_bytes(content)
    try:
        runs.load_checkpoint(path)
    except DlcliError as err:
        assert "\n" not in str(err)


def test_resume_with_a_corrupt_checkpoint_is_one_line(cli, write_config, tmp_path):
    train(cli, write_config, tiny_config(train={"epochs": 1}), tmp_path)
    run = only_run(tmp_path)
    (run / "checkpoints" / "last.pt").write_bytes(os.urandom(2000))
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    result = cli("resume", run.name, "--epochs", "2", "--runs-dir", tmp_path)
    assert result.exit_code == 1 and "last.pt: not a readable dlcli checkpoint" in one_error_line(result)


def test_resume_falls_back_to_best_when_last_is_damaged(cli, write_config, tmp_path):
    train(cli, write_config, tiny_config(train={"epochs": 2}), tmp_path)
    run = only_run(tmp_path)
    best_epoch = runs.load_checkpoint(run / "checkpoints" / "best.pt")["epoch"]
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04" + os.urandom(500))
    result = cli("resume", run.name, "--epochs", "3", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"using best.pt (epoch {best_epoch}) instead" in result.output
    assert runs.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert [m["epoch"] for m in runs.read_metrics(run)] == [1, 2, 3]


def test_a_checkpoint_of_another_model_is_one_line(cli, write_config, tmp_path):
    train(cli, write_config, tiny_config(train={"epochs": 1}), tmp_path)
    run = only_run(tmp_path)
    ckpt = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    ckpt["model"] = {"0.weight": torch.zeros(2, 2)}
    runs.save_checkpoint(run / "checkpoints" / "last.pt", ckpt)
    result = cli("resume", run.name, "--epochs", "2", "--runs-dir", tmp_path)
    assert result.exit_code == 1 and "does not fit this run's model" in one_error_line(result)


# ---------------------------------------------------------------- non-finite losses


def test_a_diverging_run_stops_with_epoch_and_step(cli, write_config, tmp_path):
    cfg = tiny_config(optimizer={"name": "sgd", "lr": 1e30})
    line = one_error_line(train(cli, write_config, cfg, tmp_path, code=1))
    assert "the training loss became" in line and "in epoch 1 at step" in line and "on_nan: skip_batch" in line
    run = only_run(tmp_path)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert not (run / "checkpoints" / "last.pt").exists()  # nothing non-finite was saved


class PoisonLoss(Trainer):
    """Makes the loss of the given global steps (1-based) NaN, as a bad batch would."""

    steps: set = set()

    def loss_fn(self, logits, y):
        loss = super().loss_fn(logits, y)
        return loss * math.nan if self.state.step + 1 in self.steps else loss


def test_nan_in_epoch_two_names_the_step_and_keeps_epoch_one(cli, write_config, tmp_path, monkeypatch):
    monkeypatch.setattr(dlcli.training, "Trainer", type("P", (PoisonLoss,), {"steps": {9}}))
    line = one_error_line(train(cli, write_config, tiny_config(train={"epochs": 3}), tmp_path, code=1))
    assert "became nan in epoch 2 at step 9 (batch 3 of 6)" in line  # 192 samples, batch 32: 6 steps an epoch
    run = only_run(tmp_path)
    last = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(w).all() for w in last["model"].values())
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert len(runs.read_metrics(run)) == 1


def test_skip_batch_skips_the_update_and_counts_it(cli, write_config, tmp_path, monkeypatch):
    monkeypatch.setattr(dlcli.training, "Trainer", type("P", (PoisonLoss,), {"steps": {2, 9, 10}}))
    cfg = tiny_config(train={"epochs": 2, "on_nan": "skip_batch"})
    train(cli, write_config, cfg, tmp_path)
    run = only_run(tmp_path)
    assert [m["skipped_batches"] for m in runs.read_metrics(run)] == [1, 2]
    assert all(math.isfinite(m["train_loss"]) for m in runs.read_metrics(run))
    weights = runs.load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_the_loop_does_not_wait_for_the_device_every_step(cli, write_config, tmp_path, monkeypatch):
    """Reading a tensor's value (.item(), bool()) waits for the device: a few times an epoch, not every step."""
    import dlcli.engine

    monkeypatch.setattr(dlcli.engine, "REFRESH_SECONDS", 1e9)
    reads = []
    for name in ("item", "__bool__", "tolist"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _real=real, **k: reads.append(1) or _real(self, *a, **k))
    cfg = tiny_config(data={**tiny_config()["data"], "val_split": 0.0}, train={"epochs": 2, "batch_size": 8})
    cfg["data"]["train_samples"] = 400  # 50 steps an epoch
    train(cli, write_config, cfg, tmp_path)
    assert len(reads) < 20, len(reads)  # 2 epochs of 50 steps: about 10 reads in all


# ---------------------------------------------------------------- run ids


@pytest.mark.parametrize("run_id", ["..", "../x", "/etc", "/tmp", "a/b", "~", ".hidden", "", "x/../../y", "..\\x"])
def test_run_ids_never_leave_the_runs_directory(tmp_path, run_id):
    (tmp_path / "runs" / "ok-1").mkdir(parents=True)
    (tmp_path / "runs" / "ok-1" / "config.yaml").write_text("{}")
    with pytest.raises(DlcliError):
        runs.resolve_run(tmp_path / "runs", run_id)


def test_a_symlinked_run_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "evil-1"
    outside.mkdir(parents=True)
    (outside / "config.yaml").write_text("{}")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "evil-1").symlink_to(outside, target_is_directory=True)
    for run_id in ("evil-1", "evil", "latest"):
        with pytest.raises(DlcliError):
            runs.resolve_run(tmp_path / "runs", run_id)


def test_resume_with_a_path_is_one_line(cli, tmp_path):
    result = cli("resume", "../../etc", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "is not a run id" in one_error_line(result)


def test_runs_started_in_the_same_second_get_distinct_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20250101-000000")
    made, barrier = [], threading.Barrier(12)

    def start():
        barrier.wait()
        made.append(runs.create_run(tmp_path, "same").name)

    threads = [threading.Thread(target=start) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 12 and all((tmp_path / name / "checkpoints").is_dir() for name in made)


def test_processes_started_together_get_distinct_ids(tmp_path):
    script = ("import sys, dlcli.rundirs as r; from pathlib import Path\n"
              "r.time.strftime = lambda fmt: '20250101-000000'\n"
              "print(' '.join(r.create_run(Path(sys.argv[1]), 'same').name for _ in range(30)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    names = [n for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(names) == 60 and len(set(names)) == 60


# ---------------------------------------------------------------- YAML


def yaml_error(tmp_path, text) -> str:
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DlcliError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_yaml_syntax_errors_give_line_and_column(tmp_path):
    assert "line 3, column 6" in yaml_error(tmp_path, "name: x\ndata: {dataset: mnist\nmodel: {type: mlp}\n")


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: !!python/object/apply:builtins.open ['{marker}', 'w']\n"
    assert "python/object/apply" in yaml_error(tmp_path, text)
    assert "python/object" in yaml_error(tmp_path, "seed: !!python/object:os.system {}\n")
    assert not marker.exists()


def test_oversized_deep_and_exploding_yaml_are_refused(tmp_path):
    assert "too large" in yaml_error(tmp_path, "name: x\n" + "#" * (2 << 20) + "\n")
    assert "nested too deeply" in yaml_error(tmp_path, "seed: " + "[" * 100_000 + "]" * 100_000 + "\n")
    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
    started = time.perf_counter()
    assert "expands to over" in yaml_error(tmp_path, "data: {dataset: mnist}\nmodel: {type: mlp}\n" + laughs)
    assert time.perf_counter() - started < 5
    assert "not a UTF-8" in yaml_error(tmp_path, b"\xff\xfe\x00name")


def test_bad_yaml_on_the_command_line_is_one_line(cli, tmp_path):
    (tmp_path / "c.yaml").write_text("name: !!python/object/apply:os.system ['true']\n")
    result = cli("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "invalid YAML at line 1" in one_error_line(result)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- property-based: the loader never crashes

BASES = [
    tiny_config(),
    tiny_config(model={"type": "cnn", "channels": [4, 8], "batchnorm": True}, scheduler={"name": "cosine"},
                train={"epochs": 1, "early_stopping": {"patience": 2}, "on_nan": "skip_batch"}),
    tiny_config(model={"type": "sequential", "layers": ["flatten", {"dense": {"units": 8, "activation": "relu"}},
                                                        {"dropout": 0.1}, {"dense": 3}]},
                optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}, scheduler={"name": "onecycle"}),
    tiny_config(model={"type": "lstm", "hidden_size": 8}, scheduler={"name": "plateau", "monitor": "val_accuracy"}),
    *[yaml.safe_load(p.read_text()) for p in sorted((ROOT / "configs").glob("*.yaml"))],
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["adam", "cosine", "relu", "mlp", "cnn", "dense", "auto", "32", "1e-3",
                                           "synthetic", "val_loss", "max", "same", "conv2d", "-1", ""]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from paths(child, (*prefix, i))


@st.composite
def mutated_configs(draw):
    cfg = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(paths(cfg))))
        if not path:
            continue
        parent = cfg
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "replace", "insert", "stringify"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "stringify":
            parent[path[-1]] = str(parent[path[-1]])
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(max_size=10))] = draw(values)
        elif isinstance(parent[path[-1]], list):
            parent[path[-1]].insert(draw(st.integers(0, 3)), draw(values))
    return cfg


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


@PROPERTY
@given(mutated_configs())
def test_mutated_configs_validate_or_raise_dlcli_error(cfg):
    try:
        config = validate_config(cfg, source="c.yaml")
    except DlcliError as err:
        assert str(err).startswith("c.yaml: ")
        return
    again = validate_config(config.resolved())  # what a run directory records validates again, unchanged
    assert again.resolved() == config.resolved()
    params = [torch.nn.Parameter(torch.zeros(2))]
    try:  # the optimizer and scheduler a valid config names can be built
        optimizer = config.optimizer.build(params, "cpu")
        epochs = config.train.epochs if config.train.epochs != "auto" else 10  # auto is resolved by `train`
        config.scheduler.build(optimizer, epochs, 3)
    except DlcliError:
        pass


def check_validate(cli, path, *args):
    """`dlcli validate`: exit 0 and no stderr, or exit 2 and one `error:` line; never 1 (an unexpected exception)."""
    result = cli("validate", path, *args)
    assert result.exit_code in (0, 2), result.stderr
    if result.exit_code:
        one_error_line(result)
    else:
        assert not result.stderr


@PROPERTY
@given(mutated_configs())
def test_mutated_config_files_give_one_line_at_the_command_line(cli, tmp_path, cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    check_validate(cli, path)


@PROPERTY
@given(st.sampled_from(BASES), st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=3))
def test_random_overrides_give_one_line_at_the_command_line(cli, tmp_path, base, overrides):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    check_validate(cli, path, *[a for key, value in overrides for a in ("--set", f"{key}={value}")])


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_files_read_as_a_mapping_or_dlcli_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("y") / "c.yaml"
    path.write_bytes(content)
    try:
        assert isinstance(read_yaml(path), dict)
    except DlcliError:
        pass
