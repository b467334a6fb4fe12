"""The tasks: one registry entry per `task:` value, owning everything that depends on what the model answers.

An entry knows how its target is read from a table's columns and fitted on the training split (stored in the run's
data.json), the head's width, the loss and its options, the metrics (their names and which way is better), the
default monitor for best.pt, early stopping, schedulers and sweeps, how an output is decoded into an answer
(predict, serve, export), the evaluate report and its plots, and the headline metric of the runs table.

The engine, evaluate, predict, export and serve ask the run's task; none of them branches on a task's name. Adding a
task is one entry here (a module of this package) and its tests. Importing this package never imports torch.

The runtime half of an entry is `bind(info, names, train_cfg, device, y_train)`: the fitted target info from
data.json (target standardisation, positive weights, thresholds) and the names of the outputs (classes, targets or
labels), as tensors on the device the model runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from dlcli.registry import Entry, ItemError, Registry

TASKS = Registry("task")

from dlcli.tasks.names import HIGHER_IS_BETTER, bare, headline, metric_mode, running_metric, short_name  # noqa: F401


@dataclass
class Targets:
    """What a task read from one table: per row its target, and which rows keep one."""

    y: Any  # numpy: int64 class indices (N,), float32 values (N, T) or 0/1 labels (N, L)
    names: list[str]  # the outputs: class names, target columns or label names
    keep: Any = None  # numpy bool (N,) or None: rows dropped for a missing target (data.missing: drop)
    strata: Any = None  # numpy int64 (N,) or None: the classes a stratified split keeps in proportion
    notes: tuple[str, ...] = ()


# `dlcli data check`'s severities: an error blocks training (a run would fail, or its test score would mean nothing),
# a warning hurts a run without stopping it, an info is worth knowing.
ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass
class TargetFile:
    """One file's targets as `dlcli data check` read them (`Task.survey`), and how to point at its rows."""

    source: str  # the file (or directory of part files)
    targets: Targets
    where: Callable[[int], str]  # a row index -> "file: line N", as training's errors name a row


class ColumnsReader:
    """Target columns read into a float32 (N, columns) block per chunk; a subclass's `read(cells)` gives a chunk's
    (block, rows kept). Rows dropped under data.missing: drop are counted and named in a note."""

    dropped_because = "with a bad target"  # the note's reason

    def __init__(self, columns: list[str], drop: bool):
        self.columns, self.drop = columns, drop
        self.blocks, self.keep, self.dropped = [], [], 0

    def read(self, cells):
        raise NotImplementedError

    def add(self, cells) -> None:
        block, ok = self.read(cells)
        self.blocks.append(block)
        self.keep.append(ok)
        self.dropped += int((~ok).sum())

    def finish(self, source: str, names: list[str] | None = None) -> Targets:
        import numpy as np

        from dlcli.errors import DataError

        if not self.blocks:
            raise DataError(f"{source}: no data rows under the header")
        rows = f"{self.dropped:,} row{'s' if self.dropped != 1 else ''}"
        notes = (f"{source}: {rows} {self.dropped_because} dropped (data.missing: drop)",) if self.dropped else ()
        return Targets(np.concatenate(self.blocks), list(self.columns),
                       np.concatenate(self.keep) if self.dropped else None, None, notes)


class Task(Entry):
    """The base of every task entry. Class attributes describe it; methods do its work (torch inside them)."""

    noun: ClassVar[str] = "outputs"  # what the head's outputs are: classes, targets, labels
    step_metric: ClassVar[str] = ""  # the running training metric (train_<step_metric>), summed per batch
    metrics: ClassVar[tuple[str, ...]] = ()  # what validation and test report besides the loss
    headline: ClassVar[str] = "loss"  # the runs table's test column, the final line's first figure
    default_monitor: ClassVar[str] = "val_loss"
    # train.cv_final: bag: how the fold models' outputs are averaged (dlcli.models.bag): "probabilities" (softmax
    # logits), "values"; None: the task cannot bag
    bag_rule: ClassVar[str | None] = None
    integer_steps: ClassVar[bool] = False  # the running metric sums counts (exact in int64), not values
    export_output_name: ClassVar[str] = "outputs"  # the exported graph's output, named for what it holds
    uses_top_k: ClassVar[bool] = False  # answers rank the outputs, so --top-k and serve's ?top_k= apply
    # Where in the picture: None for answers about a whole input; "boxes" (detection) or "mask" (segmentation) for
    # targets that augmentation moves with the pixels (dlcli.augment.apply_all) and answers that predict maps back
    # to each picture's own pixels (`answers(..., sizes=)`).
    spatial: ClassVar[str | None] = None
    # The mask value where an augmentation leaves no pixel of the picture (a rotation's corners): not scored.
    ignore_index: ClassVar[int] = 255
    # Where a split's raw outputs are too large to hold at once (a class score per pixel), validation and evaluate
    # score it in chunks, summing the task's additive stats, and evaluate's figures see the first `figure_rows`
    # outputs only (dlcli.engine.chunked_stats, `report_stats`). None: the whole split's outputs are kept.
    figure_rows: ClassVar[int | None] = None
    # DDP: how the ranks' stats of a split become the split's: "sum" (added over ranks) or "join" (gathered and
    # joined by `join`, for figures that are no sum over pictures: detection's mAP)
    rank_stats: ClassVar[str] = "sum"

    _spelled: bool = True  # `task:` given in the config (False: classification by default)

    # ------------------------------------------------------------ config

    def monitors(self) -> list[str]:
        """The metric names best.pt, early stopping, a plateau scheduler and a sweep may follow."""
        train = ["train_loss"] + ([f"train_{self.step_metric}"] if self.step_metric else [])
        return train + ["val_loss"] + [f"val_{m}" for m in self.metrics]

    def faithful_loss(self) -> bool:
        """Whether a lower validation loss means a better headline metric. Where it does not (multilabel's positives
        weighted up, or thresholds tuned after training), best.pt and early stopping follow val_<headline>."""
        return True

    def best_monitor(self) -> str:
        """best.pt's monitor when train.checkpoint_monitor is not given."""
        return self.default_monitor if self.faithful_loss() else f"val_{self.headline}"

    def stop_monitor(self) -> str:
        """What `epochs: auto`'s early stopping follows: val_loss, the smoothest figure, where it is faithful."""
        return "val_loss" if self.faithful_loss() else f"val_{self.headline}"

    def check_model(self, model_cfg) -> str | None:
        """What in `model:` cannot answer this task, as `key: why`: a preset made for one task (`for_task`, the
        detector's dense rows) is refused by the others."""
        made_for = getattr(model_cfg, "for_task", None)
        if made_for is not None and made_for != self.entry_name:
            return f"type: a {model_cfg.type} model answers {made_for}, not {self.entry_name}; set task: {made_for}"
        return None

    def check_train(self, train_cfg) -> str | None:
        """What in `train:` this task cannot honour, as `key: why` (the config turns it into an error)."""
        return None

    def label_columns(self, entry) -> list[str]:
        """The table columns that hold the target."""
        columns = entry.label_column
        return list(columns) if isinstance(columns, list) else [columns]

    # ------------------------------------------------------------ the target

    def reader(self, entry, columns: list[str]):
        """A TargetReader for a table: `.add(cells)` per chunk, then `.finish(source, names=None) -> Targets`."""
        raise NotImplementedError

    def fit(self, y_train, names: list[str]) -> dict:
        """What the run stores of its training targets (data.json's `task`), besides the names."""
        return {}

    def bind(self, info: dict, names: list[str], train_cfg=None, device=None, y_train=None) -> "Task":
        """Ready for computing: the stored fit as tensors on `device`. Returns self."""
        self._info, self._names = dict(info or {}), list(names)
        return self

    def use_input(self, input_shape) -> "Task":
        """The shape (no batch axis) the model takes, told by a loaded run: a spatial task maps its answers from it
        back to each picture's own size. Returns self."""
        self._input_shape = tuple(input_shape)
        return self

    @property
    def names(self) -> list[str]:
        return self._names

    # ------------------------------------------------------------ training and scoring

    def output_shape(self, outputs: int, input_shape) -> tuple[int, ...]:
        """The model's output shape (no batch axis) for `outputs` names and an input of `input_shape`: one vector,
        except for a task answering per pixel (segmentation: (classes, height, width))."""
        return (outputs,)

    def criterion(self, out, y, reduction: str = "mean"):
        raise NotImplementedError

    def step_dtype(self):
        import torch

        return torch.long if self.integer_steps else torch.float32

    def step_stat(self, out, y):
        """A device scalar summed over the batch; its mean over the epoch is train_<step_metric>."""
        raise NotImplementedError

    def stats(self, out, y) -> dict:
        """Additive float64 sums over a batch (or a DDP rank's share) from which `scores` gives the metrics."""
        raise NotImplementedError

    def scores(self, stats: dict) -> dict:
        """{"loss": ..., metric: ...} from the sums of `stats` over the whole split."""
        raise NotImplementedError

    def join(self, parts: list[dict]) -> dict:
        """DDP, rank_stats "join": the split's stats from every rank's (in rank order)."""
        raise NotImplementedError

    def tunes(self) -> bool:
        """Whether `tune` decides anything after training."""
        return False

    def tune(self, out, y) -> dict | None:
        """After training, what the best weights' validation outputs decide (multilabel thresholds): stored in
        data.json's `task`; None when nothing is tuned."""
        return None

    def tunes_on_history(self) -> bool:
        """Whether `tune_history` decides anything after training (and after `tune`)."""
        return False

    def tune_history(self, out, y) -> dict | None:
        """After training and `tune`, what the outputs of every training and validation sample decide (a
        forecast's conformal intervals): stored in data.json's `task` beside `tune`'s."""
        return None

    def shrink(self, out):
        """One evaluation batch's raw outputs -> what scoring, evaluate and predict keep of them (applied per batch by
        dlcli.engine.predict_logits before the batches are joined). The identity, except where raw outputs are too
        large to keep for a whole split (detection decodes its dense outputs into a few boxes per picture)."""
        return out

    # ------------------------------------------------------------ using a trained model

    def answers(self, out, top_k: int = 5, sizes=None) -> list[dict]:
        """Each row of outputs as predict's answer (a JSON object). `sizes` (spatial tasks): each input picture's
        own (height, width), to which boxes and masks are mapped back from the model's input size."""
        raise NotImplementedError

    def export_output(self, out):
        """Inside an exported graph: raw outputs -> what the exported model returns."""
        raise NotImplementedError

    def export_meta(self) -> dict:
        """What an exported model's metadata says of its output."""
        raise NotImplementedError

    def report(self, out, y) -> dict:
        """evaluate's metrics of a split: the keys of `evaluate --json`."""
        raise NotImplementedError

    def report_stats(self, stats: dict, y) -> dict:
        """evaluate's metrics from the split's summed `stats` (tasks with `figure_rows`)."""
        raise NotImplementedError

    def plots(self, report: dict, out, y, folder, split: str, title: str) -> dict:
        """Write the report's figures into the run folder; returns {what: path}."""
        return {}

    def draw(self, x, out, y, folder, split: str) -> dict:
        """Figures that need the inputs (evaluate's grid of pictures with true and predicted masks or boxes): written
        into the run folder; returns {what: path}."""
        return {}

    def render_report(self, report: dict, console) -> None:
        raise NotImplementedError

    def render_answer(self, name: str, answer: dict, console) -> None:
        raise NotImplementedError

    def answer_line(self, answer: dict) -> str:
        """One short line of an answer, for the compact view of many inputs."""
        raise NotImplementedError

    def thresholded(self, conf: float | None = None, iou: float | None = None) -> "Task":
        """This task answering with predict's --conf and --iou (detection: the score a box needs, the NMS overlap),
        as a copy; a task without boxes takes neither."""
        if conf is None and iou is None:
            return self
        from dlcli.errors import BAD_INPUT, DlcliError

        raise DlcliError(f"--{'conf' if conf is not None else 'iou'} applies to detection runs; this one is "
                         f"{self.entry_name}", BAD_INPUT)

    def for_python(self, answer: dict) -> dict:
        """An answer as the Python API returns it (Run.predict): the JSON answer, with what NumPy holds better (a
        segmentation mask as an array) in that form."""
        return answer

    def save_answer(self, name: str, answer: dict, folder, source: str | None = None) -> list[str]:
        """`dlcli predict --save FOLDER`: write what an answer draws or holds (a mask PNG, the picture `source` with
        its boxes drawn) for the input `name`; returns the paths written. Tasks whose answers are only JSON write
        nothing."""
        return []

    # ------------------------------------------------------------ dlcli data check

    def survey(self, entry, columns: list[str]):
        """A TargetReader for `dlcli data check`: like `reader`, but it reads on past a row without a usable target
        (marking it in Targets.keep) and refuses nothing, so that `check_targets` can count and explain."""
        return self.reader(entry, columns)

    def check_targets(self, files: dict[str, TargetFile], entry) -> tuple[list[tuple], dict]:
        """What in the targets would hurt a run: ({split: TargetFile} read by `survey`, train first) ->
        ([(severity, check, message[, paths]), ...], the report's sections, e.g. {"targets": {...}})."""
        return [], {}


def unusable_rows(found: TargetFile, entry, check: str, what: str) -> tuple[str, str, str, list[str]]:
    """`dlcli data check`'s finding on the rows whose target a survey could not use (Targets.keep): an error, for
    training stops at the first, unless data.missing: drop skips them. `what`: such a row's target, "with ..."."""
    import numpy as np

    bad = ~found.targets.keep
    n, rows = int(bad.sum()), len(bad)
    if getattr(entry, "missing", "fill") == "drop":
        return WARNING, check, f"{found.source}: {n:,} of {rows:,} rows with {what}: dropped (data.missing: drop)", \
            [found.source]
    fix = "fix them, or set data.missing: drop to skip them" if "missing" in type(entry).model_fields else "fix them"
    return ERROR, check, (f"{found.source}: {n:,} of {rows:,} rows with {what} (the first: "
                          f"{found.where(int(np.flatnonzero(bad)[0]))}): training stops there; {fix}"), [found.source]


class TaskError(ValueError):
    """A config's task is wrong: the message reads `@.key: what` (the config adds `task`)."""


def parse_task(value: Any) -> Task:
    """`task: regression` or `task: {type: regression, loss: huber}` -> the entry; None -> classification by
    default (not spelled out, so a numeric label with many values is refused rather than classified)."""
    spelled = value is not None
    if value is None:
        value = "classification"
    short = isinstance(value, str)
    if isinstance(value, dict):
        if "type" not in value:
            raise TaskError(f"@.type: required key is missing (one of {', '.join(TASKS.names())})")
        name = value["type"]
        if not isinstance(name, str):
            raise TaskError(f"@.type: must be a string naming the task, not {name!r:.40}")
        value = {name: {k: v for k, v in value.items() if k != "type"}}
    elif not isinstance(value, str):
        raise TaskError(f"must be a task name ({', '.join(TASKS.names())}) or a mapping with a `type` key, "
                        f"not {value!r:.60}")
    try:
        task = TASKS.parse(value, path_has_name=False)
    except ItemError as err:
        raise TaskError(f"@{err.where or ('' if short else '.type')}: {err.what}") from None
    task._spelled = spelled
    return task


def task_spec(task: Task) -> dict:
    return {"type": task.entry_name, **task.model_dump(mode="json")}


def task_of(info: dict | None) -> str:
    """The task name a run's data.json records (runs from before tasks: classification)."""
    found = (info or {}).get("task")
    return found.get("type", "classification") if isinstance(found, dict) else "classification"


# The entries register themselves on import.
from dlcli.tasks import classification, detection, forecast, multilabel, regression, segmentation  # noqa: E402,F401
