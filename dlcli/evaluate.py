"""`dlcli evaluate`: a run's checkpoint scored on its test or validation split.

Everything comes from the run directory: the resolved config rebuilds the model and the split (same dataset, seed
and val_split, so the same samples), data.json gives the class names and the normalisation the model trained with
(never statistics computed again), and the checkpoint gives the weights. `load_run` is shared with `dlcli predict`,
so both feed the model exactly the same way.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlcli import runs
from dlcli.errors import BAD_INPUT, RUNTIME, DlcliError


@dataclass
class LoadedRun:
    path: Path
    cfg: Any  # dlcli.config.Config
    classes: list[str]
    input_shape: tuple[int, ...]
    normalizer: Any  # dlcli.data.Normalizer
    model: Any  # torch.nn.Module, in eval mode on `device`
    device: Any
    precision: str
    channels_last: bool
    checkpoint: Path
    epoch: int | None
    notice: str | None = None  # the other checkpoint was used: the one asked for is missing or damaged
    task: Any = None  # dlcli.tasks entry bound to the run's stored target fit: reads the outputs

    def answers(self, x, top_k: int = 5, batch_size: int | None = None) -> list[dict]:
        """The task's answer (predict's JSON object) for every row of raw inputs x."""
        return self.task.answers(self.logits(x, batch_size), top_k)

    def logits(self, x, batch_size: int | None = None):
        """float32 logits on the CPU for raw inputs x (uint8 images as the dataset stores them, not normalised)."""
        from dlcli.engine import predict_logits

        return predict_logits(self.model, x, self.normalizer, self.device, self.precision,
                              batch_size or self.cfg.train.eval_batch_size, self.channels_last)


def read_run_config(run: Path):
    from dlcli.config import validate_config

    path = run / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DlcliError(f"{path} is missing: the run is incomplete", RUNTIME) from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise DlcliError(f"{path}: damaged YAML", RUNTIME) from None
    if not isinstance(data, dict):
        raise DlcliError(f"{path}: damaged (not a mapping)", RUNTIME)
    try:
        return validate_config(data, source=str(path), legacy=True)
    except DlcliError as err:
        raise DlcliError(f"{err} (the run's config does not validate with this dlcli version)", RUNTIME) from None


def read_data_info(run: Path) -> dict:
    """data.json, checked: classes, input_shape and normalization {mean, std, image}."""
    path = run / "data.json"
    info = runs.read_json(path)
    try:
        classes = [str(c) for c in info["classes"]]
        shape = tuple(int(d) for d in info["input_shape"])
        norm = info["normalization"]
        mean, std, image = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]], bool(norm["image"])
    except (KeyError, TypeError, ValueError):
        raise DlcliError(f"{path}: damaged (needs classes, input_shape and normalization {{mean, std, image}})",
                         RUNTIME) from None
    if not classes or not shape or not mean or len(mean) != len(std):
        raise DlcliError(f"{path}: damaged (empty classes, shape or statistics)", RUNTIME)
    tokens = bool(norm.get("tokens", False))
    try:  # a pretrained backbone's input pipeline: grayscale repeated to `channels`, resized to `size`
        adapt = {k: (int(norm[k]) if k == "channels" else [int(v) for v in norm[k]]) for k in ("channels", "size")
                 if norm.get(k) is not None}
    except (TypeError, ValueError):
        raise DlcliError(f"{path}: damaged (normalization channels or size)", RUNTIME) from None
    preprocessing = info.get("preprocessing")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise DlcliError(f"{path}: damaged (preprocessing is not a mapping)", RUNTIME)
    task = info.get("task", {"type": "classification"})  # runs from before tasks classified
    if not isinstance(task, dict):
        raise DlcliError(f"{path}: damaged (task is not a mapping)", RUNTIME)
    return {"classes": classes, "input_shape": shape, "preprocessing": preprocessing, "task": task,
            "normalization": {"mean": mean, "std": std, "image": image, "tokens": tokens, **adapt}}


def load_run(run: Path, checkpoint: str = "best", device: str = "auto", info: dict | None = None) -> LoadedRun:
    """The run's model with the chosen checkpoint's weights, in eval mode, and the preprocessing it trained with."""
    import torch

    from dlcli.data import Normalizer
    from dlcli.engine import resolve_device, resolve_precision
    from dlcli.models import build_model

    if checkpoint not in ("best", "last"):
        raise DlcliError(f"--checkpoint must be best or last, not '{checkpoint}'")
    cfg = read_run_config(run)
    info = info or read_data_info(run)
    dev = resolve_device(device)
    state, ckpt_path, notice = runs.load_either_checkpoint(run, checkpoint)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    vocab = (info.get("preprocessing") or {}).get("vocab")
    model, _ = build_model(cfg.model, Normalizer(**info["normalization"]).output_shape(info["input_shape"]),
                           len(info["classes"]), len(vocab) if vocab else None, pretrained=False)
    weights = OrderedDict((k.removeprefix("_orig_mod."), v) for k, v in state["model"].items())  # torch.compile'd
    weights._metadata = getattr(state["model"], "_metadata", None)  # module versions (MNASNet loads by its own)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise DlcliError(f"{ckpt_path}: the weights do not fit the model in config.yaml ({first[:160]})",
                         RUNTIME) from None
    try:
        precision = resolve_precision(cfg.train.precision, dev, model, scoring=True)
    except DlcliError:
        precision = "32"
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    channels_last = has_conv if cfg.train.channels_last == "auto" else bool(cfg.train.channels_last)
    model = model.to(dev, memory_format=torch.channels_last) if channels_last else model.to(dev)
    model.eval()
    norm = info["normalization"]
    epoch = state.get("epoch")
    task = cfg.task.bind(info["task"], info["classes"], device=dev)
    return LoadedRun(run, cfg, info["classes"], info["input_shape"], Normalizer(**norm),
                     model, dev, precision, channels_last, ckpt_path, int(epoch) if isinstance(epoch, int) else None,
                     notice, task)


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
    outputs = loaded.logits(samples.x)
    task = loaded.task
    report = {"run_id": run.name, "split": split, "checkpoint": checkpoint, "checkpoint_epoch": loaded.epoch,
              "dataset": loaded.cfg.data.dataset, "task": task.entry_name, **task.report(outputs, samples.y)}
    json_path = run / f"eval-{split}.json"
    figures = task.plots(report, outputs, samples.y, run, split, f"{run.name}: {split} split, {checkpoint} checkpoint")
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
    console.print(f"run {report['run_id']}: {report['dataset']} {report['split']} split, {report['samples']:,} "
                  f"samples, {report['checkpoint']} checkpoint{epoch}", soft_wrap=True)
    TASKS.entries[report.get("task", "classification")]().render_report(report, console)
    files = report["files"]
    figures = [v for k, v in files.items() if k != "report"]
    console.print(f"wrote {' and '.join([files['report'], *figures])}", soft_wrap=True)
