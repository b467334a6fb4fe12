"""The run directory: the contract between train, evaluate, predict and resume.

<runs>/<id>/config.yaml      the resolved config
            data.json        class names, input shape, normalisation statistics
            metrics.jsonl    one JSON object per epoch
            summary.json     status (running/completed/interrupted/failed, and the pid training it), best epoch
                             and metric, test score, timings, versions
            checkpoints/     last.pt (every epoch, and where a signal stopped the run: all that resume needs) and
                             best.pt (the best epoch by the monitored metric); written atomically, loaded weights-only
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import yaml

from dlcli.errors import RUNTIME, DlcliError

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def runs_dir(option: str | None) -> Path:
    return Path(option or os.environ.get("DLCLI_RUNS_DIR") or "runs")


def create_run(root: Path, name: str) -> Path:
    """A new, empty run directory `<name>-<YYYYmmdd-HHMMSS>[-N]`; mkdir's atomicity keeps concurrent ids distinct."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        run_id = f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}"
        try:
            (root / run_id).mkdir()
        except FileExistsError:
            continue
        (root / run_id / "checkpoints").mkdir()
        return root / run_id
    raise DlcliError(f"cannot create a run directory under {root}", RUNTIME)


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file, flush it to disk, then rename it over `path`: readers see old or new.

    A failure (full disk, an exception, a signal) removes the temporary file and leaves `path` as it was; a kill
    leaves at most a stale `.NAME.tmpPID` beside it, which `remove_stale_temps` clears."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file); not every OS can open a dir."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(run: Path) -> None:
    for tmp in [*run.glob(".*.tmp*"), *run.glob("checkpoints/.*.tmp*")]:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_yaml(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(yaml.safe_dump(obj, sort_keys=False).encode()))


def append_jsonl(path: Path, obj) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")
    except OSError as err:
        raise DlcliError(f"could not append to {path} ({err.strerror or err})", RUNTIME) from None


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DlcliError(f"{path} is missing: the run is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DlcliError(f"{path}: damaged JSON ({err})", RUNTIME) from None


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-append
    return [r for r in rows if isinstance(r, dict)]


def keep_metrics_until(run: Path, epoch: int) -> None:
    """Drop metrics of epochs after `epoch` (written before a crash took their checkpoint): resume re-runs them."""
    rows = [r for r in read_metrics(run) if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
    atomic_write(run / "metrics.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    previous = "the previous one is intact" if path.is_file() else "there was none before"
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a failed write as RuntimeError
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:160]
        raise DlcliError(f"could not write checkpoint {path} ({reason}); {previous}", RUNTIME) from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Tensors and plain containers only: torch's weights_only loader never runs code from the file."""
    import pickle
    import warnings

    import torch

    if not path.is_file():
        raise DlcliError(f"no checkpoint at {path}: the run has not saved one yet", RUNTIME)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; the one line below says what matters
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # Either not a pickle at all, or one naming classes or functions: those are never imported or run here.
        named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"it names Python objects ({named[1]}), refused" if named else "damaged or not a checkpoint"
        raise DlcliError(f"{path}: not a readable dlcli checkpoint: {what}", RUNTIME) from None
    except Exception as err:  # torch's readers fail on damaged bytes in many ways (IndexError, KeyError, ...)
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DlcliError(f"{path}: not a readable dlcli checkpoint: damaged or truncated ({first})", RUNTIME) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise DlcliError(f"{path}: not a dlcli checkpoint (no model weights in it)", RUNTIME)
    return state


def owner() -> dict:
    """Who is training a run, so that a second process does not resume it at the same time."""
    import platform

    return {"pid": os.getpid(), "host": platform.node()}


def check_not_running(run: Path, summary: dict) -> None:
    pid = summary.get("pid")
    if summary.get("status") != "running" or summary.get("host") != owner()["host"] or not isinstance(pid, int):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # it crashed or was killed: resuming is what it needs
    except (PermissionError, OSError):
        pass
    if pid != os.getpid():
        raise DlcliError(f"run {run.name} is still being trained by process {pid}; stop it first (Ctrl-C or "
                         "SIGTERM saves a checkpoint)", RUNTIME)


def list_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file()]
    return sorted(runs, key=started_key)


STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


def started_key(run: Path):
    """When a run started, from the stamp in its id (writing into an old run must not make it `latest`)."""
    match = STAMP.search(run.name)
    if match:
        return (match.group(1), int(match.group(2) or 1), run.name)
    return (time.strftime("%Y%m%d-%H%M%S", time.localtime(run.stat().st_ctime)), 0, run.name)


def resolve_run(root: Path, run_id: str) -> Path:
    """A full id, a unique prefix, or `latest` -> the run's directory, never a path outside `root`."""
    if run_id != "latest" and not ID_PATTERN.match(run_id):
        raise DlcliError(f"'{run_id}' is not a run id (letters, digits, '_', '.', '-'; no paths)")
    runs = list_runs(root)
    if not runs:
        raise DlcliError(f"no runs in {root}/: train one with `dlcli train CONFIG`, or pass --runs-dir")
    if run_id == "latest":
        return runs[-1]
    exact = [p for p in runs if p.name == run_id]
    matches = exact or [p for p in runs if p.name.startswith(run_id)]
    if not matches:
        raise DlcliError(f"no run '{run_id}' in {root}/ (see `dlcli runs`)")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5])
        raise DlcliError(f"run id '{run_id}' is ambiguous in {root}/: {names}{', ...' if len(matches) > 5 else ''}")
    resolved = matches[0].resolve()
    if resolved.parent != root.resolve():
        raise DlcliError(f"run '{run_id}' points outside {root}/; refusing to use it")
    return matches[0]


def overview(run: Path) -> dict:
    """One row of `dlcli runs`, read leniently: a damaged file shows as unknown fields, never hides the other runs."""

    def lenient(read):
        try:
            return read()
        except (OSError, ValueError, yaml.YAMLError, DlcliError):
            return None

    cfg = lenient(lambda: yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")))
    cfg = cfg if isinstance(cfg, dict) else {}
    summary = lenient(lambda: json.loads((run / "summary.json").read_text(encoding="utf-8")))
    summary = summary if isinstance(summary, dict) else {}
    history = lenient(lambda: read_metrics(run)) or []
    section = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}  # noqa: E731
    best = summary.get("best_metric")
    monitor = section("train").get("checkpoint_monitor")
    if not isinstance(best, dict) and monitor and any(monitor in m for m in history):
        values = [m[monitor] for m in history if monitor in m]
        best = {"name": monitor, "value": max(values) if monitor.endswith("accuracy") else min(values)}
    started = summary.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.stat().st_mtime))
    return {
        "id": run.name,
        "dataset": section("data").get("dataset"),
        "model": section("model").get("type"),
        "epochs_completed": summary.get("epochs_completed", len(history)),
        "epochs": summary.get("epochs") or section("train").get("epochs"),
        "best_metric": best if isinstance(best, dict) else None,
        "test_accuracy": test.get("accuracy") if isinstance(test := summary.get("test"), dict) else None,
        "status": summary.get("status", "unknown"),
        "started": started,
    }
