"""`dlcli evaluate`: a run's checkpoint scored on its test or validation split.

The run is loaded by dlcli.loaded (as predict, export and serve load it, so all feed the model the same way); the
split is rebuilt from the resolved config (same dataset, seed and val_split, so the same samples) and the run's task
reports on it.
"""

from __future__ import annotations

from pathlib import Path

from dlcli import rundirs as runs
from dlcli.errors import BAD_INPUT, RUNTIME, DlcliError
from dlcli.loaded import LoadedRun, load_run, read_data_info


def rebuild_split(loaded: LoadedRun, split: str):
    """The run's test or validation samples, drawn again from its dataset with its seed and val_split."""
    from dlcli.data import load_data

    if split not in ("test", "val"):
        raise DlcliError(f"--split must be test or val, not '{split}'")
    data = load_data(loaded.cfg, preprocessing=read_data_info(loaded.path).get("preprocessing"))
    if split == "val" and data.val is None:
        raise DlcliError(f"run {loaded.path.name} was trained with data.val_split 0: it has no validation split "
                         "(use --split test)", BAD_INPUT)
    if len(data.classes) != len(loaded.classes) or tuple(data.input_shape) != tuple(loaded.input_shape):
        raise DlcliError(f"{loaded.cfg.data.dataset} now gives {len(data.classes)} classes of shape "
                         f"{tuple(data.input_shape)}, but the run trained on {len(loaded.classes)} of shape "
                         f"{tuple(loaded.input_shape)}", RUNTIME)
    return data.val if split == "val" else data.test


def evaluate_run(run: Path, split: str = "test", checkpoint: str = "best", device: str = "auto") -> dict:
    """Score the run, write eval-<split>.json and the task's figures (a confusion matrix, predicted against
    actual, ...) into it, and return the report."""
    loaded = load_run(run, checkpoint, device)
    samples = rebuild_split(loaded, split)
    task = loaded.task
    x, y = samples.x, samples.y
    if task.figure_rows is None:
        outputs = loaded.logits(x)
        scored = task.report(outputs, y)
    else:  # scored batch by batch; the figures see the first rows' outputs
        from dlcli.engine import chunked_stats

        scored = task.report_stats(chunked_stats(task, loaded.model, x, y, loaded.normalizer, loaded.device,
                                                 loaded.precision, loaded.cfg.train.eval_batch_size,
                                                 loaded.channels_last), y)
        x, y = x[:task.figure_rows], y[:task.figure_rows]
        outputs = loaded.logits(x)
    report = {"run_id": run.name, "split": split, "checkpoint": checkpoint, "checkpoint_epoch": loaded.epoch,
              "dataset": loaded.cfg.data.dataset, "task": task.entry_name, **scored}
    json_path = run / f"eval-{split}.json"
    figures = task.plots(report, outputs, y, run, split, f"{run.name}: {split} split, {checkpoint} checkpoint")
    figures.update(task.draw(x, outputs, y, run, split))  # pictures with masks or boxes drawn
    report["files"] = {"report": str(json_path), **figures}
    try:
        runs.write_json(json_path, report)
    except OSError as err:
        raise DlcliError(f"could not write {json_path} ({err.strerror or err})", RUNTIME) from None
    return report


def render(report: dict, console) -> None:
    """The report as rich tables: overall metrics, per-class scores, confusion matrix (up to 20 classes)."""
    from dlcli.tasks import TASKS

    epoch = f" (epoch {report['checkpoint_epoch']})" if report.get("checkpoint_epoch") is not None else ""
    n = report["samples"]
    console.print(f"run {report['run_id']}: {report['dataset']} {report['split']} split, {n:,} "
                  f"sample{'' if n == 1 else 's'}, {report['checkpoint']} checkpoint{epoch}", soft_wrap=True)
    TASKS.entries[report.get("task", "classification")]().render_report(report, console)
    files = report["files"]
    figures = [v for k, v in files.items() if k != "report"]
    console.print(f"wrote {' and '.join([files['report'], *figures])}", soft_wrap=True)
