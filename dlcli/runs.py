"""The run directory: the contract between train, evaluate, predict and resume.

<runs>/<id>/config.yaml      the resolved config
            data.json        class names, input shape, normalisation statistics
            metrics.jsonl    one JSON object per epoch
            summary.json     status, best epoch and metric, test score, timings, versions
            checkpoints/     last.pt and best.pt, written atomically, loaded weights-only
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
    """Write through a temporary file, flush it to disk, then rename it over `path`: readers see old or new."""
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


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_yaml(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(yaml.safe_dump(obj, sort_keys=False).encode()))


def append_jsonl(path: Path, obj) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


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
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as err:
        raise DlcliError(
            f"could not write checkpoint {path} ({err.strerror or err}); the previous one is intact", RUNTIME
        ) from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Tensors and plain containers only: torch's weights_only loader never runs code from the file."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise DlcliError(f"no checkpoint at {path}: the run has not finished an epoch", RUNTIME)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DlcliError(f"{path}: not a readable dlcli checkpoint ({first[:160]})", RUNTIME) from None
    if not isinstance(state, dict) or "model" not in state:
        raise DlcliError(f"{path}: not a dlcli checkpoint (no model weights in it)", RUNTIME)
    return state


def list_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda p: (p.stat().st_mtime, p.name))


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
        "status": summary.get("status", "unknown"),
        "started": started,
    }
