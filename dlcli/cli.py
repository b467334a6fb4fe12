"""The `dlcli` command line: parse, call, print. torch is imported only inside the commands that need it."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="dlcli",
    help="Train, evaluate and use deep-learning models declared in YAML files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

state = {"debug": False}

ConfigArg = Annotated[str, typer.Argument(help="YAML config file, e.g. configs/fashion_mnist_cnn.yaml")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override a key: --set train.epochs=3 (repeatable)")
]
RunsDirOpt = Annotated[
    Optional[str], typer.Option("--runs-dir", help="Where runs live [default: $DLCLI_RUNS_DIR or runs/]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def guarded(fn):
    """Run a command body; a DlcliError becomes one line on stderr and its exit code (traceback with --debug)."""
    from dlcli.errors import DlcliError

    try:
        return fn()
    except DlcliError as err:
        if state["debug"]:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


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


@app.command()
def train(config: ConfigArg, set_: SetOpt = None, runs_dir: RunsDirOpt = None,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or epoch lines")] = False):
    """Train the model a config declares; prints the run id at the end."""

    def body():
        from dlcli.config import load_config

        cfg = load_config(config, set_)
        from dlcli import runs
        from dlcli.train import train as run_training

        console = _stderr()
        if quiet:
            console.quiet = True
        run = run_training(cfg, runs.runs_dir(runs_dir), console, show_progress=not quiet)
        print(run.name)

    guarded(body)


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None):
    """Check a config (schema, names, layer shapes) without touching data or training."""

    def body():
        from dlcli.config import load_config

        cfg = load_config(config, set_)
        print(f"{config}: valid ({cfg.data.dataset}, {cfg.model.type} model, {cfg.optimizer.entry_name}, "
              f"{cfg.train.epochs} epochs)")

    guarded(body)


@app.command()
def summary(config: ConfigArg, set_: SetOpt = None, json_: JsonOpt = False):
    """A Keras-style table of the model: layers, output shapes, parameters. Does not touch data."""

    def body():
        import json

        from dlcli.config import load_config
        from dlcli.data.catalog import describe
        from dlcli.models import build_model

        cfg = load_config(config, set_)
        shape, classes = describe(cfg.data)
        model, rows = build_model(cfg.model, shape, len(classes))
        total = sum(r.parameters for r in rows)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if json_:
            layers = [{"name": r.name, "output_shape": list(r.output_shape), "parameters": r.parameters} for r in rows]
            print(json.dumps({"parameters": total, "trainable": trainable, "input_shape": list(shape),
                              "layers": layers}, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{cfg.name}: {cfg.model.type} model on {cfg.data.dataset} {tuple(shape)}")
        table.add_column("layer")
        table.add_column("output shape")
        table.add_column("parameters", justify="right")
        for r in rows:
            table.add_row(r.name, str((None, *r.output_shape)), f"{r.parameters:,}")
        console = Console()
        console.print(table)
        console.print(f"total parameters: {total:,} (trainable {trainable:,})")

    guarded(body)


def main():
    app()


if __name__ == "__main__":
    main()
