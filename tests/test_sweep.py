"""`dlcli sweep`: Optuna trials as ordinary runs, pruned from their per-epoch metric, continued after an
interruption (the interrupted trial's run resumed), shared between processes through one storage URL."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dlcli import rundirs as runs
from tests.conftest import FASHION, needs_fashion, tiny_config

optuna = pytest.importorskip("optuna", reason="pip install -e '.[dev]' installs optuna")

ROOT = Path(__file__).resolve().parents[1]


def sweep_config(**sweep) -> dict:
    """3 epochs of 6 steps; learning rates from hopeless (1e-5) to fast (0.1); pruning decided from epoch 2 on."""
    cfg = tiny_config(train={"epochs": 3, "batch_size": 32})
    cfg["sweep"] = {"trials": 6, "pruner": {"startup_trials": 2, "min_epochs": 2},
                    "space": {"optimizer.lr": {"loguniform": [1.0e-5, 0.1]},
                              "model.hidden": {"choice": [[8], [32, 16]]}},
                    **sweep}
    return cfg


def load(storage: str, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=storage)


def default_storage(runs_dir: Path, name: str = "tiny") -> str:
    return f"sqlite:///{(runs_dir / 'sweeps' / name / 'study.db').resolve()}"


def dlcli_process(preamble: str, *args, **env) -> subprocess.Popen:
    """`dlcli ARGS` in its own Python process, after running `preamble` there."""
    script = preamble + textwrap.dedent("""
        import runpy, sys
        sys.argv = ["dlcli", *sys.argv[1:]]
        runpy.run_module("dlcli", run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# In the process it starts in: Ctrl-C (a real SIGINT) at step 9 of the second run it trains, in its epoch 2.
SIGINT_IN_SECOND_RUN = textwrap.dedent("""
    import os, signal
    import dlcli.training
    from dlcli.engine import Callback, Trainer

    fits = []

    class CtrlC(Callback):
        def on_fit_start(self, trainer):
            fits.append(1)

        def on_step(self, trainer, seen, loss, correct):
            if len(fits) == 2 and trainer.state.step == 9:
                os.kill(os.getpid(), signal.SIGINT)

    class WithCtrlC(Trainer):
        def __init__(self, cfg, data, model, device, callbacks=(), *world):
            super().__init__(cfg, data, model, device, [CtrlC(), *callbacks], *world)

    dlcli.training.Trainer = WithCtrlC
""")

# Each process, at its first training, waits until the other has reached its own: both then train trials at once.
TOGETHER = textwrap.dedent("""
    import os, time
    from pathlib import Path
    import dlcli.training
    from dlcli.engine import Callback, Trainer

    BARRIER = Path(os.environ["BARRIER"])

    class Together(Callback):
        def on_fit_start(self, trainer):
            (BARRIER / str(os.getpid())).touch()
            deadline = time.monotonic() + 60
            while len(list(BARRIER.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)

        def on_step(self, trainer, seen, loss, correct):
            time.sleep(0.02)

    class TogetherTrainer(Trainer):
        def __init__(self, cfg, data, model, device, callbacks=(), *world):
            super().__init__(cfg, data, model, device, [Together(), *callbacks], *world)

    dlcli.training.Trainer = TogetherTrainer
""")


def test_sweep_prunes_survives_an_interruption_continues_to_its_total_and_writes_a_best_config(
        cli, write_config, tmp_path):
    config, root = write_config(sweep_config()), tmp_path / "runs"
    storage = default_storage(root)

    first = cli("sweep", config, "--trials", "3", "--runs-dir", root)  # a trial limit: 3 of the 6
    assert first.exit_code == 0, first.output
    assert len(load(storage).trials) == 3

    stopped = dlcli_process(SIGINT_IN_SECOND_RUN, "sweep", config, "--runs-dir", root)
    out, err = stopped.communicate(timeout=240)
    assert stopped.returncode == 130, err
    assert "trial 4 " in err and "interrupted; run the same command again to resume it" in err
    assert err.strip().splitlines()[-1].startswith("error: sweep tiny interrupted with 4 of 6 trials")
    cut = load(storage).trials[4]
    assert cut.state == optuna.trial.TrialState.FAIL and cut.user_attrs["ended"] == "interrupted"
    cut_run = root / cut.user_attrs["run_id"]
    assert json.loads((cut_run / "summary.json").read_text())["status"] == "interrupted"

    last = cli("sweep", config, "--runs-dir", root)
    assert last.exit_code == 0, last.output
    study = load(storage)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))  # no number twice
    ended = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(ended) == 6 and len(study.trials) == 7  # 6 that count, and the interrupted one
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 4)
    assert retry.params == cut.params and retry.user_attrs["run_id"] == cut_run.name  # its run, resumed
    resumed = json.loads((cut_run / "summary.json").read_text())
    assert resumed["status"] in ("completed", "pruned") and resumed.get("resumed")
    assert json.loads((cut_run / "tags.json").read_text())["retry_of"] == 4

    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    for t in pruned:
        run = root / t.user_attrs["run_id"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "pruned" and summary["pruned_at_epoch"] == len(runs.read_metrics(run)) < 3
    for t in ended:  # every trial is an ordinary run, tagged with its sweep
        run = root / t.user_attrs["run_id"]
        assert json.loads((run / "tags.json").read_text())["sweep"] == "tiny"
        assert yaml.safe_load((run / "config.yaml").read_text())["optimizer"]["lr"] == pytest.approx(
            t.params["optimizer.lr"])

    table = last.stderr
    assert "sweep tiny: val_accuracy (maximize)" in table and "pruned" in table
    best_path = root / "sweeps" / "tiny" / "best.yaml"
    assert last.stdout.strip().splitlines()[-1] == str(best_path)
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    written = yaml.safe_load(best_path.read_text())
    assert "sweep" not in written and written["optimizer"]["lr"] == best.params["optimizer.lr"]
    assert written["model"]["hidden"] == json.loads(best.params["model.hidden"])
    summary = json.loads((root / "sweeps" / "tiny" / "summary.json").read_text())
    assert summary["best"]["trial"] == best.number and summary["counted"] == 6

    trained = cli("train", best_path, "--runs-dir", tmp_path / "again", "-q")  # ready for dlcli train
    assert trained.exit_code == 0, trained.output


def test_two_processes_sharing_one_storage_fill_one_study(write_config, tmp_path):
    cfg = sweep_config(pruner=None, sampler="random")
    cfg["train"]["epochs"] = 2
    config = write_config(cfg)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ("sweep", config, "--storage", storage, "--name", "shared", "--trials", "6", "--runs-dir", tmp_path / "r")
    (tmp_path / "barrier").mkdir()
    procs = [dlcli_process(TOGETHER, *args, BARRIER=str(tmp_path / "barrier")) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    study = load(storage, "shared")
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both processes trained trials
    run_ids = [t.user_attrs["run_id"] for t in study.trials]
    assert len(set(run_ids)) == 6 and all((tmp_path / "r" / r / "summary.json").is_file() for r in run_ids)
    assert not (tmp_path / "r" / "sweeps" / "shared" / "study.db").exists()  # the study is where --storage says


# Imported by every job process of a sweep (sitecustomize on PYTHONPATH): each holds its first trial until both jobs
# hold one, so that one job cannot take every trial while the other is still importing torch on a loaded machine.
BOTH_JOBS_AT_ONCE = textwrap.dedent("""
    import os, time
    from pathlib import Path
    import dlcli.sweep

    real, first = dlcli.sweep.run_trial, [True]

    def run_trial(*args, **kwargs):
        if first:  # this process's first trial
            first.clear()
            barrier = Path(os.environ["BARRIER"])
            (barrier / str(os.getpid())).touch()
            deadline = time.monotonic() + 60
            while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        return real(*args, **kwargs)

    dlcli.sweep.run_trial = run_trial
""")


def test_jobs_run_trials_in_parallel_processes(cli, write_config, tmp_path, monkeypatch):
    cfg = sweep_config(pruner=None, trials=4)
    cfg["train"]["epochs"] = 1
    config = write_config(cfg)
    hooks, barrier = tmp_path / "hooks", tmp_path / "barrier"
    hooks.mkdir(), barrier.mkdir()
    (hooks / "sitecustomize.py").write_text(BOTH_JOBS_AT_ONCE)
    monkeypatch.setenv("PYTHONPATH", f"{hooks}{os.pathsep}{ROOT}")
    monkeypatch.setenv("BARRIER", str(barrier))
    result = cli("sweep", config, "--jobs", "2", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "2 jobs x" in result.stderr
    study = load(default_storage(tmp_path / "runs"))
    assert len(study.trials) == 4 and len({t.user_attrs["pid"] for t in study.trials}) == 2
    assert os.getpid() not in {t.user_attrs["pid"] for t in study.trials}  # trained by the job processes
    assert result.stdout.strip().endswith("best.yaml")


def test_sweep_refusals_are_one_line(cli, write_config, tmp_path, monkeypatch):
    def one_line(result, text):
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr

    root = tmp_path / "runs"
    one_line(cli("sweep", write_config(tiny_config()), "--runs-dir", root), "no `sweep:` section")
    bad = sweep_config(space={"optimizer.lrate": {"loguniform": [1e-4, 1e-2]}})
    one_line(cli("sweep", write_config(bad), "--runs-dir", root),
             "sweep.space.optimizer.lrate: optimizer.lrate: unknown key (did you mean 'lr'?)")
    (tmp_path / "space.yaml").write_text("optimizer.lr: {uniform: [0.1, 0.01]}\n")
    one_line(cli("sweep", write_config(tiny_config()), "--space", tmp_path / "space.yaml", "--runs-dir", root),
             "sweep.space.optimizer.lr.uniform.range: the low end 0.1 must be below the high end 0.01")
    assert not root.exists()

    ok = cli("sweep", write_config(sweep_config(trials=1)), "--runs-dir", root)
    assert ok.exit_code == 0, ok.output
    other = sweep_config(trials=2, space={"optimizer.lr": {"uniform": [0.001, 0.01]}})
    one_line(cli("sweep", write_config(other), "--runs-dir", root), "sweep tiny in sqlite:")
    assert "was started with another space" in cli("sweep", write_config(other), "--runs-dir", root).stderr
    monkeypatch.setitem(sys.modules, "optuna", None)
    one_line(cli("sweep", write_config(other), "--runs-dir", root), 'pip install "dlcli[sweep]"')


def test_a_sweep_run_again_with_other_settings_is_refused_until_renamed_or_restarted(cli, write_config, tmp_path):
    cfg = sweep_config(trials=1, pruner=None)
    config, root = write_config(cfg), tmp_path / "runs"
    storage, best_path = default_storage(root), root / "sweeps" / "tiny" / "best.yaml"

    first = cli("sweep", config, "--set", "train.epochs=1", "--set", "sweep.trials=1", "--runs-dir", root)
    assert first.exit_code == 0, first.output
    header = [line for line in best_path.read_text().splitlines() if line.startswith("#")]
    assert header[-1] == "# it carries the sweep's --set overrides: train.epochs=1 (set them back for a full run)"
    assert yaml.safe_load(best_path.read_text())["train"]["epochs"] == 1

    again = cli("sweep", config, "--set", "train.epochs=1", "--runs-dir", root)  # the same settings continue it
    assert again.exit_code == 0, again.output

    def refused(result, *texts):
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert all(t in result.stderr for t in ("started with other settings", "--name", "--restart", *texts)), \
            result.stderr

    refused(cli("sweep", config, "--set", "train.epochs=2", "--runs-dir", root), "train.epochs: 1 then, 2 now")
    refused(cli("sweep", config, "--runs-dir", root), "train.epochs: 1 then, 3 now")
    cfg["data"]["train_samples"] = 200  # the config file edited
    write_config(cfg)
    refused(cli("sweep", config, "--set", "train.epochs=1", "--runs-dir", root),
            "data.train_samples: 240 then, 200 now")
    cfg["data"]["train_samples"] = 240
    write_config(cfg)
    refused(cli("sweep", config, "--set", "train.epochs=1", "--set", "data.max_train_samples=100", "--runs-dir", root),
            "data.max_train_samples: unset then, 100 now")
    assert len(load(storage).trials) == 1  # nothing was added by a refused command

    old_run = load(storage).trials[0].user_attrs["run_id"]
    restarted = cli("sweep", config, "--restart", "--runs-dir", root)
    assert restarted.exit_code == 0, restarted.output
    assert "sweep tiny: deleted its study of 1 trials to start over" in restarted.stderr
    trials = load(storage).trials
    assert len(trials) == 1 and trials[0].user_attrs["run_id"] != old_run
    assert yaml.safe_load((root / trials[0].user_attrs["run_id"] / "config.yaml").read_text())["train"]["epochs"] == 3
    assert (root / old_run / "summary.json").is_file()  # the old study's runs stay
    assert yaml.safe_load(best_path.read_text())["train"]["epochs"] == 3
    assert best_path.read_text().splitlines()[2] == "# no --set overrides: the rest is the config file as written"


@needs_fashion
def test_the_readme_sweep_commands_run_as_written(cli, tmp_path, monkeypatch):
    """Each command of the docs' Sweeps section (docs/experiments.md) that names a shipped file, typed in a fresh folder whose data/
    holds a slice of Fashion-MNIST (600 training and 200 test images, found before the full set), cut down further
    (300 images, 1 epoch, 1 or 2 trials) by --set values appended the same way to every sweep."""
    readme = (ROOT / "docs" / "experiments.md").read_text().split("### Sweeps", 1)[1].split("\n### ", 1)[0]
    lines = [line for block in readme.split("```bash\n")[1:] for line in block.split("```")[0].splitlines()]
    commands = [shlex.split(line, comments=True) for line in lines if "--storage" not in line]
    assert len(commands) >= 6 and all(c[0] == "dlcli" for c in commands), lines
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLCLI_RUNS_DIR", raising=False)
    for folder in ("configs", "benchmarks"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    for name, count in (("train", 600), ("t10k", 200)):
        fashion_slice(name, count, tmp_path / "data" / "fashion_mnist")
    tiny = ["--set", "data.max_train_samples=300", "--set", "train.epochs=1"]
    outputs = []
    for command in commands:
        args = command[1:]
        if args[0] == "sweep":
            args += [*tiny, "--set", f"sweep.trials={2 if '--jobs' in args else 1}"]
        result = cli(*args)
        assert result.exit_code == 0, (command, result.output)
        outputs.append(result)

    sweep_dir = tmp_path / "runs" / "sweeps" / "fashion_mnist_sweep"
    study = load(f"sqlite:///{sweep_dir / 'study.db'}", "fashion_mnist_sweep")
    assert len(study.trials) == 2 and len({t.user_attrs["pid"] for t in study.trials}) == 2  # --jobs 2
    assert "2 done" in outputs[1].stderr  # the second command continues the study
    best = (sweep_dir / "best.yaml").read_text()
    assert "# it carries the sweep's --set overrides: data.max_train_samples=300, train.epochs=1 (" in best
    assert outputs[0].stdout.strip().splitlines()[-1] == "runs/sweeps/fashion_mnist_sweep/best.yaml"
    trained = tmp_path / "runs" / outputs[2].stdout.strip().splitlines()[-1]
    assert yaml.safe_load((trained / "config.yaml").read_text())["data"]["max_train_samples"] == 300
    listed = outputs[3].stdout
    assert all(t.user_attrs["run_id"] in listed for t in study.trials) and trained.name not in listed
    spaced = load(f"sqlite:///{tmp_path / 'runs/sweeps/fashion_mnist_cnn/study.db'}", "fashion_mnist_cnn")
    assert set(spaced.trials[0].params) == set(yaml.safe_load((ROOT / "benchmarks/fashion_sweep_space.yaml")
                                                               .read_text()))
    quick = (tmp_path / "runs" / "sweeps" / "quick" / "best.yaml").read_text()
    assert "overrides: data.max_train_samples=300, train.epochs=1 (" in quick  # the last of a key set twice


def fashion_slice(split: str, count: int, folder: Path) -> None:
    """The first `count` images and labels of a Fashion-MNIST split as IDX files in `folder`."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for kind, header, size in (("images-idx3", 16, 28 * 28), ("labels-idx1", 8, 1)):
        name = f"{split}-{kind}-ubyte"
        with gzip.open(FASHION / f"{name}.gz", "rb") as f:
            head, body = f.read(header), f.read(count * size)
        (folder / name).write_bytes(head[:4] + count.to_bytes(4, "big") + head[8:] + body)
