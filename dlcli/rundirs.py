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
from dlcli.tasks.names import headline

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def runs_dir(option: str | None) -> Path:
    return Path(option or os.environ.get("DLCLI_RUNS_DIR") or "runs")


def check_writable(root: Path) -> None:
    """One clear line before any training when runs cannot be written under `root` (read-only, not a directory,
    no permission), instead of a failure after the first epoch. Creates nothing: a run that fails to start
    leaves no runs directory behind."""
    import tempfile

    fix = "pass --runs-dir (or set DLCLI_RUNS_DIR) to a directory you can write"
    where = Path(os.path.abspath(root))
    while not where.exists() and where.parent != where:
        where = where.parent
    if not where.is_dir():
        raise DlcliError(f"cannot create the runs directory {root}: {where} is not a directory; {fix}", RUNTIME)
    try:
        with tempfile.TemporaryFile(dir=where, prefix=".dlcli-probe"):
            pass
    except OSError as err:
        what = f"write in the runs directory {root}" if where == Path(os.path.abspath(root)) else \
            f"create the runs directory {root} in {where}"
        raise DlcliError(f"cannot {what}: {os.strerror(err.errno).lower()}; {fix}", RUNTIME) from None


def create_run(root: Path, name: str) -> Path:
    """A new, empty run directory `<name>-<YYYYmmdd-HHMMSS>[-N]`; mkdir's atomicity keeps concurrent ids distinct."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # a run of another name started this second: count on from it, so that `latest` (the stamp, then the count)
    # is the later one and not the one whose name sorts last
    same_second = [STAMP.search(p.name) for p in root.glob(f"*-{stamp}*")]
    first = 1 + max([int(m.group(2) or 1) for m in same_second if m and m.group(1) == stamp], default=0)
    for n in range(first, first + 10_000):
        run_id = f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}"
        try:
            (root / run_id).mkdir()
        except FileExistsError:
            continue
        (root / run_id / "checkpoints").mkdir()
        return root / run_id
    raise DlcliError(f"cannot create a run directory under {root}", RUNTIME)


class _Counting:
    """A file wrapper that counts the bytes written and keeps the OSError of a failed write: torch's zip writer
    turns it into `[enforce fail at inline_container.cc] unexpected pos ...`, which tells a user nothing."""

    def __init__(self, raw):
        self.raw, self.written, self.error = raw, 0, None

    def write(self, data) -> int:
        try:
            n = self.raw.write(data)
        except OSError as err:
            self.error = err
            raise
        self.written += n if isinstance(n, int) else 0
        return n

    def __getattr__(self, name):  # flush, tell, seek, ... as the real file has them
        return getattr(self.raw, name)


def atomic_write(path: Path, write, needed: int | None = None) -> None:
    """Write through a temporary file, flush it to disk, then rename it over `path`: readers see old or new.

    A failure (full disk, an exception, a signal) removes the temporary file and leaves `path` as it was; a kill
    leaves at most a stale `.NAME.tmpPID` beside it, which `remove_stale_temps` clears. A failed write is raised as a
    DlcliError naming the path, the error in words, the space the file needs (`needed`, bytes) and what is free."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    counted = None
    try:
        with open(tmp, "wb") as raw:
            counted = _Counting(raw)
            write(counted)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = err if isinstance(err, OSError) else getattr(counted, "error", None)
        if isinstance(cause, OSError) or (isinstance(err, RuntimeError) and "inline_container" in str(err)):
            written = counted.written if counted else 0
            raise storage_error(path, cause if isinstance(cause, OSError) else None, max(needed or 0, written),
                                exact=needed is not None) from None
        raise
    _fsync_dir(path.parent)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} TB"


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def storage_error(path: Path, err: OSError | None, needed: int = 0, exact: bool = True,
                  appending: bool = False) -> DlcliError:
    """One line for a failed write: what, where, the error in words, and (for a full disk) the space in question."""
    import errno as errnos
    import shutil

    code = getattr(err, "errno", None)
    words = os.strerror(code).lower() if code else "the write failed"
    name = f" ({errnos.errorcode[code]})" if code in errnos.errorcode else ""
    previous = f"the previous {path.name} is intact" if path.exists() else f"there was no {path.name} before"
    if appending:
        previous = f"the lines before in {path.name} are kept"
    message = f"could not write {path}: {words}{name}"
    if code in (None, errnos.ENOSPC, errnos.EDQUOT, errnos.EFBIG):
        try:
            free = shutil.disk_usage(path.parent).free
            space = f"{_size(free)} free on {_mount_point(path.parent)}"
        except OSError:
            free, space = None, "free space unknown"
        if code is None and free is not None and needed and free >= needed:
            return DlcliError(f"could not write {path}: the write failed; {previous}", RUNTIME)
        if needed:
            message += f"; it needs {'' if exact else 'more than '}{_size(needed)}, {space}"
        else:
            message += f"; {space}"
        if code is None:
            message = message.replace("the write failed", "no space left on device, it seems")
    fix = {errnos.ENOSPC: "free some space or pass --runs-dir on another disk",
           errnos.EDQUOT: "free some of your quota or pass --runs-dir elsewhere",
           errnos.EROFS: "pass --runs-dir (or set DLCLI_RUNS_DIR) to a writable directory",
           errnos.EACCES: "pass --runs-dir (or set DLCLI_RUNS_DIR) to a directory you can write",
           errnos.EFBIG: "raise the file size limit (ulimit -f) or write elsewhere"}.get(code)
    return DlcliError(f"{message}; {previous}{'; ' + fix if fix else ''}", RUNTIME)


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
    """One line at the end of a JSON-lines file; a line torn by an earlier failure is ended first."""
    line = (json.dumps(obj) + "\n").encode()
    try:
        with open(path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
    except OSError as err:
        raise storage_error(path, err, len(line), appending=True) from None


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
    atomic_write(path, lambda f: _torch_save(state, f), needed=_tensor_bytes(state) + 64 * 1024)


def _torch_save(state, f) -> None:
    import torch

    torch.save(state, f)


def _tensor_bytes(obj) -> int:
    """About what torch.save writes for `obj`: its tensors' bytes (the pickled rest is small)."""
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)
    return nbytes if isinstance(nbytes, int) else 0


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


RESUME_KEYS = {"optimizer", "epoch", "step", "rng", "callbacks", "progress"}


def load_either_checkpoint(run: Path, which: str, map_location="cpu", resumable: bool = False):
    """checkpoints/<which>.pt, or, where that one is missing or damaged, the other (last <-> best): both hold the
    same model (and, for resume, the whole training state of their epoch). Returns (state, path, notice or None);
    raises the first file's error when neither can be read."""
    wanted = run / "checkpoints" / f"{which}.pt"

    def read(path: Path) -> dict:
        state = load_checkpoint(path, map_location)
        if resumable and not RESUME_KEYS <= state.keys():
            raise DlcliError(f"{path}: holds weights only, not the state a resume needs", RUNTIME)
        return state

    try:
        return read(wanted), wanted, None
    except DlcliError as err:
        other = wanted.with_name(("last" if which == "best" else "best") + ".pt")
        if not other.is_file():
            raise
        try:
            state = read(other)
        except DlcliError:
            raise err from None
        epoch = state.get("epoch")
        return state, other, f"{err}; using {other.name} (epoch {epoch}) instead"


def owner() -> dict:
    """Who is training a run, recorded in summary.json and in the run's lock."""
    import platform

    return {"pid": os.getpid(), "host": platform.node()}


LOCK = ".lock"
LOCK_SLOT = 512  # bytes: the lock file is one JSON object padded to this size
HEARTBEAT = 30.0  # seconds between touches of a held lock...
STALE = 5 * HEARTBEAT  # ...and the silence after which a run on another machine counts as gone


class RunLock:
    """An exclusive lock on a run directory, held by the process training it for as long as it trains.

    The kernel drops a flock when its process dies however it dies (SIGKILL, the OOM killer, a power cut of an SSH
    session), so a free lock on a run whose summary still says `running` means the run was killed. On a shared
    file system where another machine's locks may be invisible, a thread also touches the lock file every
    HEARTBEAT seconds: a run trained elsewhere is only called killed once its lock is free *and* silent."""

    def __init__(self, run: Path):
        self.run, self.fd, self._stop, self.said = run, None, None, {}

    def acquire(self, attempts: int = 20) -> "RunLock":
        import fcntl
        import threading

        path = self.run / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise storage_error(path, err) from None
        for attempt in range(attempts):  # a `dlcli runs` testing the lock holds it for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    os.close(fd)
                    who = read_lock_owner(self.run)
                    by = f" by process {who.get('pid')} on {who.get('host')}" if who else ""
                    raise DlcliError(f"run {self.run.name} is being trained{by}; stop it first (Ctrl-C or SIGTERM "
                                     "saves a checkpoint)", RUNTIME) from None
                time.sleep(0.1)
            except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): liveness falls back to the pid
                break
        self.fd, self.said = fd, {**owner(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            self._write(self.said)
        except OSError as err:
            self.release()
            raise storage_error(path, err, LOCK_SLOT) from None
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(path, self._stop), daemon=True, name="dlcli-heartbeat").start()
        return self

    @staticmethod
    def _beat(path: Path, stop) -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(path)
            except OSError:
                pass

    def _write(self, said: dict) -> None:
        """Overwrite the lock's fixed-size slot in place: on a full disk this needs no new block."""
        os.pwrite(self.fd, json.dumps(said).encode()[:LOCK_SLOT - 1].ljust(LOCK_SLOT - 1) + b"\n", 0)

    def record_end(self, status: str, error: str = "") -> None:
        """How the run ended, kept in the lock too: where summary.json cannot be written (a full disk), `runs`
        still tells a failed run from a killed one. The first record stands."""
        if self.fd is None or "ended" in self.said:
            return
        try:
            self.said = {**self.said, "ended": status, "error": error[:200]}
            self._write(self.said)
        except OSError:
            pass

    def release(self) -> None:
        import fcntl

        if self.fd is None:
            return
        if self._stop is not None:
            self._stop.set()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:  # never held (a file system without flock); closing releases it anyway
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, kind, err, trace):
        if err is not None:
            self.record_end("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", str(err))
        self.release()


def read_object(path: Path) -> dict:
    """A JSON object read leniently: {} where the file is missing, damaged or not an object (for listings and
    liveness checks that must go on; `read_json` is the strict reader)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read_lock_owner(run: Path) -> dict:
    return read_object(run / LOCK)


def lock_held(run: Path) -> bool | None:
    """Is someone holding the run's lock? None where the run has no lock file (made before locks, or killed
    while its directory was being made)."""
    import fcntl

    try:
        fd = os.open(run / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None  # a file system without locks: say nothing
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def is_alive(run: Path, summary: dict) -> bool:
    """Whether the process training a `running` run still exists, told from its lock (see RunLock); for a run
    without a lock file, from its recorded pid where it ran on this machine."""
    here = owner()["host"]
    host = summary.get("host") or read_lock_owner(run).get("host")
    held = lock_held(run)
    if held:
        return True
    if held is False:
        if host in (None, here):
            return False
        try:
            silent = time.time() - (run / LOCK).stat().st_mtime
        except OSError:
            return False
        return silent < STALE
    pid = summary.get("pid")
    if host != here or not isinstance(pid, int):
        return True  # nothing to tell by: trust the summary
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine exists (one of another user's counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def status(run: Path, summary: dict | None) -> str:
    """The run's status as it is, not as last written: `running` becomes `killed` once its process is gone (or
    `failed`, where the lock recorded an end that summary.json could not). `summary` None: unreadable."""
    if summary is None and ((run / "summary.json").exists() or lock_held(run) is None):
        return "unknown"  # damaged, or neither summary nor lock: nothing to tell by
    said = (summary or {}).get("status", "running" if summary is None else "unknown")
    if said == "running" and not is_alive(run, summary or {}):
        return read_lock_owner(run).get("ended") or "killed"
    return said


def check_not_running(run: Path, summary: dict) -> None:
    if summary.get("status") == "running" and is_alive(run, summary) and not _mine(run):
        who = read_lock_owner(run) or summary
        raise DlcliError(f"run {run.name} is still being trained by process {who.get('pid')} on "
                         f"{who.get('host')}; stop it first (Ctrl-C or SIGTERM saves a checkpoint)", RUNTIME)


def _mine(run: Path) -> bool:
    who = read_lock_owner(run)
    return who.get("pid") == os.getpid() and who.get("host") == owner()["host"]


HALF_MADE_AGE = 60.0  # seconds: a run directory still without config.yaml after this was left by a kill


def never_checkpointed(root: Path) -> list[tuple[Path, str]]:
    """(run, why) for runs that cannot be resumed and are not being trained: those that were killed, failed or
    interrupted before their first checkpoint, and directories a kill left half-made while a run was created."""
    found = []
    for run in list_runs(root):
        if lock_held(run) or any((run / "checkpoints" / f"{n}.pt").is_file() for n in ("last", "best")):
            continue
        said = status(run, read_object(run / "summary.json") or None)
        if said not in ("running", "completed"):
            found.append((run, f"{said} before its first checkpoint"))
    for run in sorted(root.iterdir()) if root.is_dir() else []:
        if run.is_symlink() or not run.is_dir() or (run / "config.yaml").exists() or not STAMP.search(run.name):
            continue
        try:
            contents = {p.name for p in run.iterdir()}
            young = time.time() - run.stat().st_mtime < HALF_MADE_AGE
        except OSError:
            continue
        extra = {n for n in contents - {"checkpoints", LOCK} if not n.startswith(".")}
        if extra or young or lock_held(run) or any((run / "checkpoints").glob("*.pt")):
            continue
        found.append((run, "half-made (killed while its directory was being created)"))
    return found


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
    summary = read_object(run / "summary.json")
    history = lenient(lambda: read_metrics(run)) or []
    section = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}  # noqa: E731
    best = summary.get("best_metric")
    monitor = section("train").get("checkpoint_monitor")
    if not isinstance(best, dict) and monitor and any(monitor in m for m in history):
        values = [m[monitor] for m in history if monitor in m]
        from dlcli.tasks.names import metric_mode

        best = {"name": monitor, "value": max(values) if metric_mode(monitor) == "max" else min(values)}
    started = summary.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.stat().st_mtime))
    shown = headline(summary)
    return {
        "id": run.name,
        "dataset": section("data").get("dataset"),
        "model": section("model").get("type"),
        "epochs_completed": summary.get("epochs_completed", len(history)),
        "epochs": summary.get("epochs") or section("train").get("epochs"),
        "best_metric": best if isinstance(best, dict) else None,
        "task": task_name(cfg, summary),
        "test_metric": shown[0],  # the task's headline: accuracy, r2, f1_micro
        "test_value": shown[1],
        "test_accuracy": test.get("accuracy") if isinstance(test := summary.get("test"), dict) else None,
        "test_loss": test.get("loss") if isinstance(test, dict) else None,
        **{f"test_{k}": v for k, v in (test.items() if isinstance(test, dict) else ())
           if isinstance(v, (int, float)) and k not in ("accuracy", "loss")},
        "status": status(run, summary or None),
        "last_checkpoint": last_checkpoint(run, summary, history),
        "started": started,
        "tags": read_tags(run),
    }


def task_name(cfg: dict, summary: dict) -> str:
    """A run's task, from summary.json or its config (runs from before tasks: classification)."""
    if isinstance(summary.get("task"), str):
        return summary["task"]
    task = cfg.get("task")
    if isinstance(task, dict) and isinstance(task.get("type"), str):
        return task["type"]
    return task if isinstance(task, str) else "classification"


def last_checkpoint(run: Path, summary: dict, history: list[dict] | None = None) -> int | None:
    """The epoch a resume starts from (last.pt's, as summary.json recorded it; best.pt's where a kill came between
    the two writes), or None where the run has no checkpoint."""
    if not any((run / "checkpoints" / f"{name}.pt").is_file() for name in ("last", "best")):
        return None
    recorded = summary.get("checkpoints")
    if isinstance(recorded, dict) and isinstance(recorded.get("last"), int):
        return recorded["last"]
    epochs = [m["epoch"] for m in history or [] if isinstance(m.get("epoch"), int)]
    return max(epochs, default=0)


TAGS = "tags.json"  # what a run belongs to, written when it is created: {"sweep": name, "trial": 3}, {"repeat": ...}


def read_tags(run: Path) -> dict:
    return read_object(run / TAGS)


def flatten(data, prefix: str = "") -> dict:
    """A resolved config as {dotted key: value}, the keys `--set` takes: nested sections and lists of sections
    (layers) are walked (`model.layers.0.conv2d.filters`); a list of plain values is one value (`model.hidden`)."""
    out = {}
    if isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        items = [(str(i), v) for i, v in enumerate(data)]
    else:
        return {prefix: data}
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, (dict, list)) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
