"""`track:` where a run reports besides its own directory: TensorBoard event files, an MLflow run, a CSV file.

    track: [tensorboard, mlflow, csv]
    track: [{tensorboard: {graph: true}}, {mlflow: {experiment: fashion, tracking_uri: http://mlflow:5000}}]

Each name is a registry entry whose fields are its YAML arguments (no torch, no tensorboard, no mlflow imported
here: validating a config needs none of them); `callback` builds the engine callback that does the logging
(dlcli.loggers). `train` checks the extras are installed before a run exists (`require`), attaches the loggers on
rank 0 alone (`attach`), and tells them how the run ended, with its test figures (`finish`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from dlcli.errors import DlcliError
from dlcli.registry import Entry, Registry

TRACKERS = Registry("logger")


class Tracker(Entry):
    modules: ClassVar[tuple[str, ...]] = ()  # what the logger imports, from the extra of the same name

    def callback(self, run: Path):
        raise NotImplementedError


@TRACKERS.register("tensorboard")
class TensorBoard(Tracker):
    """Event files in <run>/tensorboard/: `tensorboard --logdir runs` shows every run."""

    modules: ClassVar[tuple[str, ...]] = ("tensorboard",)
    graph: bool = Field(False, description="also trace the model's graph once, at the start")

    def callback(self, run):
        from dlcli.loggers import TensorBoardLogger

        return TensorBoardLogger(run, self)


@TRACKERS.register("mlflow")
class MLflow(Tracker):
    """A run in an MLflow tracking store: the config as params, per-epoch metrics, test figures, the run's files."""

    modules: ClassVar[tuple[str, ...]] = ("mlflow",)
    experiment: str | None = Field(None, description="the MLflow experiment; default: the config's name")
    tracking_uri: str | None = Field(None, description="the tracking store; default: $MLFLOW_TRACKING_URI, else "
                                                       "sqlite:///<runs dir>/mlflow.db")
    artifacts: bool = Field(True, description="copy the run directory's files (all but checkpoints/last.pt) when "
                                              "it completes")

    def callback(self, run):
        from dlcli.loggers import MLflowLogger

        return MLflowLogger(run, self)


@TRACKERS.register("csv")
class CSV(Tracker):
    """<run>/metrics.csv: metrics.jsonl as a table, one row per epoch (spreadsheets, pandas)."""

    def callback(self, run):
        from dlcli.loggers import CSVLogger

        return CSVLogger(run, self)


def require(trackers) -> None:
    """One line naming the extra to install, before any run directory exists."""
    for tracker in trackers:
        for module in tracker.modules:
            if importlib.util.find_spec(module) is None:
                raise DlcliError(f"track: {tracker.entry_name} needs the {module} package: "
                                 f"pip install \"dlcli[{tracker.entry_name}]\"")


def attach(trackers, run: Path) -> list:
    """The loggers' callbacks for a run (rank 0 only: the caller decides)."""
    return [tracker.callback(run) for tracker in trackers]


def finish(callbacks, summary: dict) -> None:
    """Tell the loggers among `callbacks` how the run ended (summary.json's status, test figures); never raises."""
    for cb in callbacks:
        end = getattr(cb, "finish_run", None)
        if end is not None:
            end(summary)


def items_schema() -> dict:
    """The JSON Schema of a `track:` item: a name, or `{name: {arguments}}`."""
    forms = {}
    for name, cls in sorted(TRACKERS.entries.items()):
        schema = cls.model_json_schema()
        props = {k: {f: v for f, v in p.items() if f != "title"} for k, p in schema.get("properties", {}).items()}
        forms[name] = {"anyOf": [{"type": "object", "properties": props, "additionalProperties": False},
                                 {"type": "null"}]}
    return {"anyOf": [{"type": "string", "enum": sorted(TRACKERS.entries)},
                      {"type": "object", "properties": forms, "additionalProperties": False,
                       "minProperties": 1, "maxProperties": 1}]}
