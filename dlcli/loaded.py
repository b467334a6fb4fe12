"""A run at work: its model with the chosen checkpoint's weights, the preprocessing it trained with and its task,
read from the run directory alone. evaluate, predict, export, serve and the Python API's Run all load a run here.

Everything comes from the run directory: the resolved config rebuilds the model, data.json gives the output names,
the normalisation the model trained with (never statistics computed again) and the task's stored fit, and the
checkpoint gives the weights.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlcli import rundirs as runs
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

    def answers(self, x, top_k: int = 5, batch_size: int | None = None, sizes=None) -> list[dict]:
        """The task's answer (predict's JSON object) for every row of raw inputs x; `sizes`: each picture's own
        (height, width), which a spatial task's boxes and masks are mapped back to (the model's input size if None)."""
        out = self.logits(x, batch_size)
        if self.task.spatial:
            return self.task.answers(out, top_k, sizes=sizes)
        return self.task.answers(out, top_k)

    def logits(self, x, batch_size: int | None = None):
        """float32 logits on the CPU for raw inputs x (uint8 images as the dataset stores them, not normalised)."""
        from dlcli.engine import predict_logits

        return predict_logits(self.model, x, self.normalizer, self.device, self.precision,
                              batch_size or self.cfg.train.eval_batch_size, self.channels_last, self.task.shrink)


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
            "normalization": {"mean": mean, "std": std, "image": image, "tokens": tokens, **adapt,
                              **({"series": True} if norm.get("series") else {})}}


def load_run(run: Path, checkpoint: str = "best", device: str = "auto", info: dict | None = None) -> LoadedRun:
    """The run's model with the chosen checkpoint's weights, in eval mode, and the preprocessing it trained with."""
    import torch

    from dlcli.data import Normalizer
    from dlcli.engine import resolve_device, resolve_precision, use_channels_last
    from dlcli.models import build_model
    from dlcli.models.bag import bag_of

    if checkpoint not in ("best", "last"):
        raise DlcliError(f"--checkpoint must be best or last, not '{checkpoint}'")
    cfg = read_run_config(run)
    info = info or read_data_info(run)
    dev = resolve_device(device)
    state, ckpt_path, notice = runs.load_either_checkpoint(run, checkpoint)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    vocab = (info.get("preprocessing") or {}).get("vocab")
    shape = Normalizer(**info["normalization"]).output_shape(info["input_shape"])
    model = bag_of(cfg, lambda: build_model(  # a run that bags its cross-validation folds: their average
        cfg.model, shape, len(info["classes"]), len(vocab) if vocab else None, pretrained=False,
        padded=bool((info.get("preprocessing") or {}).get("padded")),
        outputs=cfg.task.output_shape(len(info["classes"]), shape))[0])
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
    shape = Normalizer(**info["normalization"]).output_shape(info["input_shape"])
    channels_last = use_channels_last(cfg.train.channels_last, model, shape)  # what the run recorded, or the rule
    model = model.to(dev, memory_format=torch.channels_last) if channels_last else model.to(dev)
    model.eval()
    norm = info["normalization"]
    epoch = state.get("epoch")
    task = cfg.task.bind(info["task"], info["classes"], device=dev).use_input(shape)
    return LoadedRun(run, cfg, info["classes"], info["input_shape"], Normalizer(**norm),
                     model, dev, precision, channels_last, ckpt_path, int(epoch) if isinstance(epoch, int) else None,
                     notice, task)


def data_kind(info: dict) -> str:
    """What a run takes as input: image, table, text or sequence (from data.json)."""
    norm = info["normalization"]
    if (info.get("preprocessing") or {}).get("kind") == "sequences":
        return "sequence"
    return "text" if norm.get("tokens") else "image" if norm["image"] else "table"


def check_image_run(info: dict, run_name: str) -> tuple[int, int, int]:
    shape = tuple(info["input_shape"])
    if len(shape) != 3 or not info["normalization"]["image"]:
        raise DlcliError(f"run {run_name} was trained on non-image data of shape {shape}: predict takes images")
    if shape[0] not in (1, 3):
        raise DlcliError(f"run {run_name} takes {shape[0]}-channel images: predict reads grayscale (1) or RGB (3)")
    return shape



# What each kind of run takes, as a user names it: (the model, its inputs, those inputs given to another run, a run).
TAKES = {"image": ("an image model", "image files (PNG, JPEG, ...) or folders of them", "images", "an image run"),
         "table": ("a table model", "rows in CSV or Parquet files", "CSV or Parquet rows", "a table run"),
         "text": ("a text model", "texts, as arguments or one per line of --text-file", "texts", "a text run"),
         "sequence": ("a sequence model", "series in .npz, CSV or Parquet files", "series", "a sequence run")}


def runs_of_kind(root: Path, kind: str) -> list[Path]:
    """The runs under `root` that take `kind` inputs and have a checkpoint to answer with, most recent first."""
    found = []
    for run in reversed(runs.list_runs(root)):
        if not any((run / "checkpoints").glob("*.pt")):
            continue
        try:
            if data_kind(read_data_info(run)) == kind:
                found.append(run)
        except (DlcliError, KeyError, TypeError):  # a damaged run is no suggestion
            continue
    return found


def wrong_kind(run: Path, kind: str, given: str, choose: str = "pass --run with") -> DlcliError:
    """The error for inputs of another kind than the run takes: the run, what it takes, and a run that takes them
    (the most recent one under the same runs directory), or how to get one. choose: how the user picks another
    run in this command ('pass --run with', 'serve')."""
    noun, takes = TAKES[kind][:2] if kind in TAKES else (f"a {kind} model", f"{kind} inputs")
    inputs, other_run = TAKES[given][2:]
    other = runs_of_kind(run.parent, given)
    hint = (f"{choose} {other_run}, e.g. {other[0].name} (the most recent)" if other else
            f"train {other_run} first: none in {run.parent}/ takes them")
    return DlcliError(f"run {run.name} is {noun}: it takes {takes}, not {inputs}; for {inputs}, {hint}", BAD_INPUT)
