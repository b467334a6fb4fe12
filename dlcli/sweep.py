"""`dlcli sweep CONFIG`: a hyperparameter search with Optuna around `train`; and `dlcli train --repeat N`.

Every trial is an ordinary run (evaluate, predict, resume work on it) tagged with its sweep in its tags.json. A
callback reports each epoch's metric to the trial; the median pruner may then end it early, and the run's status
becomes `pruned`. The study lives in an Optuna storage: by default SQLite at <runs>/sweeps/<name>/study.db, or any
database `--storage` names, so several `dlcli sweep` processes (`--jobs`, or other machines) fill one study.

How far a sweep has gone is counted in the study: trials that completed, were pruned or failed, and trials other
processes are running, up to `trials` in all. A trial stopped by Ctrl-C or SIGTERM (its run saved a checkpoint) is
queued again with the same parameters, and the next `dlcli sweep` resumes its run where it stopped; so is a trial
whose process was killed (found at once on the same machine, or when its heartbeat goes silent elsewhere).

A study ranks its trials together, so it keeps to the space, metric and base config (the file with --set applied) it
was started with: another is refused with what changed, until the sweep gets a new --name or --restart deletes the
old study (its runs stay).

At the end: a ranked table, and the best trial's config as <sweep dir>/best.yaml, ready for `dlcli train`, its
header naming the --set overrides it carries.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from dlcli import rundirs as runs
from dlcli.config import Config, apply_override, read_yaml, set_key, validate_config
from dlcli.engine import Callback
from dlcli.errors import RUNTIME, DlcliError
from dlcli.tasks import headline, metric_mode, short_name

HEARTBEAT = 20  # seconds between a running trial's heartbeats in the storage...
GRACE = 120  # ...and the silence after which another process counts it as dead and queues it again
FAILURES_IN_A_ROW = 3  # this many trials failing alike ends the sweep: the config is wrong, not the parameters


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise DlcliError('dlcli sweep needs Optuna: pip install "dlcli[sweep]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats (how a dead trial is found) are marked experimental, and meant for study.optimize: we send them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


@dataclass
class Plan:
    """A sweep as the command line and config define it, checked before any trial runs."""

    config: str  # the config file, as given
    raw: dict  # its YAML with --set applied and no `sweep:` section: what each trial's values are set into
    cfg: Config  # the validated base config
    name: str
    directory: Path  # <runs>/sweeps/<name>: best.yaml, summary.json, and study.db unless --storage
    storage: str
    runs_root: Path
    trials: int
    metric: str
    direction: str  # maximize | minimize
    overrides: list[str]  # --set as given: best.yaml says which of its values came from the command line
    settings: dict  # the base config as written (--set applied, no `sweep:`): a study keeps to one

    @property
    def space(self):
        return self.cfg.sweep.space

    @property
    def where(self) -> str:
        """The storage URL for messages, without a password."""
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.storage).render_as_string(hide_password=True)
        except Exception:
            return self.storage.split("@")[-1]


def with_values(raw: dict, values: dict) -> dict:
    """A copy of the config's YAML with a trial's values set at their dotted keys."""
    data = copy.deepcopy(raw)
    for key, value in values.items():
        set_key(data, key, value, f"sweep.space.{key}")
    return data


def config_with(raw: dict, values: dict, source: str) -> Config:
    return validate_config(with_values(raw, values), source=source)


def make_plan(config: str, overrides: list[str] | None, space_file: str | None, trials: int | None,
              name: str | None, storage: str | None, runs_root: Path) -> Plan:
    raw = read_yaml(config)
    for override in overrides or []:
        apply_override(raw, override)
    settings = json.loads(json.dumps({k: v for k, v in raw.items() if k != "sweep"}, default=str))
    if space_file:
        extra = read_yaml(space_file)
        section = extra if "space" in extra else {"space": extra}  # a whole sweep section, or just its space
        base = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
        raw["sweep"] = {**base, **section}
    cfg = validate_config(raw, source=config, overrides=overrides)
    if cfg.sweep is None:
        raise DlcliError(f"{config}: no `sweep:` section: add one with a `space:` of keys to search, or pass "
                         "--space FILE (see README, Experiments)")
    if cfg.train.devices > 1:
        raise DlcliError(f"{config}: train.devices is {cfg.train.devices}: a sweep trains each trial in one process; "
                         "set it to 1 and run trials side by side with --jobs")
    base = {k: v for k, v in raw.items() if k != "sweep"}
    if cfg.model.init and isinstance(base.get("model"), dict):  # every trial starts from the same weights
        from dlcli.finetune import resolve_init

        base["model"] = {**base["model"], "init": resolve_init(cfg.model.init, runs_root)}
    for section in ("optimizer", "scheduler"):  # `optimizer.lr` searched where the config says `adam` or nothing
        if any(key.startswith(section + ".") for key in cfg.sweep.space) and not isinstance(base.get(section), dict):
            base[section] = {"name": base.get(section) or getattr(cfg, section).entry_name}
    for key, distribution in cfg.sweep.space.items():  # every key must name a config value its values fit
        try:
            config_with(base, {key: distribution.example()}, source="x")
        except DlcliError as err:
            reason = str(err).removeprefix("x: ")
            raise DlcliError(f"{config}: sweep.space.{key}: {reason}") from None
    name = name or cfg.name
    if not runs.ID_PATTERN.match(name):
        raise DlcliError(f"--name {name!r}: letters, digits, '_', '.', '-' only")
    directory = runs_root / "sweeps" / name
    metric = cfg.sweep.metric or cfg.train.checkpoint_monitor
    direction = "maximize" if metric_mode(metric) == "max" else "minimize"
    return Plan(config, base, cfg, name, directory, storage or f"sqlite:///{(directory / 'study.db').resolve()}",
                runs_root, trials or cfg.sweep.trials, metric, direction, list(overrides or []), settings)


# ---------------------------------------------------------------- the study


def open_study(plan: Plan, seed_offset: int = 0):
    """The plan's study, created on first use; refused when it was started with another space or metric."""
    optuna = optuna_module()
    if plan.storage.startswith("sqlite:///"):
        Path(plan.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite") else {}
    for attempt in range(6):  # processes starting together on a new database race to create its tables
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore")
                storage = optuna.storages.RDBStorage(plan.storage, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT,
                                                     grace_period=GRACE, heartbeat_stale_trial_callback=queue_again)
            break
        except Exception as err:
            if attempt == 5:
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                raise DlcliError(f"--storage {plan.where}: cannot open it ({type(err).__name__}: {first})",
                                 RUNTIME) from None
            time.sleep(0.2 * 2**attempt)
    study = optuna.create_study(study_name=plan.name, storage=storage, direction=plan.direction, load_if_exists=True)
    ours = {"metric": plan.metric, "direction": plan.direction,
            "space": {k: v.to_spec() for k, v in plan.space.items()}, "settings": plan.settings}
    found = study.user_attrs.get("dlcli")
    if found is None:
        study.set_user_attr("dlcli", ours)
    else:
        refuse_another_start(plan, {"settings": ours["settings"], **found}, ours, len(study.trials))
        if "settings" not in found:  # a study from before settings were kept: they are kept from now on
            study.set_user_attr("dlcli", {**found, "settings": ours["settings"]})
    sweep = plan.cfg.sweep
    seed = plan.cfg.seed + len(study.trials) + 7919 * seed_offset  # a continued study draws new values
    if sweep.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=sweep.startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    pruner = optuna.pruners.NopPruner() if sweep.pruner is None else optuna.pruners.MedianPruner(
        n_startup_trials=sweep.pruner.startup_trials, n_warmup_steps=sweep.pruner.min_epochs)
    return optuna.load_study(study_name=plan.name, storage=storage, sampler=sampler, pruner=pruner), storage


def refuse_another_start(plan: Plan, found: dict, ours: dict, trials: int) -> None:
    """A study's trials are ranked together, so they must have trained alike: another metric, space or base config
    (the config file edited, other --set values) is refused, saying what changed and how to go on."""
    found, ours = json.loads(json.dumps(found)), json.loads(json.dumps(ours))
    ways = f"keep it, start a new sweep with --name, or delete its {trials} trials and start over with --restart"
    for what in ("metric", "space"):
        if found.get(what) != ours[what]:
            raise DlcliError(f"sweep {plan.name} in {plan.where} was started with another {what} "
                             f"({json.dumps(found.get(what))}); {ways}")
    changed = differences(found["settings"], ours["settings"])
    if changed:
        shown = "; ".join(f"{key}: {before} then, {now} now" for key, before, now in changed[:4])
        more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise DlcliError(f"sweep {plan.name} in {plan.where} was started with other settings ({shown}{more}): its "
                         f"trials would be ranked with trials trained otherwise; use the config and --set values it "
                         f"started with, or {ways.removeprefix('keep it, ')}")


_UNSET = object()  # a key one side of a comparison lacks


def differences(before, now, prefix: str = "") -> list[tuple[str, str, str]]:
    """The dotted keys (list items by index, as --set spells them) whose values differ: (key, before, now)."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for key in dict.fromkeys([*before, *now])
                for d in differences(before.get(key, _UNSET), now.get(key, _UNSET), f"{prefix}{key}.")]
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        return [d for i, (b, n) in enumerate(zip(before, now)) for d in differences(b, n, f"{prefix}{i}.")]
    if before == now:
        return []
    shown = lambda v: "unset" if v is _UNSET else json.dumps(v)  # noqa: E731
    return [(prefix.rstrip("."), shown(before), shown(now))]


def restart(plan: Plan) -> int:
    """Delete the plan's study (its trials' runs stay); returns how many trials it held, 0 where there was none."""
    optuna = optuna_module()
    if not _exists(plan):
        return 0
    try:
        trials = len(optuna.load_study(study_name=plan.name, storage=plan.storage).trials)
        optuna.delete_study(study_name=plan.name, storage=plan.storage)
    except KeyError:  # no study of that name
        return 0
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise DlcliError(f"--storage {plan.where}: cannot delete sweep {plan.name} ({type(err).__name__}: {first})",
                         RUNTIME) from None
    return trials


def _exists(plan: Plan) -> bool:
    """Whether the storage may hold studies: a SQLite file that is not there holds none (and is not created)."""
    return not plan.storage.startswith("sqlite:///") or Path(plan.storage.removeprefix("sqlite:///")).is_file()


def queue_again(study, trial) -> None:
    """A trial that did not end by itself (Ctrl-C, SIGTERM, a killed process): the same values again, resuming its
    run where it has a checkpoint."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number,
                                                  "resume_run": trial.user_attrs.get("run_id")})


def counted(study, below: int | None = None) -> int:
    """Trials that count towards the total: ended by themselves (completed, pruned, failed) or running."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if below is not None and t.number >= below:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or (
                t.state == TrialState.FAIL and t.user_attrs.get("ended") == "failed"):
            n += 1
    return n


def fail_dead_trials(study, storage) -> None:
    """Running trials of processes on this machine that no longer exist: failed, and queued again."""
    from optuna.trial import TrialState

    here = platform.node()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != here or not isinstance(pid, int) or pid == os.getpid() or runs.pid_alive(pid):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                storage.set_trial_user_attr(t._trial_id, "ended", "killed")
                queue_again(study, t)
        except Exception:  # another process got there first
            pass




class Heartbeat:
    """Records a running trial's heartbeat in the storage, so that other processes can tell it is alive."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()

    def __enter__(self):
        self.beat()
        threading.Thread(target=self.run, daemon=True, name="dlcli-sweep-heartbeat").start()
        return self

    def beat(self):
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception:
            pass  # a busy database: the next beat will do

    def run(self):
        while not self.stop.wait(HEARTBEAT):
            self.beat()

    def __exit__(self, *exc):
        self.stop.set()


# ---------------------------------------------------------------- one trial


class TrialReporter(Callback):
    """Reports each epoch's metric to the Optuna trial; stops the fit after an epoch the pruner judges hopeless."""

    def __init__(self, trial, metric: str, prune: bool):
        self.trial, self.metric, self.prune = trial, metric, prune
        self.run: Path | None = None
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer):
        from dlcli.training import RunRecorder

        self.run = next((cb.run for cb in trainer.callbacks if isinstance(cb, RunRecorder)), None)
        if self.run is not None:
            self.trial.set_user_attr("run_id", self.run.name)
            for m in runs.read_metrics(self.run):  # a resumed run: the epochs before its checkpoint
                if isinstance(m.get("epoch"), int) and m["epoch"] <= trainer.state.epoch:
                    self.report(m)

    def report(self, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.trial.report(float(value), metrics["epoch"])

    def on_epoch_end(self, trainer, metrics):
        self.report(metrics)
        if self.prune and metrics["epoch"] < trainer.cfg.train.epochs and self.trial.should_prune():
            self.pruned_at = metrics["epoch"]
            trainer.state.stop = True


def best_value(history: list[dict], metric: str, direction: str) -> float | None:
    values = [m[metric] for m in history if isinstance(m.get(metric), (int, float)) and math.isfinite(m[metric])]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def run_trial(plan: Plan, study, storage, trial, say) -> str:
    """Train one trial and tell the study how it ended: completed, pruned, failed or interrupted (then raised)."""
    from optuna.trial import TrialState
    from rich.console import Console

    from dlcli import training as train

    started = time.perf_counter()
    trial.set_user_attr("host", platform.node())
    trial.set_user_attr("pid", os.getpid())
    quiet = Console(quiet=True)
    reporter = TrialReporter(trial, plan.metric, plan.cfg.sweep.pruner is not None)
    tags = {"sweep": plan.name, "trial": trial.number, "study": plan.where}
    label = f"trial {trial.number}"
    with Heartbeat(storage, trial._trial_id):
        try:
            values = {key: distribution.suggest(trial, key) for key, distribution in plan.space.items()}
            label += "  " + "  ".join(f"{k}={_short(v)}" for k, v in values.items())
            resume = trial.user_attrs.get("resume_run")
            state = _state(plan.runs_root / resume) if resume else None
            if state is not None:
                run = plan.runs_root / resume
                runs.write_json(run / runs.TAGS, {**tags, "retry_of": trial.user_attrs["retry_of"]})
                if state == "completed":  # the signal came after its training had ended: its results stand
                    trial.set_user_attr("run_id", run.name)
                    for m in runs.read_metrics(run):
                        reporter.report(m)
                else:
                    run = train.resume(plan.runs_root, resume, quiet, show_progress=False, callbacks=(reporter,))
                label += f"  (resumed {resume})"
            else:
                cfg = config_with(plan.raw, values, source=f"{plan.config} (trial {trial.number})")
                run = train.train(cfg, plan.runs_root, quiet, show_progress=False, tags=tags, callbacks=(reporter,))
        except (DlcliError, KeyboardInterrupt) as err:
            code = err.exit_code if isinstance(err, DlcliError) else 130
            if code in (130, 143):  # Ctrl-C or SIGTERM: the run saved a checkpoint; the next sweep resumes it
                trial.set_user_attr("ended", "interrupted")
                study.tell(trial, state=TrialState.FAIL)
                queue_again(study, storage.get_trial(trial._trial_id))
                say(f"{label}  interrupted; run the same command again to resume it")
                raise
            trial.set_user_attr("ended", "failed")
            trial.set_user_attr("error", str(err)[:500])
            study.tell(trial, state=TrialState.FAIL)
            say(f"{label}  failed: {err}")
            return "failed"
        except Exception as err:  # e.g. out of memory at a searched batch size: this trial fails, the sweep goes on
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"
            trial.set_user_attr("ended", "failed")
            trial.set_user_attr("error", reason)
            study.tell(trial, state=TrialState.FAIL)
            say(f"{label}  failed: {reason}")
            return "failed"
    seconds = time.perf_counter() - started
    value = best_value(runs.read_metrics(run), plan.metric, plan.direction)
    summary = runs.read_json(run / "summary.json")
    test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
    trial.set_user_attr("run_id", run.name)
    name, value_test = headline(summary)
    trial.set_user_attr("test_metric", name)  # the task's headline: accuracy, r2, f1_micro
    trial.set_user_attr("test_value", value_test)
    trial.set_user_attr("test_accuracy", test.get("accuracy"))
    trial.set_user_attr("epochs", summary.get("epochs_completed"))
    trial.set_user_attr("seconds", round(seconds, 1))
    shown = f"{plan.metric} {value:.4f}" if value is not None else f"no {plan.metric}"
    test_text = f"  test {short_name(name)} {value_test:.4f}" if isinstance(value_test, float) else ""
    if reporter.pruned_at is not None:
        runs.write_json(run / "summary.json", {**summary, "status": "pruned", "pruned_at_epoch": reporter.pruned_at})
        study.tell(trial, state=TrialState.PRUNED)
        say(f"{label}  pruned at epoch {reporter.pruned_at}: {shown}{test_text}  {seconds:.1f}s  {run.name}")
        return "pruned"
    if value is None:
        trial.set_user_attr("ended", "failed")
        trial.set_user_attr("error", f"no finite {plan.metric} in its metrics.jsonl")
        study.tell(trial, state=TrialState.FAIL)
        say(f"{label}  failed: no finite {plan.metric}  {run.name}")
        return "failed"
    study.tell(trial, value)
    say(f"{label}  {shown}{test_text}  {seconds:.1f}s  {run.name}")
    return "completed"


def _state(run: Path) -> str | None:
    """An interrupted trial's run: `completed`, `resumable` (it has a checkpoint), or None (train it anew)."""
    if not run.is_dir() or not any((run / "checkpoints" / f"{n}.pt").is_file() for n in ("last", "best")):
        return None
    try:
        summary = runs.read_json(run / "summary.json")
    except DlcliError:
        return "resumable"
    return "completed" if isinstance(summary, dict) and summary.get("status") == "completed" else "resumable"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# ---------------------------------------------------------------- a sweep process


def work(plan: Plan, say, timeout: float | None = None, worker: int = 0, threads: int | None = None) -> int:
    """Run trials until the study holds `plan.trials` or `timeout` seconds have passed; returns how many ran here."""
    optuna = optuna_module()
    if threads:
        import torch

        torch.set_num_threads(threads)
    study, storage = open_study(plan, worker)
    deadline = time.monotonic() + timeout if timeout is not None else None
    ran, failures = 0, []
    while deadline is None or time.monotonic() < deadline:
        fail_dead_trials(study, storage)
        optuna.storages.fail_stale_trials(study)
        if counted(study) >= plan.trials:
            break
        trial = study.ask()
        if counted(study, below=trial.number) >= plan.trials:  # another process took the last place meanwhile
            trial.set_user_attr("ended", "surplus")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if trial.user_attrs.get("retry_of") is not None:
                queue_again(study, storage.get_trial(trial._trial_id))
            break
        outcome = run_trial(plan, study, storage, trial, say)
        ran += 1
        if outcome == "failed":
            error = storage.get_trial(trial._trial_id).user_attrs.get("error", "")
            failures.append(error)
            if len(failures) >= FAILURES_IN_A_ROW and len(set(failures[-FAILURES_IN_A_ROW:])) == 1:
                raise DlcliError(f"sweep {plan.name}: {FAILURES_IN_A_ROW} trials in a row failed alike, stopping: "
                                 f"{error}", RUNTIME)
        else:
            failures = []
    return ran


def run_sweep(plan: Plan, console, jobs: int = 1, timeout: float | None = None, argv: list[str] | None = None) -> dict:
    """The whole sweep: trials here (jobs 1) or in `jobs` worker processes; then the ranked table and best.yaml."""
    study, _ = open_study(plan)
    done = counted(study)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs) if jobs > 1 else None
    console.print(f"sweep {plan.name}: {plan.trials} trials by {plan.metric} ({plan.direction}), {done} done; "
                  f"study in {plan.where}" + (f"; {jobs} jobs x {threads} threads" if jobs > 1 else ""),
                  soft_wrap=True)
    started = time.perf_counter()
    say = lambda line: console.print(line, soft_wrap=True, highlight=False)  # noqa: E731
    interrupted = None
    if jobs == 1:
        try:
            work(plan, say, timeout)
        except DlcliError as err:
            if err.exit_code not in (130, 143):
                raise
            interrupted = err.exit_code
        except KeyboardInterrupt:
            interrupted = 130
    else:
        interrupted = _run_jobs(argv or [], jobs, threads, timeout)
    result = report(plan, console, time.perf_counter() - started)
    if interrupted:
        raise DlcliError(f"sweep {plan.name} interrupted with {result['counted']} of {plan.trials} trials; run the "
                         "same command again to continue it", interrupted)
    return result


def _run_jobs(argv: list[str], jobs: int, threads: int, timeout: float | None) -> int | None:
    """`jobs` worker processes of this same command, each with `threads` torch threads; Ctrl-C or SIGTERM here is
    passed on to each once (they run in their own sessions, so a terminal's Ctrl-C reaches them through us only).
    Returns the signal's exit code when they were interrupted."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "dlcli", *argv, "--worker", "--threads", str(threads),
               *(["--timeout", str(timeout)] if timeout is not None else [])]
    procs = [subprocess.Popen([*command, "--worker-index", str(i)], env=env, start_new_session=True)
             for i in range(jobs)]
    received: list[int] = []

    def forward(signum, frame):
        if not received:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)
        received.append(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received or any(c in (130, 143) for c in codes):
        return 143 if (received and received[0] == signal.SIGTERM) or 143 in codes else 130
    bad = [c for c in codes if c != 0]
    if bad:
        raise DlcliError(f"{len(bad)} of {jobs} sweep jobs failed (exit {bad[0]}): see their lines above", RUNTIME)
    return None


# ---------------------------------------------------------------- the end


def ranked(plan: Plan, study) -> list:
    """Completed trials best first, then pruned ones by their last reported value, then failed ones."""
    from optuna.trial import TrialState

    sign = -1 if plan.direction == "maximize" else 1

    def last(t):
        if not t.intermediate_values:
            return math.inf
        return sign * t.intermediate_values[max(t.intermediate_values)]

    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: sign * t.value)
    pruned = sorted((t for t in trials if t.state == TrialState.PRUNED), key=last)
    failed = [t for t in trials
              if t.state == TrialState.FAIL and t.user_attrs.get("ended") in ("failed", "interrupted", "killed")]
    return complete + pruned + failed


def to_yaml(data: dict) -> str:
    """YAML as people write configs: lists of plain values and small sections on one line (`shape: [1, 28, 28]`,
    `dense: {units: 128, activation: relu}`)."""
    import yaml

    plain = (str, int, float, bool, type(None))

    class Dumper(yaml.SafeDumper):
        pass

    def lists(dumper, value):
        flow = all(isinstance(v, plain) for v in value)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)

    def sections(dumper, value):
        flow = 2 <= len(value) <= 4 and all(isinstance(v, plain) for v in value.values())
        return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=flow)

    Dumper.add_representer(list, lists)
    Dumper.add_representer(dict, sections)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=120)


def report(plan: Plan, console, seconds: float) -> dict:
    """Print the ranked table, write best.yaml and summary.json into the sweep directory; returns the summary."""
    from optuna.trial import TrialState
    from rich.table import Table

    study, _ = open_study(plan)
    rows = ranked(plan, study)
    keys = list(plan.space)
    table = Table(title=f"sweep {plan.name}: {plan.metric} ({plan.direction})")
    test_col = f"test {short_name(plan.cfg.task.headline)}"
    for col in ("#", "trial", "state", plan.metric, "epochs", test_col, *keys, "run"):
        table.add_column(col, justify="right" if col in ("#", "trial", plan.metric, "epochs", test_col) else "left")
    retried = {t.user_attrs.get("retry_of"): t.number for t in study.get_trials(deepcopy=False)}
    for i, t in enumerate(rows, start=1):
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(t.state, t.user_attrs.get("ended"))
        if t.number in retried:
            state = f"{state}, again as {retried[t.number]}"
        value = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        test = t.user_attrs.get("test_value", t.user_attrs.get("test_accuracy"))
        table.add_row(str(i), str(t.number), state or "failed", f"{value:.4f}" if value is not None else "-",
                      str(t.user_attrs.get("epochs") or "-"), f"{test:.4f}" if isinstance(test, float) else "-",
                      *(_short(plan.space[k].value(t.params[k])) if k in t.params else "-" for k in keys),
                      t.user_attrs.get("run_id") or "-")
    console.print(table)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    summary = {"name": plan.name, "storage": plan.where, "metric": plan.metric, "direction": plan.direction,
               "trials": plan.trials, "counted": counted(study),
               "complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
               "failed": sum(1 for t in rows if t.state == TrialState.FAIL), "seconds": round(seconds, 1)}
    complete = [t for t in rows if t.state == TrialState.COMPLETE]
    plan.directory.mkdir(parents=True, exist_ok=True)
    if complete:
        best = complete[0]
        values = {k: plan.space[k].value(best.params[k]) for k in keys if k in best.params}
        data = with_values(plan.raw, values)
        cfg = validate_config(data, source=f"sweep {plan.name}: best trial {best.number}")  # it trains as written
        last = {o.split("=", 1)[0].strip(): o for o in plan.overrides}  # a key set twice: its last value counts
        carried = [o for key, o in last.items() if not key.startswith("sweep.")]
        header = (f"# dlcli sweep {plan.name}: the best of {summary['complete']} completed trials by {plan.metric} "
                  f"({best.value:.4f}, trial {best.number}, run {best.user_attrs.get('run_id')})\n"
                  f"# searched: {', '.join(keys)}; train it with: dlcli train {plan.directory / 'best.yaml'}\n"
                  + (f"# it carries the sweep's --set overrides: {', '.join(carried)} (set them back for a full "
                     "run)\n" if carried else "# no --set overrides: the rest is the config file as written\n"))
        path = plan.directory / "best.yaml"
        runs.atomic_write(path, lambda f: f.write((header + to_yaml(data)).encode()))
        summary["best"] = {"trial": best.number, "value": best.value, "params": values,
                           "run_id": best.user_attrs.get("run_id"),
                           "test_accuracy": best.user_attrs.get("test_accuracy"),
                           "test_metric": best.user_attrs.get("test_metric", "accuracy"),
                           "test_value": best.user_attrs.get("test_value", best.user_attrs.get("test_accuracy")),
                           "config": str(path), "model": cfg.model.type}
        console.print(f"best: trial {best.number}, {plan.metric} {best.value:.4f}; its config: {path}",
                      soft_wrap=True)
    else:
        console.print(f"no trial of sweep {plan.name} has completed yet: no best.yaml", soft_wrap=True)
    runs.write_json(plan.directory / "summary.json", summary)
    return summary


# ---------------------------------------------------------------- repeated seeds


def repeat(cfg: Config, runs_root: Path, console, show_progress: bool, world, times: int) -> list[Path]:
    """Train `times` runs of one config with seeds seed, seed + 1, ...; print each and the mean +- std of their
    test figures. The runs are tagged as one group (tags.json `repeat`), which `dlcli runs` shows together."""
    from dlcli.compare import mean_std
    from dlcli.training import train

    from dlcli.finetune import resolve_init

    cfg.model.init = resolve_init(cfg.model.init, runs_root)  # `latest` is the run before the first repeat
    group = f"{cfg.name}-x{times}-{time.strftime('%Y%m%d-%H%M%S')}"
    done = []
    for i in range(times):
        one = cfg.model_copy(deep=True)
        one.seed = cfg.seed + i
        console.print(f"repeat {i + 1}/{times}: seed {one.seed}", soft_wrap=True)
        tags = {"repeat": group, "seed": one.seed, "index": i + 1, "of": times}
        done.append(train(one, runs_root, console, show_progress, world, tags=tags))
    if world.main:
        tests = [runs.read_json(run / "summary.json").get("test") or {} for run in done]
        for key in dict.fromkeys((cfg.task.headline, "loss")):
            values = [t[key] for t in tests if isinstance(t.get(key), (int, float))]
            if values:
                mean, std = mean_std(values)
                print(f"test {key} {mean:.4f} +- {std:.4f} (mean +- std of {len(values)} runs, seeds "
                      f"{cfg.seed}..{cfg.seed + times - 1}; group {group})", file=sys.stderr)  # --quiet too
    return done
