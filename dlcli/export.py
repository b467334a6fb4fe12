"""`dlcli export`: a run's model as one ONNX or TorchScript file that takes what a user has and returns its task's
answer as numbers: class probabilities (classification), values in the targets' own units (regression) or per-label
probabilities (multilabel): the graph ends in the task entry's `export_output` (dlcli.tasks).

The exported graph is the trained model wrapped with the run's preprocessing that can live inside a graph:

  images  uint8 (N, H, W, C) with layout nhwc (what PIL, NumPy and OpenCV give) or (N, C, H, W) with nchw, already
          decoded, converted to the run's channels and resized to its H x W (the steps of dlcli/data/images.py that
          need a decoder); inside: the layout, the run's normalisation, the model, the task's output.
          (`synthetic` runs trained on float32 images, so their graphs take float32.)
  tables  float32 (N, F): the row encoding of `dlcli predict` (numeric columns as they are, gaps filled with the
          training mean; categorical columns one-hot with a last slot for missing or unseen values), described in
          `<name>.columns.json` beside the model; inside: the standardisation, the model, the task's output.
  text    int64 token ids (N, max_length), padded with 0, looked up in `<name>.vocab.json` beside the model (the
          vocabulary, the tokenizer's pattern and case rule, max_length); inside: the model, the task's output.
  series  a forecast run: float32 windows (N, lookback, channels) of a series' last steps in its own units, with
          `series_mean` and `series_std` (N, channels), the series' scaling (each trained series' in
          `<name>.series.json` beside the model, with the rule for a new one); inside: the scaling, the window
          normalisation, the model, the base it corrects; out: the forecast (N, horizon, targets) in the targets'
          units (dlcli.data.series.window_model).

The batch axis is dynamic. The task, its output's name and shape, what the task says of it (`export_meta`: class,
target or label names, multilabel thresholds), the input's layout, dtype and shape, and the run id go into the file's
metadata (ONNX `metadata_props`, TorchScript `_extra_files["dlcli.json"]`); `read_metadata` reads either back.

Packed sequences do not export, so an LSTM that reads (vectors, lengths) from an embedding is rewritten for the
export as plain LSTM passes over the padded batch, the backward direction over each sequence reversed within its own
length, read at each sequence's last real step: the same numbers without packing.

Every export checks itself: the written file, run by onnxruntime or torch.jit.load, must give what the PyTorch model
and the task's `export_output` give on a batch of the run's own test samples (and on one of them alone) within a
tolerance, relative where an output is over 1 in size (a regression's values in their own units: float32 keeps about
seven digits of a price, whatever its scale).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from dlcli.errors import BAD_INPUT, RUNTIME, DlcliError
from dlcli.registry import Entry, Registry

FORMATS = Registry("export format")
INPUT_NAME = "input"  # the output is named by the task (export_output_name)
CHECK_SAMPLES = 64
METADATA_FILE = "dlcli.json"  # TorchScript's _extra_files entry
# ONNX metadata values stored as JSON: these, and every list or mapping (a task's names and thresholds), which no
# plain string value starts like
JSON_KEYS = ("classes", "input_shape", "output_shape", "checkpoint_epoch", "input_features", "lookback", "horizon",
             "season")


class ExportFormat(Entry):
    suffix: ClassVar[str] = ""
    extra: ClassVar[str] = "export"

    def write(self, module, example, path: Path, metadata: dict) -> None:
        raise NotImplementedError

    def runner(self, path: Path):
        """A function numpy input -> numpy outputs, running the written file as a user would."""
        raise NotImplementedError

    def read_metadata(self, path: Path) -> dict:
        raise NotImplementedError


def _quietly():
    """The exporters' progress lines and tracer warnings are not the user's business."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _missing(what: str) -> DlcliError:
    return DlcliError(f"exporting needs {what}: pip install \"dlcli[export]\"", BAD_INPUT)


@FORMATS.register("onnx")
class Onnx(ExportFormat):
    """ONNX through torch's exporter (torch.export + onnxscript); checked and run with onnxruntime."""

    suffix: ClassVar[str] = ".onnx"

    def write(self, module, example, path, metadata):
        import torch

        try:
            import onnx
            import onnxscript  # noqa: F401 (torch's exporter needs it)
        except ImportError:
            raise _missing("onnx and onnxscript") from None
        batch = torch.export.Dim("batch", min=1)
        inputs = example if isinstance(example, tuple) else (example,)  # a forecast: the window and its scaling
        with _quietly():
            program = torch.onnx.export(module, inputs, input_names=[INPUT_NAME, *metadata.get("scaling_inputs", [])],
                                        output_names=[metadata["output_name"]],
                                        dynamic_shapes=tuple({0: batch} for _ in inputs), dynamo=True, verbose=False)
        model = program.model_proto
        del model.metadata_props[:]
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
        onnx.save_model(model, str(path))

    def runner(self, path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise _missing("onnxruntime") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: session.run(None, dict(zip(names, xs)))[0]

    def read_metadata(self, path):
        import onnx

        props = {p.key: p.value for p in onnx.load_model(str(path), load_external_data=False).metadata_props}
        return {k: json.loads(v) if k in JSON_KEYS or v.startswith(("[", "{")) else v for k, v in props.items()}


@FORMATS.register("torchscript")
class TorchScript(ExportFormat):
    """TorchScript by tracing; loads with torch.jit.load in Python or LibTorch (C++), without dlcli."""

    suffix: ClassVar[str] = ".pt"

    def write(self, module, example, path, metadata):
        import torch

        with _quietly(), torch.no_grad():  # recent torch warns that torch.jit is deprecated, per call
            traced = torch.jit.trace(module, example if isinstance(example, tuple) else (example,), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})

    def runner(self, path):
        import torch

        with _quietly():
            model = torch.jit.load(str(path), map_location="cpu")

        def run(*xs):
            with torch.no_grad():
                return model(*(torch.from_numpy(x) for x in xs)).numpy()

        return run

    def read_metadata(self, path):
        import torch

        files = {METADATA_FILE: ""}
        with _quietly():
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files[METADATA_FILE])


def export_format(name: str) -> ExportFormat:
    from dlcli.registry import ItemError

    try:
        return FORMATS.parse(name)
    except ItemError as err:
        raise DlcliError(f"--format: {err.what}", BAD_INPUT) from None


def format_for(path: Path) -> ExportFormat:
    """The format of an exported file, by its suffix (.onnx, else TorchScript)."""
    return FORMATS.entries["onnx" if Path(path).suffix == ".onnx" else "torchscript"]()


def read_metadata(path) -> dict:
    """The dlcli metadata of an exported file: task, output_name, classes (targets, labels), run_id, data_kind,
    input_layout, input_dtype, ..."""
    return format_for(Path(path)).read_metadata(Path(path))


# ---------------------------------------------------------------- the graph


def _raw_input_model(model, normalizer, layout: str | None, task):
    """task.export_output(model(normalise(raw))), with the image layout turned inside; buffers instead of a
    Normalizer so the statistics are constants of the graph (the task's own, a regression's mean and std, are traced
    in as constants)."""
    import torch
    from torch import nn

    class RawInputModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.nhwc = layout == "nhwc"
            self.tokens = bool(normalizer.tokens)
            shape = (1, -1, 1, 1) if normalizer.image else (1, -1)
            self.register_buffer("mean", torch.tensor(normalizer.mean, dtype=torch.float32).view(shape))
            self.register_buffer("inv_std", 1.0 / torch.tensor(normalizer.std, dtype=torch.float32).view(shape))

        def forward(self, x):
            if self.nhwc:
                x = x.permute(0, 3, 1, 2)
            if not self.tokens:
                x = x.float()
                # a pretrained backbone's input pipeline (dlcli.data.Normalizer): its size, then its channels; the
                # input's height, width and channels are fixed, so these are settled when the graph is traced
                if normalizer.size is not None and tuple(x.shape[-2:]) != tuple(normalizer.size):
                    x = nn.functional.interpolate(x, size=tuple(normalizer.size), mode="bilinear", antialias=True)
                if normalizer.channels is not None and x.shape[1] != normalizer.channels:
                    x = x.expand(-1, normalizer.channels, -1, -1)
                if getattr(normalizer, "series", False):  # numeric sequences z-normalised one by one (UCR)
                    from dlcli.data.bundle import series_znorm

                    x = series_znorm(x)
                x = (x - self.mean) * self.inv_std
            return task.export_output(self.model(x))

    return RawInputModel().eval()


def _unpacked_lstm(block):
    """An LSTM or GRU block that reads (vectors, lengths) without PackedSequence (which no exporter takes)."""
    import torch
    from torch import nn

    lstm = block.rnn  # nn.LSTM or nn.GRU: the same weight names, one pass per layer and direction
    dirs = 2 if lstm.bidirectional else 1

    class UnpackedLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.dirs, self.layers = block, dirs, lstm.num_layers
            self.return_sequences = block.return_sequences
            self.passes = nn.ModuleList()
            for k in range(lstm.num_layers):
                for d in range(dirs):
                    one = type(lstm)(lstm.input_size if k == 0 else lstm.hidden_size * dirs, lstm.hidden_size,
                                     batch_first=True)
                    tail = f"_l{k}" + ("_reverse" if d else "")
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        if hasattr(lstm, name + tail):
                            setattr(one, name + "_l0", nn.Parameter(getattr(lstm, name + tail).detach().clone()))
                    self.passes.append(one)

        def forward(self, x):
            if not isinstance(x, tuple):
                return self.block(x)
            x, lengths = x
            used = lengths.clamp_min(1)  # as the packed path: an empty text reads one (padding) step
            steps = torch.arange(x.shape[1], device=x.device)[None, :]
            inside = steps < used[:, None]
            # position t of a sequence reversed within its length (padding stays where it is); its own inverse
            flip = torch.where(inside, used[:, None] - 1 - steps, steps)
            last = (used - 1).view(-1, 1, 1)
            finals = []
            for k in range(self.layers):
                outputs, finals = [], []
                for d in range(self.dirs):
                    seq = x if d == 0 else x.gather(1, flip.unsqueeze(2).expand(-1, -1, x.shape[2]))
                    out, _ = self.passes[k * self.dirs + d](seq)
                    finals.append(out.gather(1, last.expand(-1, 1, out.shape[2])).squeeze(1))
                    if d:
                        out = out.gather(1, flip.unsqueeze(2).expand(-1, -1, out.shape[2]))
                    outputs.append(out)
                x = torch.cat(outputs, 2) if self.dirs == 2 else outputs[0]
            if self.return_sequences:
                return x * inside.unsqueeze(2).to(x.dtype), lengths
            return torch.cat(finals, 1) if self.dirs == 2 else finals[0]

    return UnpackedLSTM()


def exportable(model):
    """A copy of the model with every LSTM and GRU block able to run unpacked; the original is untouched."""
    import copy

    import torch

    from dlcli.models.modules import RecurrentBlock

    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).cpu().eval()

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, RecurrentBlock):
                setattr(parent, name, _unpacked_lstm(child))
            else:
                swap(child)

    swap(model)
    return model


# ---------------------------------------------------------------- the run's inputs


def _check_inputs(loaded, info: dict, kind: str, limit: int, say):
    """Up to `limit` of the run's test samples (raw, as the dataset stores them); random inputs of the right form
    when the run's data cannot be read here (a note says so)."""
    import torch

    from dlcli.evaluate import rebuild_split

    try:
        split = rebuild_split(loaded, "test")
        x = split.x[:limit] if hasattr(split.x, "dtype") else split.sample(limit, 0)
        if len(x):
            return x, f"{len(x)} test samples"
        reason = "its test split is empty"
    except (DlcliError, OSError) as err:
        reason = str(err)
    say(f"note: the run's data cannot be read here ({reason}); checking on {limit} random inputs instead")
    g = torch.Generator().manual_seed(0)
    shape = (limit, *loaded.input_shape)
    if kind == "text":
        vocab = len((info.get("preprocessing") or {}).get("vocab") or [0, 1])
        x = torch.randint(2, max(3, vocab), shape, generator=g)
        x[:, shape[1] // 2:] = 0  # padded like real texts
        return x, f"{limit} random token sequences"
    if kind == "image" and loaded.cfg.data.dataset != "synthetic":
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8), f"{limit} random images"
    return torch.randn(shape, generator=g), f"{limit} random inputs"


@dataclass
class ExportResult:
    path: Path
    format: str
    metadata: dict
    max_difference: float
    checked_on: str
    sidecar: Path | None


def default_output(run: Path, fmt: ExportFormat) -> Path:
    return run / "export" / f"model{fmt.suffix}"


def export_run(run: Path, fmt: str = "onnx", checkpoint: str = "best", output: str | None = None,
               layout: str = "nhwc", tolerance: float = 1e-4, say=print) -> ExportResult:
    """Write the run's model as `fmt` to `output` (default: RUN/export/model.onnx or .pt), check it, return what
    was written. say(line) reports notes."""
    import numpy as np

    from dlcli import __version__
    from dlcli.loaded import data_kind, load_run, read_data_info

    entry = export_format(fmt)
    if layout not in ("nhwc", "nchw"):
        raise DlcliError(f"--layout must be nhwc or nchw, not '{layout}'", BAD_INPUT)
    if not tolerance > 0:
        raise DlcliError(f"--tolerance must be positive, not {tolerance}", BAD_INPUT)
    info = read_data_info(run)
    kind = data_kind(info)
    if (info.get("preprocessing") or {}).get("kind") == "series":  # a forecast: a window in, the horizon out
        kind = "series"
    loaded = load_run(run, checkpoint, "cpu", info=info)
    path = Path(output) if output else default_output(run, entry)
    if path.is_dir():
        path = path / f"model{entry.suffix}"

    if kind == "series":
        module, inputs, reference, checked_on = _forecast_graph(loaded, info, CHECK_SAMPLES, say)
    else:
        module, inputs, reference, checked_on = _input_graph(loaded, info, kind, layout, say)
    as_input = inputs[0]  # the first input names the file's shape and dtype; a forecast's scaling inputs follow
    example = tuple(x[:2] if len(x) >= 2 else x.repeat(2, *[1] * (x.dim() - 1)) for x in inputs)
    sidecar = None
    metadata = _metadata(run, loaded.task, info, kind, layout, as_input, loaded.checkpoint.stem, loaded.epoch,
                         __version__)
    if kind == "series":  # the window's length and channels, the scaling inputs, the horizon's shape and spacing
        from dlcli.data.series import export_description

        metadata.update(export_description(loaded.cfg.data, info["preprocessing"])[0])
        metadata["output_shape"] = [-1, *reference.shape[1:]]
    if kind in ("table", "text", "series"):
        sidecar = path.with_name(path.stem + {"text": ".vocab.json", "table": ".columns.json",
                                              "series": ".series.json"}[kind])
        metadata["preprocessing_file"] = sidecar.name

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        try:
            entry.write(module, example, partial, metadata)
        except DlcliError:
            raise
        except Exception as err:  # an exporter's failure: one line naming the format, the traceback with --debug
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise DlcliError(f"{fmt} export of run {run.name} failed: {first}", RUNTIME) from err
        run_exported = entry.runner(partial)
        values = [x.numpy() for x in inputs]
        got = run_exported(*values)
        one = run_exported(*(v[:1] for v in values))  # the batch axis is dynamic: one sample alone gives the same
        if got.shape != reference.shape or one.shape != reference[:1].shape:
            raise DlcliError(f"the exported {fmt} model gives shape {got.shape} for a batch of {len(values[0])} "
                             f"(expected {reference.shape})", RUNTIME)
        scale = np.maximum(1.0, np.abs(reference))  # probabilities: absolute; larger values: relative
        diff = float(max((np.abs(got - reference) / scale).max(), (np.abs(one - reference[:1]) / scale[:1]).max()))
        if not diff <= tolerance:
            raise DlcliError(f"the exported {fmt} model differs from the PyTorch model by up to {diff:.3g} on "
                             f"{checked_on} (tolerance {tolerance:g}): not written", RUNTIME)
        if sidecar is not None:
            from dlcli import rundirs as runs

            runs.write_json(sidecar, _preprocessing_file(loaded, info, kind))  # a failure is one line naming it
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(path, fmt, metadata, diff, checked_on, sidecar)


def _input_graph(loaded, info: dict, kind: str, layout: str, say):
    """(module, its inputs, the PyTorch model's answers to them, what they are) for a run whose samples go through
    the model one by one: images, rows, texts, sequences."""
    import torch

    raw, checked_on = _check_inputs(loaded, info, kind, CHECK_SAMPLES, say)
    reference = loaded.task.export_output(loaded.logits(raw)).numpy()
    as_input = raw.permute(0, 2, 3, 1).contiguous() if kind == "image" and layout == "nhwc" else raw.contiguous()
    if kind == "image":
        as_input = as_input if as_input.dtype == torch.uint8 else as_input.float()
    elif kind in ("table", "sequence"):
        as_input = as_input.float()
    else:
        as_input = as_input.long()

    module = _raw_input_model(exportable(loaded.model), loaded.normalizer, layout if kind == "image" else None,
                              loaded.task)
    return module, (as_input,), reference, checked_on


def _forecast_graph(loaded, info: dict, limit: int, say):
    """(module, its inputs: windows in the series' units and their series' scaling, the forecasts predict's path
    makes of the same windows, what they are) for a forecast run (dlcli.data.series.window_model)."""
    import torch

    from dlcli.data.series import Frequency, window_inputs, window_length, window_model
    from dlcli.evaluate import rebuild_split

    entry = loaded.cfg.data
    season = Frequency.from_dict(info["preprocessing"]["frequency"]).season
    module = window_model(exportable(loaded.model), loaded.task, entry, season)
    try:
        split = rebuild_split(loaded, "test")
        if len(split):
            inputs, y = window_inputs(split, limit)
            with torch.no_grad():
                reference = loaded.task.exported(loaded.logits(split.store.x(split.origin[:limit],
                                                                              split.series[:limit])), y)
            return module, inputs, reference.numpy(), f"{len(y)} test windows"
        reason = "its test split is empty"
    except (DlcliError, OSError) as err:
        reason = str(err)
    say(f"note: the run's data cannot be read here ({reason}); checking on {limit} random windows instead")
    g = torch.Generator().manual_seed(0)
    channels = len(info["preprocessing"]["channels"])
    inputs = (torch.randn((limit, window_length(entry), channels), generator=g) * 3 + 10,
              torch.full((limit, channels), 10.0), torch.full((limit, channels), 3.0))
    with torch.no_grad():
        reference = module(*inputs)
    return module, inputs, reference.numpy(), f"{limit} random windows"


def _metadata(run: Path, task, info: dict, kind: str, layout: str, x, checkpoint: str, epoch, version: str) -> dict:
    shape = [-1, *x.shape[1:]]  # -1: any batch size
    meta = {
        "producer": f"dlcli {version}",
        "run_id": run.name,
        "checkpoint": checkpoint,
        "checkpoint_epoch": epoch,
        "task": task.entry_name,
        "data_kind": kind,
        "input_name": INPUT_NAME,
        "input_dtype": str(x.dtype).removeprefix("torch."),
        "input_shape": shape,
        "input_layout": {"image": layout.upper(), "table": "NF", "text": "NT", "sequence": "NTC",
                         "series": "NTC"}[kind],
        "output_name": task.export_output_name,
        "output_shape": [-1, len(task.names)],
        **task.export_meta(),  # what the output holds: its description, and class, target or label names
    }
    if kind == "table":
        meta["input_features"] = feature_names(info["preprocessing"])
    if kind == "sequence":
        meta["input_channels"] = list(info["preprocessing"]["channels"])
        meta["input_padding"] = ("a shorter series: NaN after its last step" if info["preprocessing"].get("padded")
                                 else "none: every series has input_shape's steps")
    return meta


def feature_names(state: dict) -> list[str]:
    """The encoded columns in order: numeric columns, then `column=category` per one-hot slot and `column=` for the
    slot of a missing or unseen value."""
    names = list(state["numeric"])
    for column, values in state["categories"].items():
        names += [f"{column}={v}" for v in values] + [f"{column}="]
    return names


def _preprocessing_file(loaded, info: dict, kind: str) -> dict:
    state = info["preprocessing"]
    if kind == "series":
        from dlcli.data.series import export_description

        return export_description(loaded.cfg.data, state)[1]
    if kind == "text":
        data = loaded.cfg.data
        return {"vocab": state["vocab"], "pad_id": 0, "unk_id": 1, "max_length": data.max_length,
                "tokenizer": {"lowercase": data.tokenizer.lowercase, "pattern": data.tokenizer.pattern},
                "how": "ids of the first max_length tokens (re.findall(pattern, text, lowercased if lowercase)), "
                       "1 for a word not in vocab, padded with 0 to max_length"}
    return {"features": feature_names(state), "numeric": state["numeric"], "fill": state["fill"],
            "categories": state["categories"],
            "how": "one float32 per feature: numeric columns as they are (a gap: its fill value), then one 1.0 per "
                   "categorical column at `column=value`, or at `column=` for a missing or unseen value"}

