"""The `dlcli` command line: parse, call, print. torch is imported only inside the commands that need it."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Literal, Optional

import typer

app = typer.Typer(
    name="dlcli",
    help="Train, evaluate and use deep-learning models declared in YAML files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

state = {"debug": False}


def _flags_show_no_value() -> None:
    """typer's help panel prints every option's type, a flag's too (`--json <bool>`), which reads as if the flag
    took a value; a flag takes none, so its type column is left empty, as click's own help leaves it."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_blank", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    display_type_rich.flags_blank = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_value()

ConfigArg = Annotated[str, typer.Argument(help="YAML config file, e.g. configs/fashion_mnist_cnn.yaml")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override a key: --set train.epochs=3 (repeatable)")
]
RunsDirOpt = Annotated[
    Optional[str], typer.Option("--runs-dir", help="Where runs live [default: $DLCLI_RUNS_DIR or runs/]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or epoch lines")]
DevicesOpt = Annotated[Optional[int], typer.Option(
    "--devices", min=1, help="Train in N processes, one per GPU (or sharing the CPU), with DDP through torchrun's "
    "launcher; train.batch_size is per device [default: train.devices, for resume the run's]")]


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def guarded(fn):
    """Run a command body; a DlcliError becomes one line on stderr and its exit code (traceback with --debug).

    A DDP worker other than rank 0 prefixes its rank, and stays silent about what every rank meets at once."""
    import os

    from dlcli.errors import DlcliError

    rank = int(os.environ.get("RANK", 0))
    where = f"rank {rank}: " if rank else ""
    try:
        return fn()
    except DlcliError as err:
        if state["debug"]:
            raise
        if not (rank and err.shared):  # one line, whatever the message holds
            print(where + "error: " + "\\n".join(str(err).splitlines()), file=sys.stderr)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        if not rank:
            print("error: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # typer's own ways out: the command already said why
    except Exception as err:  # a bug or an unforeseen failure: still one line, the traceback with --debug
        if state["debug"]:
            raise
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        if not (rank and PEER_GONE.search(first)):  # a peer that left (a signal, an error) says why itself
            print(f"{where}error: {type(err).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        raise typer.Exit(1) from None


# How torch's gloo and NCCL backends report, on the ranks left behind, that another rank's process ended.
PEER_GONE = re.compile(r"Connection (closed|reset) by peer|NCCL communicator was aborted|Broken pipe")


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False,
):
    state["debug"] = debug
    if version:
        from dlcli import __version__

        print(f"dlcli {__version__}")
        raise typer.Exit(0)


def _in_world(command: list[str], n: int, devices: int | None, runs_dir: str | None, quiet: bool, work):
    """Run `work(console, world)` (train or resume) here, or, for n > 1 devices outside torchrun, start n DDP workers
    that run `command` (this command line without --devices) and end with their exit code. Prints the run id."""
    from dlcli import distributed

    if n > 1 and not distributed.launched():
        argv = [*(["--debug"] if state["debug"] else []), *command, *(["--runs-dir", runs_dir] if runs_dir else []),
                *(["--quiet"] if quiet else [])]
        raise typer.Exit(distributed.launch(argv, n))
    with distributed.join(devices) as world:
        console = _stderr()
        console.quiet = quiet or not world.main
        run = work(console, world)
        if world.main:
            for one in run if isinstance(run, list) else [run]:  # train --repeat: every run's id
                print(one.name)


def _load_config(config: str, overrides):
    """The validated config; notices about old spellings go to stderr (once, from rank 0 under DDP)."""
    import os

    from dlcli.config import load_config

    cfg = load_config(config, overrides)
    if not int(os.environ.get("RANK", 0)):
        for notice in cfg.notices:
            print(f"notice: {config}: {notice}", file=sys.stderr)
    return cfg


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, runs_dir: RunsDirOpt = None, quiet: QuietOpt = False,
          devices: DevicesOpt = None,
          repeat: Annotated[int, typer.Option("--repeat", min=1, help="Train N runs with seeds seed, seed+1, ... "
                                              "and report the mean +- std of their test figures")] = 1,
          cv: Annotated[Optional[int], typer.Option("--cv", min=2, max=50, help="K-fold cross-validation: K runs, "
                                                    "the mean +- std of their validation figures, then a refit on "
                                                    "all training rows for the epochs they chose (train.cv)")]
          = None):
    """Train the model a config declares; prints the run id at the end (with --cv: each fold's, the refit last)."""

    def body():
        cfg = _load_config(config, set_)
        from dlcli import rundirs as runs
        from dlcli.training import train as run_training

        if cv is not None:
            cfg.train.cv = cv
        command = ["train", config, *(f"--set={s}" for s in set_ or []), *(["--repeat", str(repeat)] if repeat > 1
                                                                          else []), *(["--cv", str(cv)] if cv else [])]
        if cfg.train.cv and repeat > 1:
            from dlcli.errors import ConfigError

            raise ConfigError(f"--repeat {repeat} with cross-validation (train.cv {cfg.train.cv}): choose one; the "
                              f"folds already give a mean +- std")
        if cfg.train.cv:
            from dlcli.cv import cross_validate

            work = lambda console, world: cross_validate(cfg, runs.runs_dir(runs_dir), console, not quiet,  # noqa
                                                         world, cfg.train.cv)
        elif repeat > 1:
            from dlcli.sweep import repeat as repeat_training

            work = lambda console, world: repeat_training(cfg, runs.runs_dir(runs_dir), console, not quiet,  # noqa
                                                          world, repeat)
        else:
            work = lambda console, world: run_training(cfg, runs.runs_dir(runs_dir), console, not quiet, world)  # noqa
        _in_world(command, devices or cfg.train.devices, devices, runs_dir, quiet, work)

    guarded(body)


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None):
    """Check a config (schema, names, layer shapes) without touching data or training."""

    def body():
        cfg = _load_config(config, set_)
        print(f"{config}: valid ({cfg.data.dataset}, {cfg.model.type} model, {cfg.optimizer.entry_name}, "
              f"{cfg.train.epochs} epochs)")

    guarded(body)


@app.command()
def summary(config: ConfigArg, set_: SetOpt = None, json_: JsonOpt = False):
    """A Keras-style table of the model: layers, output shapes, parameters. Does not touch data."""

    def body():
        import json

        from dlcli.data.catalog import describe
        from dlcli.finetune import freeze_at_start, frozen_note, model_input_shape, resolve_image_size
        from dlcli.models import build_model

        cfg = _load_config(config, set_)
        resolve_image_size(cfg)
        shape, classes, vocab_size = describe(cfg)
        shape = model_input_shape(cfg, shape)  # what a pretrained backbone takes: RGB, at its image size
        model, rows = build_model(cfg.model, shape, len(classes), vocab_size, pretrained=False,
                                  noun=cfg.task.noun, outputs=cfg.task.output_shape(len(classes), shape))
        freeze_at_start(cfg, model)
        total = sum(r.parameters for r in rows if not r.depth)  # a residual block's row counts its layers'
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        learning = {name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, m in model.named_modules()}
        if json_:
            layers = [{"name": r.name, "output_shape": list(r.output_shape), "parameters": r.parameters,
                       "trainable": learning[r.name], **({"depth": r.depth} if r.depth else {})} for r in rows]
            print(json.dumps({"parameters": total, "trainable": trainable, "frozen": total - trainable,
                              "input_shape": list(shape), "layers": layers}, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{cfg.name}: {cfg.model.type} model on {cfg.data.dataset} {tuple(shape)}")
        table.add_column("layer")
        table.add_column("output shape")
        table.add_column("parameters", justify="right")
        if trainable < total:
            table.add_column("trainable", justify="right")
        for r in rows:
            table.add_row("  " * r.depth + r.name.rsplit(".", 1)[-1] if r.depth else r.name,
                          str((None, *r.output_shape)), f"{r.parameters:,}",
                          *([f"{learning[r.name]:,}"] if trainable < total else []))
        console = Console()
        console.print(table)
        console.print(f"total parameters: {total:,} ({frozen_note(cfg, model) or f'trainable {trainable:,}'})",
                      soft_wrap=True)

    guarded(body)


@app.command()
def backbones(pattern: Annotated[Optional[str], typer.Argument(
                  help="A part of the name, or a glob: resnet, 'efficientnet_b*'")] = None,
              source: Annotated[Literal["torchvision", "timm"], typer.Option(
                  "--source", help="torchvision's networks, or timm's (pip install \"dlcli[timm]\")")] = "torchvision",
              json_: JsonOpt = False):
    """List the pretrained backbones for `model: {type: backbone, arch: ...}`: parameters (without the classifier),
    the image size of their default weights, the weights, and which are already in the local cache."""

    def body():
        import json

        from dlcli.models.backbones import cache_dir, list_backbones

        rows = list_backbones(pattern, source)
        if json_:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            print(f"no {source} architecture matches '{pattern}'", file=sys.stderr)
            raise typer.Exit(1)
        from rich.table import Table

        table = Table(title=f"{source} backbones" + (f" matching '{pattern}'" if pattern else ""))
        for col in ("arch", "parameters", "image size", "weights", "cached"):
            table.add_column(col, justify="right" if col in ("parameters", "image size") else "left")
        for r in rows:
            names = [f"{r['default']} (DEFAULT)", *[w for w in r["weights"] if w != r["default"]]] if r["default"] \
                else []
            table.add_row(r["arch"], f"{r['parameters']:,}" if r["parameters"] is not None else "?",
                          str(r["image_size"] or "-"), ", ".join(names) or "-", ", ".join(r["cached"]) or "-")
        console = _stdout()
        console.print(table)
        console.print(f"{len(rows)} architectures; weights are cached in {cache_dir(source)}", soft_wrap=True)

    guarded(body)


RunIdArg = Annotated[str, typer.Argument(help="Run id, a unique prefix of one, or `latest`")]
CheckpointOpt = Annotated[
    Literal["best", "last"], typer.Option("--checkpoint", help="best.pt (best monitored epoch) or last.pt")
]


def _stdout():
    """Tables on stdout; piped or captured output gets up to 200 columns rather than rich's 80, so nothing is cut."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@app.command()
def evaluate(run_id: RunIdArg,
             split: Annotated[Literal["test", "val"], typer.Option("--split", help="Which split to score")] = "test",
             checkpoint: CheckpointOpt = "best", json_: JsonOpt = False, runs_dir: RunsDirOpt = None,
             device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")] = "auto",
             backtest: Annotated[Optional[int], typer.Option("--backtest", help="Forecast runs: K rolling origins a "
                                 "horizon apart, ending at the test horizon, beside seasonal naive")] = None,
             refit: Annotated[bool, typer.Option("--refit", help="--backtest: train a model for every origin "
                                                 "(default: one model trained before the first)")] = False):
    """Score a run on its test (or validation) split: loss, accuracy, per-class scores, confusion matrix.

    Writes eval-<split>.json and confusion-<split>.png into the run (--backtest: backtest.json and backtest.png).
    """

    def body():
        import json

        from dlcli import rundirs as runs
        from dlcli.evaluate import evaluate_run, render

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        if backtest is not None:  # rolling-origin backtesting of a forecast run (dlcli.backtest)
            from dlcli.backtest import backtest_run, render as render_backtest

            found = backtest_run(run, backtest, refit, device, say=lambda line: print(line, file=sys.stderr))
            if json_:
                print(json.dumps(found, indent=2))
            else:
                render_backtest(found, _stdout())
            return
        if refit:
            from dlcli.errors import BAD_INPUT, DlcliError

            raise DlcliError("--refit goes with --backtest K", BAD_INPUT)
        report = evaluate_run(run, split, checkpoint, device)
        if json_:
            print(json.dumps(report, indent=2))
        else:
            render(report, _stdout())

    guarded(body)


@app.command()
def predict(images: Annotated[Optional[list[str]], typer.Argument(
                help="Image files or directories of them; CSV files for table runs; texts for text runs; "
                     ".npz, CSV or Parquet files of series for sequence runs; - reads stdin: CSV rows (table, "
                     "sequence, forecast runs), one text a line, or one image's bytes")] = None,
            run_id: Annotated[str, typer.Option("--run", help="Run id, unique prefix or `latest`")] = "latest",
            top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many labels to show per image")] = 5,
            invert: Annotated[bool, typer.Option("--invert", help="Invert images: for dark strokes on a light "
                                                 "background (MNIST-style models expect white on black)")] = False,
            checkpoint: CheckpointOpt = "best", json_: JsonOpt = False, runs_dir: RunsDirOpt = None,
            device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")] = "cpu",
            text_file: Annotated[Optional[str], typer.Option("--text-file", help="Text runs: one text per line")] = None,
            save: Annotated[Optional[str], typer.Option("--save", help="Image runs that answer per pixel or box: "
                            "write each answer into this folder (segmentation: a mask PNG of class indices in the "
                            "picture's own size, named as the picture)")] = None,
            conf: Annotated[Optional[float], typer.Option("--conf", help="Detection runs: show boxes scoring at "
                            "least this (default: the run's task.conf, 0.25)")] = None,
            iou: Annotated[Optional[float], typer.Option("--iou", help="Detection runs: drop a box overlapping a "
                           "better one of its class by more than this IoU (default: the run's task.nms_iou, 0.6)")]
            = None):
    """Answer with a trained run: top-k classes, numbers or labels per image, row, text or series; or a forecast.

    Each image becomes what training saw: the run's channels, size, 0-255 scale and normalisation.

    An unreadable image is reported on stderr, the others are still predicted, and the exit code is 1.
    """

    def body():
        import json

        from dlcli import rundirs as runs
        from dlcli.errors import DlcliError
        from dlcli.predict import COMPACT_OVER, expand_inputs, predict_files, render, render_line, stdin_inputs

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        console = _stdout()
        from dlcli.loaded import read_data_info

        kind = (read_data_info(run).get("preprocessing") or {}).get("kind")
        inputs, named = stdin_inputs(images or [], kind)  # `-`: what stdin holds, as this run's kind reads it
        if kind == "series":  # a forecast of the horizon after each series' end in the history files
            from dlcli.predict import predict_history

            results = predict_history(run, inputs, checkpoint, device)
            if json_:
                print(json.dumps([r.to_json("series") for r in results], indent=2))
            else:
                for r in results:
                    render(r, console)
            return
        if kind in ("tabular", "text", "sequences"):
            from dlcli.predict import predict_records

            results = predict_records(run, inputs, top_k, checkpoint, device, text_file)
            for r in results:
                r.image = named(r.image)
            key = {"text": "text", "sequences": "series"}.get(kind, "row")
            if json_:
                print(json.dumps([r.to_json(key) for r in results], indent=2))
            else:
                show = render_line if len(results) > COMPACT_OVER else render
                for r in results:
                    show(r, console)
            return
        if not inputs:
            raise DlcliError("no images given", 2)

        def problem(path, reason):
            print(f"warning: {reason}" if path is None else f"error: {named(path)}: {reason}", file=sys.stderr)

        many = len(expand_inputs(inputs)[0]) > COMPACT_OVER  # one line per image, not a table each
        show = None if json_ else (lambda pred: (render_line if many else render)(pred, console))

        def each(pred):
            pred.image = named(pred.image)
            if show is not None:
                show(pred)

        results, failed = predict_files(run, inputs, top_k, invert, checkpoint, device, each, problem,
                                        conf=conf, iou=iou)
        if save is not None:
            from dlcli.predict import save_answers

            written = save_answers(results, save)
            print(f"wrote {len(written)} file{'s' if len(written) != 1 else ''} into {save}", file=sys.stderr)
        if json_:
            print(json.dumps([r.to_json() for r in results], indent=2))
        if failed:
            raise typer.Exit(1)

    guarded(body)


@app.command()
def export(run_id: RunIdArg,
           format_: Annotated[Literal["onnx", "torchscript"], typer.Option("--format", "-f",
                              help="onnx (run with onnxruntime) or torchscript (torch.jit.load, LibTorch)")] = "onnx",
           checkpoint: CheckpointOpt = "best",
           output: Annotated[Optional[str], typer.Option("--output", "-o", help="The file to write "
                             "(default: RUN/export/model.onnx, or model.pt)")] = None,
           layout: Annotated[Literal["nhwc", "nchw"], typer.Option("--layout", help="Image runs: the input is uint8 "
                             "N x H x W x C (nhwc, as PIL and NumPy give) or N x C x H x W (nchw)")] = "nhwc",
           tolerance: Annotated[float, typer.Option("--tolerance", help="Largest difference from the PyTorch "
                                "model's outputs allowed on the run's test samples (relative for outputs over 1, "
                                "a regression's values)")] = 1e-4,
           runs_dir: RunsDirOpt = None):
    """Write a run's model as one ONNX or TorchScript file that takes raw inputs and returns its task's outputs.

    Class probabilities, values in the targets' own units (regression) or per-label probabilities (multilabel); the
    run's normalisation is inside; the task, output names, input layout and run id are in the file's metadata. The
    file is checked on the run's own test samples before it is kept. Prints the path.
    """

    def body():
        from dlcli import rundirs as runs
        from dlcli.export import export_run
        from dlcli.tasks import TASKS

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        result = export_run(run, format_, checkpoint, output, layout, tolerance,
                            say=lambda line: print(line, file=sys.stderr))
        meta = result.metadata
        shape = " x ".join("N" if d == -1 else str(d) for d in meta["input_shape"])
        extra = f"; preprocessing in {result.sidecar}" if result.sidecar else ""
        width, noun = " x ".join(map(str, meta["output_shape"][1:])), TASKS.entries[meta["task"]].noun
        also = "".join(f" + '{name}' N x {len(meta['input_channels'])}" for name in meta.get("scaling_inputs", []))
        print(f"{result.format}: input '{meta['input_name']}' {meta['input_dtype']} {shape} ({meta['input_layout']})"
              f"{also}, output '{meta['output_name']}' N x {width} ({meta['task']}: {noun}){extra}", file=sys.stderr)
        print(f"checked on {result.checked_on}: max |difference| from PyTorch {result.max_difference:.2e} "
              f"(tolerance {tolerance:g})", file=sys.stderr)
        print(result.path)

    guarded(body)


@app.command()
def serve(run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of one, or `latest`")] = "latest",
          host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface; give "
                                            "a --token then)")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one)")] = 8000,
          checkpoint: CheckpointOpt = "best", runs_dir: RunsDirOpt = None,
          device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")] = "cpu",
          top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per answer unless a request asks "
                                             "(?top_k=)")] = 5,
          max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Samples of concurrent requests run "
                                                 "through the model together at most (1: one request at a time)")]
          = 32,
          token: Annotated[Optional[str], typer.Option(
              "--token", envvar="DLCLI_SERVE_TOKEN", show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' on every request but / and /health")] = None,
          allowed_host: Annotated[Optional[list[str]], typer.Option(
              "--allowed-host", help="A host name requests may address besides loopback names, IP addresses and "
              "--host (repeat it; '*': any)")] = None,
          max_bytes: Annotated[int, typer.Option("--max-bytes", min=1, help="Largest request body")]
          = 16 * 1024 * 1024,
          max_pixels: Annotated[Optional[int], typer.Option(
              "--max-pixels", min=1, help="Largest image as decoded, width x height (default: 256 x the model's "
              "input, 4,194,304 to 25,000,000; JPEGs decode reduced first)")] = None,
          max_request_pixels: Annotated[Optional[int], typer.Option(
              "--max-request-pixels", min=1, help="Pixels decoded for all the images of one request (default: 8 x "
              "--max-pixels)")] = None,
          max_items: Annotated[int, typer.Option("--max-items", min=1, help="Most images, rows or texts per "
                                                 "request")] = 64,
          max_in_flight: Annotated[int, typer.Option("--max-in-flight", min=1, help="Requests handled at once; "
                                                     "more are answered 503 with Retry-After")] = 64,
          header_timeout: Annotated[float, typer.Option("--header-timeout", min=0.1, help="Seconds a client has "
                                                        "to send a request's headers (idle connections close)")]
          = 10.0,
          body_timeout: Annotated[float, typer.Option("--body-timeout", min=0.1, help="Seconds a client has to "
                                                      "send a request's body after its headers (408)")] = 60.0,
          docs: Annotated[bool, typer.Option("--docs", help="Serve /docs (Swagger UI; the browser loads it from a "
                                             "CDN)")] = False):
    """Serve a run over HTTP: POST /predict (images, CSV rows, texts or series), GET /health, GET /info, a page at /.

    The model is loaded once; concurrent requests are batched. Answers are `dlcli predict --json`'s.
    """

    def body():
        from dlcli import rundirs as runs
        from dlcli.serve.app import Limits, run_server

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        limits = Limits(max_bytes=max_bytes, max_pixels=max_pixels, max_request_pixels=max_request_pixels,
                        max_items=max_items, max_in_flight=max_in_flight, header_timeout=header_timeout,
                        body_timeout=body_timeout)
        run_server(run, host, port, checkpoint=checkpoint, device=device, top_k=top_k, max_batch=max_batch,
                   limits=limits, token=token, allowed_hosts=allowed_host or (), docs=docs,
                   say=lambda line: print(line, file=sys.stderr, flush=True))

    guarded(body)


runs_app = typer.Typer(help="List the runs: id, dataset, model, epochs, best metric, test accuracy, status, date "
                       "(oldest first); --where and --sort filter and order them; `runs compare` shows what differs.")
app.add_typer(runs_app, name="runs")
WhereOpt = Annotated[Optional[list[str]], typer.Option(
    "--where", "-w", help="Keep runs where KEY=VALUE (also !=, <, <=, >, >=; * and ? in values): a column "
    "(dataset, status, test_accuracy), a tag (sweep, repeat, seed) or a config key (optimizer.lr); repeatable")]


@runs_app.callback(invoke_without_command=True)
def list_runs(ctx: typer.Context, runs_dir: RunsDirOpt = None, json_: JsonOpt = False,
              clean: Annotated[bool, typer.Option("--clean", help="Remove the runs that never saved a checkpoint "
                                                  "(killed, failed or interrupted in their first epoch), after "
                                                  "asking")] = False,
              yes: Annotated[bool, typer.Option("--yes", "-y", help="With --clean: do not ask")] = False,
              where: WhereOpt = None,
              sort: Annotated[Optional[str], typer.Option("--sort", help="Order by a key as --where names them; "
                                                          "--sort=-KEY for descending")] = None):
    """List the runs: id, dataset, model, epochs, best metric, test accuracy, status, date (oldest first)."""
    if ctx.invoked_subcommand:
        ctx.obj = {"runs_dir": runs_dir}  # `dlcli runs --runs-dir X compare A B` looks in X
        return

    def body():
        import json

        from dlcli import rundirs as runs
        from dlcli.compare import repeat_groups, select
        from dlcli.tasks import short_name

        root = runs.runs_dir(runs_dir)
        if clean:
            return _clean_runs(root, yes)
        rows = [row for _, row in select([(p, runs.overview(p)) for p in runs.list_runs(root)], where, sort)]
        if json_:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            print(f"no runs in {root}/: train one with `dlcli train CONFIG`", file=sys.stderr)
            return
        from rich.table import Table

        table = Table(title=f"runs in {root}/")
        tagged = any(r.get("tags") for r in rows)
        for col in ("id", "dataset", "model", "epochs", "best metric", "test", "status", "date",
                    *(["group"] if tagged else [])):
            table.add_column(col, no_wrap=col == "id", justify="right" if col in ("epochs", "test") else "left")
        colours = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red",
                   "killed": "red", "pruned": "magenta"}
        groups, last_of = repeat_groups(rows), {}
        for r in rows:
            last_of[r.get("tags", {}).get("repeat")] = r["id"]
        for r in rows:
            best = r["best_metric"]
            best_text = f"{short_name(str(best.get('name')))} {best['value']:.4f}" if best and \
                isinstance(best.get("value"), (int, float)) else "-"
            colour = colours.get(r["status"], "dim")
            table.add_row(r["id"], r["dataset"] or "?", r["model"] or "?",
                          f"{r['epochs_completed'] if r['epochs_completed'] is not None else '?'}/{r['epochs'] or '?'}",
                          best_text, f"{short_name(r['test_metric'])} {test:.4f}"
                          if isinstance(test := r["test_value"], (int, float)) else "-",
                          f"[{colour}]{_status_text(r)}[/{colour}]", str(r["started"]).replace("T", " ")[:16],
                          *([_group_text(r.get("tags") or {})] if tagged else []))
            group = r.get("tags", {}).get("repeat")
            if group in groups and last_of.get(group) == r["id"] and len(groups[group]["runs"]) > 1:
                acc = groups[group]["test_value"]
                table.add_row(f"  mean +- std of {len(groups[group]['runs'])} runs", "", "", "", "",
                              f"{short_name(groups[group]['test_metric'])} {acc[0]:.4f} +- {acc[1]:.4f}"
                              if acc else "-", "", "",
                              *([f"repeat {group}"] if tagged else []), style="bold")
        _stdout().print(table)

    guarded(body)


@runs_app.command("compare")
def compare_runs(ctx: typer.Context,
                 run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes, "
                                                              "or `latest`)")],
                 runs_dir: RunsDirOpt = None, json_: JsonOpt = False,
                 plot: Annotated[bool, typer.Option("--plot", help="Also draw their curves overlaid in one PNG")]
                 = False,
                 output: Annotated[str, typer.Option("--output", "-o", help="The PNG --plot writes")]
                 = "compare.png"):
    """Show only the config keys that differ between runs, then their metrics side by side."""

    def body():
        import json

        from dlcli import rundirs as runs
        from dlcli.compare import compare, render
        from dlcli.compare import plot as plot_runs
        from dlcli.errors import DlcliError

        root = runs.runs_dir(runs_dir or (ctx.obj or {}).get("runs_dir"))
        found = [runs.resolve_run(root, r) for r in run_ids]
        if len({p.name for p in found}) < 2:
            raise DlcliError("runs compare needs two or more different runs")
        report = compare(found)
        if plot:
            from pathlib import Path

            report["plot"] = str(plot_runs(found, Path(output)))
        if json_:
            print(json.dumps(report, indent=2))
            return
        render(report, _stdout())
        if plot:
            print(report["plot"])

    guarded(body)


def _group_text(tags: dict) -> str:
    """What a run belongs to, from its tags.json: `sweep NAME #3`, `repeat 2/5 (seed 43)`."""
    if "sweep" in tags:
        return f"sweep {tags['sweep']} #{tags.get('trial', '?')}"
    if "repeat" in tags:
        return f"repeat {tags.get('index', '?')}/{tags.get('of', '?')} (seed {tags.get('seed', '?')})"
    if "cv" in tags:
        if tags.get("refit"):
            return f"cv refit ({tags.get('epochs', '?')} epochs, {tags.get('of', '?')} folds)"
        if tags.get("bag"):
            return f"cv bag of {tags.get('of', '?')} folds"
        return f"cv fold {tags.get('fold', '?')}/{tags.get('of', '?')}"
    return " ".join(f"{k}={v}" for k, v in tags.items())


def _status_text(row: dict) -> str:
    """`killed (checkpoint: epoch 3)`: a run that did not finish says how far a resume starts."""
    if row["status"] in ("completed", "running"):
        return row["status"]
    last = row.get("last_checkpoint")
    return f"{row['status']} ({'no checkpoint' if last is None else f'checkpoint: epoch {last}'})"


def _clean_runs(root, yes: bool) -> None:
    import shutil

    from dlcli import rundirs as runs

    found = runs.never_checkpointed(root)
    if not found:
        print(f"nothing to clean in {root}/: every run has a checkpoint or is being trained", file=sys.stderr)
        return
    for run, why in found:
        print(f"{run.name}: {why}")
    if not yes and not typer.confirm(f"remove these {len(found)} run directories?", default=False):
        raise typer.Exit(1)
    for run, _ in found:
        shutil.rmtree(run)
    print(f"removed {len(found)} run directories from {root}/", file=sys.stderr)


@app.command()
def show(run_id: RunIdArg, runs_dir: RunsDirOpt = None, json_: JsonOpt = False):
    """Print a run's resolved config, its summary and the paths of its plots and reports."""

    def body():
        import json

        import yaml

        from dlcli import rundirs as runs
        from dlcli.errors import DlcliError
        from dlcli.plots import plot_files

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        try:
            config_text = (run / "config.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            config_text = f"# unreadable: {err}\n"
        try:
            summary = runs.read_json(run / "summary.json")
        except DlcliError as err:  # still show the config and files of a run whose summary is missing or damaged
            summary = {"error": str(err)}
        now = runs.status(run, None if "error" in summary else summary)
        if now != summary.get("status"):
            last = runs.last_checkpoint(run, summary, runs.read_metrics(run))
            summary = {**summary, "status": now, "recorded_status": summary.get("status"),
                       "last_checkpoint": last,
                       "note": "its process ended without recording how: " + (
                           f"`dlcli resume {run.name}` continues from epoch {last}" if last is not None else
                           "no checkpoint was saved, train it again (`dlcli runs --clean` removes it)")}
        plots = [str(p) for p in plot_files(run)]
        reports = [str(p) for p in sorted(run.glob("eval-*.json"))]
        if json_:
            try:
                config = yaml.safe_load(config_text)
            except yaml.YAMLError:
                config = None
            print(json.dumps({"id": run.name, "path": str(run), "config": config, "summary": summary,
                              "plots": plots, "reports": reports}, indent=2))
            return
        from rich.rule import Rule
        from rich.syntax import Syntax

        console = _stdout()
        console.print(Rule(f"run {run.name} ({run})"))
        console.print(Syntax(config_text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
        console.print(Rule("summary"))
        console.print_json(json.dumps(summary))
        console.print(Rule("files"))
        if plots or reports:
            for path in plots + reports:
                console.print(path, soft_wrap=True)
        else:
            console.print(f"no plots yet: `dlcli plot {run.name}`, `dlcli evaluate {run.name}`", soft_wrap=True)

    guarded(body)


@app.command()
def plot(run_id: RunIdArg, runs_dir: RunsDirOpt = None):
    """Draw the run's learning curves (loss and accuracy per epoch, train and validation) into curves.png."""

    def body():
        from dlcli import rundirs as runs
        from dlcli.plots import write_curves

        run = runs.resolve_run(runs.runs_dir(runs_dir), run_id)
        print(write_curves(run))

    guarded(body)


@app.command()
def resume(run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of one, or `latest`")],
           epochs: Annotated[Optional[int], typer.Option("--epochs", help="A new total number of epochs")] = None,
           runs_dir: RunsDirOpt = None, quiet: QuietOpt = False, devices: DevicesOpt = None):
    """Continue an interrupted, failed or finished run from its last checkpoint, exactly where it stopped."""

    def body():
        from dlcli import rundirs as runs
        from dlcli.errors import DlcliError
        from dlcli.training import resume as resume_run
        from dlcli.training import run_devices

        if epochs is not None and epochs < 1:
            raise DlcliError(f"--epochs {epochs}: needs a positive number of epochs")
        root = runs.runs_dir(runs_dir)
        command = ["resume", run_id, *(["--epochs", str(epochs)] if epochs else [])]
        _in_world(command, devices or run_devices(root, run_id), devices, runs_dir, quiet,
                  lambda console, world: resume_run(root, run_id, console, epochs, not quiet, world))

    guarded(body)


@app.command()
def sweep(config: ConfigArg, set_: SetOpt = None,
          space: Annotated[Optional[str], typer.Option("--space", help="A YAML file with the search space (or a "
                                                       "whole sweep section) instead of the config's `sweep:`")] = None,
          trials: Annotated[Optional[int], typer.Option("--trials", "-n", min=1, help="Trials in the study in all, "
                                                        "counting those run before [default: sweep.trials]")] = None,
          timeout: Annotated[Optional[float], typer.Option("--timeout", min=0, help="Start no trial after this "
                                                           "many seconds")] = None,
          jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Trials at a time, each in its own process "
                                            "with an equal share of the CPU cores")] = 1,
          storage: Annotated[Optional[str], typer.Option("--storage", help="The Optuna storage URL to share a study "
                                                         "between processes and machines, e.g. postgresql://... "
                                                         "[default: sqlite in <runs>/sweeps/NAME/study.db]")] = None,
          name: Annotated[Optional[str], typer.Option("--name", help="The sweep (and study) name; the same name "
                                                      "continues it [default: the config's name]")] = None,
          restart: Annotated[bool, typer.Option("--restart", help="Delete the study of this name first (its runs "
                                                "stay) and start it over, e.g. with other --set values")] = False,
          runs_dir: RunsDirOpt = None,
          worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
          threads: Annotated[Optional[int], typer.Option("--threads", hidden=True)] = None,
          worker_index: Annotated[int, typer.Option("--worker-index", hidden=True)] = 0):
    """Search hyperparameters with Optuna: each trial is a run; prints a ranked table and writes the best config.

    The search space is the config's `sweep:` section (or --space FILE): dotted config keys, each with a loguniform,
    uniform, int or choice distribution (see README, Experiments). Ctrl-C, then the same command again, continues
    the sweep. Prints the path of the best config (YAML for dlcli train) last.
    """

    def body():
        from dlcli import rundirs as runs
        from dlcli.sweep import make_plan, optuna_module, restart as restart_study, run_sweep, work

        optuna_module()  # a missing extra: one line, first
        root = runs.runs_dir(runs_dir)
        plan = make_plan(config, set_, space, trials, name, storage, root)
        from rich.console import Console

        console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
        if worker:  # one of --jobs' processes: its trial lines only; an interruption is reported by the first
            from dlcli.errors import DlcliError

            try:
                work(plan, lambda line: console.print(line, soft_wrap=True, highlight=False), timeout, worker_index,
                     threads)
            except DlcliError as err:
                if err.exit_code not in (130, 143):
                    raise
                raise typer.Exit(err.exit_code) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        if restart:  # here only: the --jobs processes are started without it, after the study is gone
            deleted = restart_study(plan)
            if deleted:
                console.print(f"sweep {plan.name}: deleted its study of {deleted} trials to start over (their runs "
                              "stay)", soft_wrap=True)
        argv = ["sweep", config, *(f"--set={s}" for s in set_ or []), *(["--space", space] if space else []),
                "--trials", str(plan.trials), "--name", plan.name, "--storage", plan.storage, "--runs-dir", str(root)]
        result = run_sweep(plan, console, jobs, timeout, [*(["--debug"] if state["debug"] else []), *argv])
        if result.get("best"):
            print(result["best"]["config"])

    guarded(body)


data_app = typer.Typer(help="Look at a dataset before training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(target: Annotated[str, typer.Argument(
                   help="A YAML config, an image folder (with train/), a .csv/.parquet table, a COCO JSON, a YOLO "
                        "data.yaml or a VOC root")],
               set_: SetOpt = None, json_: JsonOpt = False):
    """Report what in a dataset would hurt a run, before training; exit 1 when something blocks training.

    Class balance, corrupt files, duplicates across splits, image sizes, column types and gaps, text lengths;
    for detection layouts every bad box, label line or file, boxes per class and size, pictures without objects.

    One finding per line: error (blocks training), warning or info. --json prints the report for scripts.
    Targets are judged by the config's task: class balance, or a regression's range and outliers, or how often
    each label of a multilabel task is on.

    A path instead of a config is read with its kind's default keys, a table's label column guessed as `dlcli init`
    guesses it; --set data.label_column=y changes one, --set task=regression the task.
    """

    def body():
        import json

        from dlcli import doctor

        if doctor.is_config(target):
            cfg = _load_config(target, set_)
            entry, task, seed, notes = cfg.data, cfg.task, cfg.seed, []
        else:
            (entry, task, notes), seed = doctor.entry_for_path(target, set_), 0
        report = doctor.check(entry, seed, target, task, notes)
        if json_:
            print(json.dumps(report, indent=2))
        else:
            doctor.render(report, _stdout())
        if not report["ok"]:
            raise typer.Exit(1)

    guarded(body)


@app.command()
def init(path: Annotated[str, typer.Argument(
             help="An image folder (PATH/train/<class>/*.png|jpg|...), a .csv or .parquet table, a directory "
                  "of table part files, a COCO JSON, a YOLO data.yaml, a VOC root or an images/ + masks/ folder")],
         output: Annotated[Optional[str], typer.Option(
             "--output", "-o", help="Where to write the config [default: <name>.yaml in this directory]")] = None,
         label: Annotated[Optional[str], typer.Option(
             "--label", metavar="COLUMN", help="A table's label column [default: guessed: one named label, target, "
             "class, y or category, else the last that is not an id]")] = None,
         name: Annotated[Optional[str], typer.Option(
             "--name", help="The config's name, which starts its run ids and the default file name [default: the "
             "data's file or folder name]")] = None):
    """Write a commented starter config for your data that trains as it stands; prints its path.

    Looks at a sample (image headers, the first rows of a table) to choose the dataset kind, channels and image
    size, or the label and text columns, a model and a schedule. A label of numbers with many distinct values is
    predicted as a number (task: regression). Never overwrites a file.
    """

    def body():
        from dlcli.init import write_starter

        target, proposal = write_starter(path, output, label, name)
        for warning in proposal.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{target}: {proposal.what}; next: dlcli data check {target} && dlcli train {target}", file=sys.stderr)
        print(target)

    guarded(body)


@app.command()
def schema():
    """Print the config's JSON Schema, for editors: dlcli schema > dlcli.schema.json."""

    def body():
        import json

        from dlcli.schema import config_schema

        print(json.dumps(config_schema(), indent=2))

    guarded(body)


def main():
    try:
        app()
    except SystemExit as done:
        distributed = sys.modules.get("dlcli.distributed")
        if distributed is not None and distributed.joined:
            distributed.exit_worker(done.code)
        raise


if __name__ == "__main__":
    main()
