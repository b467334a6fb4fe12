"""The loggers a config's `track:` names (dlcli.track), as engine callbacks; `train` attaches them on rank 0 alone.

Each logs the epoch's line of metrics.jsonl as it is written and, once the run ends, its test figures. A resumed run
continues what it logged before: the same TensorBoard directory (events after the checkpoint's epoch are purged, so
an epoch trained again is not shown twice), the same MLflow run (its id is kept in the run's tracking.json), and
metrics.csv cut back to the checkpoint's epoch. A logger never fails a run: its first error is one warning line on
stderr, and it logs nothing more.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

from dlcli import rundirs as runs
from dlcli.engine import Callback
RECORD = "tracking.json"  # in the run directory: where its loggers write, so that a resume continues the same runs
SPLIT_METRIC = re.compile(r"^(train|val|test)_(\w+)$")


class Logger(Callback):
    label = "logger"

    def __init__(self, run: Path, entry):
        self.run, self.entry, self.off = run, entry, False

    def _safely(self, fn, *args) -> None:
        if self.off:
            return
        try:
            fn(*args)
        except Exception as err:  # the training matters more than its log
            self.off = True
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            print(f"warning: {self.label}: stopped logging run {self.run.name} ({type(err).__name__}: {first})",
                  file=sys.stderr)

    def on_fit_start(self, trainer):
        self._safely(self.start, trainer)

    def on_epoch_end(self, trainer, metrics):
        self._safely(self.epoch, metrics)

    def on_epoch_start(self, trainer, steps):
        self._safely(self.saved)

    def on_interrupt(self, trainer):
        self._safely(self.saved)

    def on_fit_end(self, trainer):
        self._safely(self.saved)

    def finish_run(self, summary: dict):
        """The run ended (summary.json's status: completed, interrupted, failed); called by dlcli.track.finish."""
        self._safely(self.end, summary)

    def start(self, trainer): ...
    def epoch(self, metrics: dict): ...
    def saved(self): ...  # the last epoch's checkpoint is on disk (the next epoch starts, the fit ends or stops)
    def end(self, summary: dict): ...

    def record(self) -> dict:
        try:
            found = json.loads((self.run / RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def remember(self, **entries) -> None:
        runs.write_json(self.run / RECORD, {**self.record(), **entries})


def numbers(metrics: dict) -> dict[str, float]:
    """The finite numbers of a metrics line, without its epoch."""
    return {k: float(v) for k, v in metrics.items() if k != "epoch" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def resumed(trainer) -> bool:
    return trainer.state.epoch > 0 or trainer.progress is not None


class TensorBoardLogger(Logger):
    """Scalars per epoch in <run>/tensorboard/: `loss/train`, `loss/val`, `accuracy/train`, `accuracy/val`, `lr`,
    `seconds` (and `skipped_batches`), then `loss/test` and `accuracy/test` at the last epoch."""

    label = "tensorboard"

    def tag(self, key: str) -> str:
        match = SPLIT_METRIC.match(key)
        return f"{match[2]}/{match[1]}" if match else key

    def start(self, trainer):
        from torch.utils.tensorboard import SummaryWriter

        again = resumed(trainer)
        # Events at or after the epoch being trained again are hidden: the crash may have come after they were logged.
        self.writer = SummaryWriter(str(self.run / "tensorboard"), purge_step=trainer.state.epoch + 1 if again
                                    else None, flush_secs=30)
        self.last_epoch = trainer.state.epoch
        self.remember(tensorboard={"log_dir": "tensorboard"})
        if self.entry.graph and not again:
            self._safely(self.graph, trainer)

    def graph(self, trainer):
        import torch

        from dlcli.engine import prepare_batch

        x, _ = next(iter(trainer.train_split.batches([torch.arange(min(2, len(trainer.train_split)))],
                                                    trainer.device)))
        x = prepare_batch(x.to(trainer.device), trainer.data.normalizer, trainer.channels_last)
        was_training = trainer.model.training
        trainer.model.eval()
        try:
            with warnings.catch_warnings():  # torch.jit.trace, which add_graph uses, warns that it is deprecated
                warnings.simplefilter("ignore")
                self.writer.add_graph(trainer.model, x)
        finally:
            trainer.model.train(was_training)

    def epoch(self, metrics):
        for key, value in numbers(metrics).items():
            self.writer.add_scalar(self.tag(key), value, metrics["epoch"])
        self.last_epoch = metrics["epoch"]
        self.writer.flush()

    def end(self, summary):
        test = summary.get("test") if summary.get("status") == "completed" else None
        for key, value in (test or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{key}/test", value, self.last_epoch)
        self.writer.close()


def default_tracking_uri(runs_root: Path) -> str:
    return "sqlite:///" + str(runs_root.resolve() / "mlflow.db")


class MLflowLogger(Logger):
    """One MLflow run per dlcli run, named by its id: params flattened from the resolved config (`optimizer.lr`,
    `model.layers.0.conv2d.filters`, ...), tags (`dlcli.run_dir`, and the run's tags.json: sweep, trial, repeat),
    per-epoch metrics under metrics.jsonl's names, and when it ends: `test_loss`, `test_accuracy`, the status, and
    the run directory's files as artifacts (all but checkpoints/last.pt, which only a resume needs).

    MLflow cannot take a point back, so an epoch is sent once its checkpoint is saved; a resumed run first sends the
    checkpointed epochs of metrics.jsonl that the MLflow run lacks (a crash can come between the two)."""

    label = "mlflow"
    pending: dict | None = None

    def start(self, trainer):
        with warnings.catch_warnings():  # MLflow's SQL store on a newer SQLAlchemy warns of its own deprecations
            warnings.simplefilter("ignore")
            self.open(trainer)

    def open(self, trainer):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # database set-up lines on every first use
            logging.getLogger(name).setLevel(logging.WARNING)
        saved = self.record().get("mlflow")
        if isinstance(saved, dict) and saved.get("run_id"):
            self.client = MlflowClient(tracking_uri=saved["tracking_uri"])
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logged = set(self.client.get_run(self.run_id).data.params)
            continuing = True
        else:
            default = default_tracking_uri(self.run.parent)
            uri = self.entry.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default
            self.client = MlflowClient(tracking_uri=uri)
            artifacts = (self.run.parent.resolve() / "mlartifacts").as_uri() if uri == default else None
            experiment = self.experiment(self.entry.experiment or trainer.cfg.name, artifacts)
            tags = {"dlcli.run_id": self.run.name, "dlcli.run_dir": str(self.run.resolve())}
            tags.update({f"dlcli.{k}": str(v) for k, v in runs.read_tags(self.run).items()})
            self.run_id = self.client.create_run(experiment, run_name=self.run.name, tags=tags).info.run_id
            self.remember(mlflow={"tracking_uri": uri, "experiment_id": experiment, "run_id": self.run_id})
            logged, continuing = set(), False
        self.log_params({k: v for k, v in runs.flatten(trainer.cfg.resolved()).items() if k not in logged})
        if continuing:
            sent = [m.step for m in self.client.get_metric_history(self.run_id, "train_loss")]
            for m in runs.read_metrics(self.run):
                if isinstance(m.get("epoch"), int) and max(sent, default=0) < m["epoch"] <= trainer.state.epoch:
                    self.log_metrics(numbers(m), m["epoch"])

    def experiment(self, name: str, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # another process (a sweep's job) created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def epoch(self, metrics):
        self.pending = metrics

    def saved(self):
        if self.pending is not None:
            self.log_metrics(numbers(self.pending), self.pending["epoch"])
            self.pending = None

    def end(self, summary):
        status = summary.get("status", "failed")
        if status == "completed":
            test = {f"test_{k}": v for k, v in (summary.get("test") or {}).items()}
            self.log_metrics(numbers(test), summary.get("epochs_completed") or 0)
            if self.entry.artifacts:
                self.log_files()
        self.client.set_tag(self.run_id, "dlcli.status", status)
        self.client.set_terminated(self.run_id, {"completed": "FINISHED", "interrupted": "KILLED"}.get(status,
                                                                                                       "FAILED"))

    def log_files(self) -> None:
        for path in sorted(self.run.rglob("*")):
            rel = path.relative_to(self.run)
            if not path.is_file() or any(p.startswith(".") for p in rel.parts) or rel == Path("checkpoints/last.pt"):
                continue
            folder = rel.parent.as_posix()
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)


class CSVLogger(Logger):
    """<run>/metrics.csv, one row per epoch with metrics.jsonl's columns."""

    label = "csv"

    def start(self, trainer):
        self.path = self.run / "metrics.csv"
        rows = self.read() if resumed(trainer) else []
        self.write([r for r in rows if _int(r.get("epoch")) <= trainer.state.epoch])

    def read(self) -> list[dict]:
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        except OSError:
            return []

    def write(self, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(k for row in rows for k in row))

        def write(f):
            text = io.StringIO()
            writer = csv.DictWriter(text, columns)
            if columns:
                writer.writeheader()
            writer.writerows(rows)
            f.write(text.getvalue().encode())

        runs.atomic_write(self.path, write)

    def epoch(self, metrics):
        rows = self.read()
        columns = list(rows[0]) if rows else []
        if not rows or set(metrics) - set(columns):  # the first row, or a new column: write the file anew
            self.write([*rows, metrics])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, columns).writerow(metrics)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

