"""dlcli from Python: train, load, evaluate and predict in a notebook or a script, on the command line's code path.

    import dlcli

    run = dlcli.train("configs/table_regression.yaml", overrides={"train.epochs": 20})
    run.evaluate()["r2"]
    run.predict(df.head())            # a DataFrame, file paths, PIL images, arrays, tensors or texts
    dlcli.load("latest").metrics_frame()

Every function validates as the command line does and raises `dlcli.DlcliError` (`ConfigError`, `DataError`, ...)
with the same one-line messages; nothing here exits the interpreter. Ctrl-C (a notebook's interrupt) stops a
training with a resumable checkpoint, as in the terminal, and raises `dlcli.TrainingInterrupted`, wherever in
`train` it lands (reading the data, the epochs, scoring the test split), never a bare KeyboardInterrupt.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

from dlcli.errors import DlcliError

Config = Any  # a YAML path, a dict, or a parsed dlcli.config.Config


def _console(quiet: bool):
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=quiet)  # rich draws its progress in Jupyter too


def _root(runs_dir) -> Path:
    from dlcli import rundirs as runs

    return runs.runs_dir(str(runs_dir) if runs_dir is not None else None)


def parse_config(config: Config, overrides: dict | None = None, frames: tuple[bool, bool] = (False, False)):
    """A validated Config from a YAML path, a dict or a Config; `overrides` {dotted key: value} are typed exactly as
    `--set key=value` (a string value is read as YAML, as on the command line)."""
    import copy

    import yaml

    from dlcli.config import Config as Parsed
    from dlcli.config import read_yaml, set_key, validate_config

    if isinstance(config, Parsed):
        data, source = config.resolved(), f"config {config.name}"
    elif isinstance(config, (str, os.PathLike)):
        data, source = read_yaml(config), str(config)
    elif isinstance(config, dict):
        data, source = copy.deepcopy(config), "config"
    else:
        raise DlcliError(f"config: a YAML path, a dict or a dlcli Config, not {type(config).__name__}")
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError:
                pass
        set_key(data, str(key), value, f"overrides[{key!r}]")
    section = data.get("data")
    for given, key in zip(frames, ("train_file", "test_file")):  # a frame stands for the file (dlcli.data.memory)
        if given and isinstance(section, dict) and not section.get(key):
            section[key] = "memory:"
    return validate_config(data, source=source)


class _EpochFunctions:
    """Plain functions called with each epoch's metrics dict (a live plot in a notebook), as an engine callback."""

    def __new__(cls, functions):
        from dlcli.engine import Callback

        class Calls(Callback):
            def on_epoch_end(self, trainer, metrics):
                for fn in functions:
                    fn(dict(metrics))

        return Calls()


def _callbacks(callbacks) -> tuple:
    if not callbacks:
        return ()
    functions = [callbacks] if callable(callbacks) else list(callbacks)
    for fn in functions:
        if not callable(fn):
            raise DlcliError(f"callbacks: each must be a function taking the epoch's metrics dict, not {fn!r:.60}")
    return (_EpochFunctions(functions),)


def train(config: Config, overrides: dict | None = None, runs_dir: str | os.PathLike | None = None,
          quiet: bool = False, callbacks: Callable | Iterable[Callable] | None = None, data=None,
          test_data=None) -> "Run":
    """Train the model a config declares (the same run `dlcli train` makes) and return its Run.

    data / test_data: a pandas DataFrame or a pyarrow Table instead of a table config's train_file / test_file
    (the run records their fingerprint; see dlcli.data.memory)."""
    cfg = parse_config(config, overrides, (data is not None, test_data is not None))
    if cfg.train.devices > 1:
        raise DlcliError(f"train.devices {cfg.train.devices}: training in several processes runs from the command "
                         f"line (dlcli train CONFIG --devices {cfg.train.devices})")
    with _interrupts_raised():
        return _train(cfg, runs_dir, quiet, callbacks, data, test_data)


@contextmanager
def _interrupts_raised():
    """A KeyboardInterrupt outside the epochs (they raise TrainingInterrupted themselves) reaches the user as
    TrainingInterrupted too: one exception type for an interrupted train or resume."""
    try:
        yield
    except KeyboardInterrupt:
        from dlcli.errors import TrainingInterrupted

        raise TrainingInterrupted("interrupted (KeyboardInterrupt) outside the training epochs, while reading the "
                                  "data, building the model or scoring the test split: `dlcli runs` shows what "
                                  "was saved", 130) from None


def _train(cfg, runs_dir, quiet, callbacks, data, test_data) -> "Run":
    from dlcli.training import train as run_training

    with _in_memory(cfg, data, test_data):
        if cfg.train.cv:  # the folds, then the refit: its Run (cv.json lists the folds)
            from dlcli.cv import cross_validate
            from dlcli.distributed import SINGLE

            if callbacks:
                raise DlcliError("train.cv: callbacks are not passed to the cross-validation runs; set train.cv to "
                                 "null to train one run with them")
            path = cross_validate(cfg, _root(runs_dir), _console(quiet), not quiet, SINGLE, cfg.train.cv)[-1]
        else:
            path = run_training(cfg, _root(runs_dir), _console(quiet), not quiet, callbacks=_callbacks(callbacks))
    return Run(path)


def load(run: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> "Run":
    """A finished (or interrupted) run: its id, a unique prefix, `latest`, or the path of its directory."""
    from dlcli import rundirs as runs

    path = Path(run)
    if path.is_dir() and (path / "config.yaml").is_file():
        return Run(path)
    return Run(runs.resolve_run(_root(runs_dir), str(run)))


def runs(runs_dir: str | os.PathLike | None = None, where: str | list[str] | None = None) -> list["Run"]:
    """The runs, oldest first; `where` filters as `dlcli runs --where` does (`test_r2>0.8`, `optimizer.lr=0.001`)."""
    from dlcli import rundirs as store
    from dlcli.compare import select

    root = _root(runs_dir)
    found = [(p, store.overview(p)) for p in store.list_runs(root)]
    wheres = [where] if isinstance(where, str) else list(where or [])
    return [Run(p) for p, _ in select(found, wheres, None)]


class Run:
    """One run directory: what it recorded, and its model at work."""

    def __init__(self, path: str | os.PathLike):
        self.dir = Path(path)
        self.id = self.dir.name

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    # ------------------------------------------------------------ what it recorded

    @property
    def config(self) -> dict:
        """The resolved config (config.yaml): every default filled in."""
        from dlcli.config import read_yaml

        return read_yaml(self.dir / "config.yaml")

    @property
    def summary(self) -> dict:
        from dlcli import rundirs as runs

        found = runs.read_object(self.dir / "summary.json")
        return found

    @property
    def status(self) -> str:
        from dlcli import rundirs as runs

        return runs.status(self.dir, self.summary or None)

    @property
    def metrics(self) -> list[dict]:
        """metrics.jsonl: one dict per finished epoch (train_loss, val_loss, the task's metrics, lr, seconds)."""
        from dlcli import rundirs as runs

        return runs.read_metrics(self.dir)

    def metrics_frame(self):
        """The metrics as a pandas DataFrame indexed by epoch (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise DlcliError("metrics_frame needs pandas: pip install pandas (or use Run.metrics)") from None
        return pd.DataFrame(self.metrics).set_index("epoch")

    # ------------------------------------------------------------ its model at work

    def evaluate(self, split: str = "test", checkpoint: str = "best", device: str = "auto", data=None,
                 test_data=None) -> dict:
        """Score a split (the keys of `dlcli evaluate --json`) and write eval-<split>.json and the task's figures.
        data / test_data: the frames of a run trained on in-memory tables."""
        from dlcli.evaluate import evaluate_run

        with _in_memory(self._config(), data, test_data):
            return evaluate_run(self.dir, split, checkpoint, device)

    def predict(self, inputs, top_k: int = 5, checkpoint: str = "best", device: str = "cpu",
                invert: bool = False, conf: float | None = None, iou: float | None = None) -> list[dict]:
        """The task's answer per input, as `dlcli predict --json` gives it: top-k classes, a number per target, a
        set of labels, or (segmentation) per-class pixel shares and the mask as a NumPy uint8 array (height, width)
        of class indices in the picture's own size, or (detection) boxes {label, index, score, box: [x1, y1, x2, y2]}
        in the picture's own pixels, `conf` and `iou` their score and NMS thresholds. Inputs: file paths, PIL images,
        NumPy arrays (an HxW[xC] uint8 image or a batch), torch tensors, a pandas DataFrame, a pyarrow Table or a
        list of dicts (tables), strings (texts)."""
        from dlcli.predict import predict_objects

        return predict_objects(self.loaded(checkpoint, device), inputs, top_k, invert, conf, iou)

    def resume(self, epochs: int | None = None, quiet: bool = False, callbacks=None, data=None,
               test_data=None) -> "Run":
        """Continue the run exactly where it stopped; `epochs` sets a new total."""
        from dlcli.training import resume

        with _interrupts_raised(), _in_memory(self._config(), data, test_data):
            resume(self.dir.parent, self.id, _console(quiet), epochs, not quiet, callbacks=_callbacks(callbacks))
        self.__dict__.pop("model", None)
        return self

    def export(self, format: str = "onnx", path: str | os.PathLike | None = None, checkpoint: str = "best") -> Path:
        """Write the model as one ONNX or TorchScript file (checked against PyTorch); returns its path."""
        from dlcli.export import export_run

        return Path(export_run(self.dir, format, checkpoint, str(path) if path else None).path)

    def loaded(self, checkpoint: str = "best", device: str = "cpu"):
        """The run's model and preprocessing, loaded once per checkpoint and device (dlcli.evaluate.LoadedRun)."""
        from dlcli.loaded import load_run

        cache = self.__dict__.setdefault("_loaded", {})
        if (checkpoint, device) not in cache:
            cache[(checkpoint, device)] = load_run(self.dir, checkpoint, device)
        return cache[(checkpoint, device)]

    @cached_property
    def model(self):
        """The trained network (best checkpoint, CPU, eval mode): raw outputs of preprocessed inputs."""
        return self.loaded().model

    @property
    def preprocess(self):
        """Raw inputs (uint8 images as the dataset stores them, encoded table rows, token ids) -> what `model`
        takes: the run's normalisation (and a backbone's resize)."""
        return self.loaded().normalizer

    def _config(self):
        from dlcli.loaded import read_run_config

        return read_run_config(self.dir)


def _in_memory(cfg, data, test_data):
    from dlcli.data.memory import frames

    return frames(cfg, data, test_data)
