"""Runs side by side: `dlcli runs --where/--sort` (filters and order over the runs table) and `dlcli runs compare`
(the config keys that differ, then the metrics, and with --plot their curves in one PNG). Reads run directories
only, leniently: a damaged file shows as missing values."""

from __future__ import annotations

import fnmatch
import math
import re
from pathlib import Path

import yaml

from dlcli import rundirs as runs
from dlcli.errors import DlcliError
from dlcli.tasks.names import headline, running_metric

WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|>=|<=|=|>|<)(.*)$")
ALIASES = {"test_acc": "test_accuracy", "acc": "test_accuracy", "best": "best_metric.value", "date": "started",
           "epochs_done": "epochs_completed"}
ABSENT = "-"  # a key a run's config does not have
# Config keys that say how a run was computed, not what it trained: train.threads is recorded even when training
# chose it from the idle cores (so that a resume computes the same way), so two runs of one config differ there by
# chance. `compare` shows them among the metrics, beside the seconds they explain, not as config differences.
HOW_IT_RAN = ("train.threads",)
SECONDS = ("train seconds",)  # metrics shown as durations


def read_config(run: Path) -> dict:
    try:
        found = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return found if isinstance(found, dict) else {}


def lookup(run: Path, row: dict, key: str, configs: dict):
    """A value for --where/--sort: a column of `dlcli runs --json` (test_accuracy, status, ...; best_metric.value),
    a tag (sweep, trial, repeat, seed), or a dotted config key (optimizer.lr); None where the run has none."""
    key = ALIASES.get(key, key)
    head, _, rest = key.partition(".")
    if head in row and head != "tags":
        value = row[head]
        for part in rest.split(".") if rest else []:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if key in row.get("tags", {}):
        return row["tags"][key]
    if run not in configs:
        configs[run] = runs.flatten(read_config(run))
    return configs[run].get(key)


def _typed(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def matches(value, op: str, wanted: str) -> bool:
    if value is None:
        return op == "!="
    a, b = _number(value), _number(_typed(wanted))
    if op in ("<", "<=", ">", ">="):
        if a is None or b is None:
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if a is not None and b is not None:
        equal = math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    else:
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        equal = fnmatch.fnmatchcase(str(text), wanted.strip()) or _typed(wanted) == value
    return equal if op == "=" else not equal


def parse_where(where: list[str]) -> list[tuple[str, str, str]]:
    parsed = []
    for w in where:
        m = WHERE.match(w)
        if not m:
            raise DlcliError(f"--where {w!r}: expected KEY=VALUE (or !=, <, <=, >, >=), e.g. --where dataset=csv, "
                             "--where test_accuracy>0.9, --where optimizer.lr=0.001, --where id=fashion*")
        parsed.append((m[1], m[2], m[3]))
    return parsed


def select(pairs: list[tuple[Path, dict]], where: list[str], sort: str | None) -> list[tuple[Path, dict]]:
    """The (run, row) pairs that meet every --where, in --sort order (`-KEY`: descending; runs without the key
    last); the runs table's order (oldest first) otherwise."""
    configs: dict = {}
    for key, op, wanted in parse_where(where or []):
        pairs = [(run, row) for run, row in pairs if matches(lookup(run, row, key, configs), op, wanted)]
    if sort:
        descending, key = sort.startswith("-"), sort.lstrip("-")

        def order(pair):
            value = lookup(pair[0], pair[1], key, configs)
            number = _number(value)
            if value is None:
                return (2, 0, "")
            if number is not None:
                return (0, -number if descending else number, "")
            return (1, 0, str(value))

        pairs = sorted(pairs, key=order)
        if descending:  # numbers are negated above; text sorts descending by reversing its block
            numbers = [p for p in pairs if order(p)[0] == 0]
            texts = [p for p in pairs if order(p)[0] == 1][::-1]
            pairs = numbers + texts + [p for p in pairs if order(p)[0] == 2]
    return pairs


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def repeat_groups(rows: list[dict]) -> dict[str, dict]:
    """Runs of one `train --repeat` (tags.json `repeat`): their count and test headline (accuracy, r2, ...) mean +-
    std."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        group = row.get("tags", {}).get("repeat")
        if isinstance(group, str):
            groups.setdefault(group, []).append(row)
    out = {}
    for group, members in groups.items():
        values = [r["test_value"] for r in members if isinstance(r.get("test_value"), (int, float))]
        out[group] = {"runs": [r["id"] for r in members], "test_metric": members[0].get("test_metric", "accuracy"),
                      "test_value": mean_std(values) if values else None}
    return out


# ---------------------------------------------------------------- compare


def compare(run_dirs: list[Path]) -> dict:
    """{"runs": ids, "differ": {key: [value per run]}, "same": count, "metrics": {name: [value per run]}}."""
    flat = [runs.flatten(read_config(r)) for r in run_dirs]
    keys = [k for k in dict.fromkeys(k for f in flat for k in f) if k not in HOW_IT_RAN]
    differ = {k: [f.get(k, ABSENT) for f in flat] for k in keys
              if any(f.get(k, ABSENT) != flat[0].get(k, ABSENT) for f in flat[1:])}
    metrics: dict[str, list] = {}
    for i, run in enumerate(run_dirs):
        row = runs.overview(run)
        history = runs.read_metrics(run)
        try:
            summary = runs.read_json(run / "summary.json")
        except DlcliError:
            summary = {}
        summary = summary if isinstance(summary, dict) else {}
        last = history[-1] if history else {}
        best = row.get("best_metric") or {}
        test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
        second = running_metric(last)
        name, value = headline(summary)
        values = {
            "status": row.get("status"),
            "epochs": f"{row.get('epochs_completed')}/{row.get('epochs')}",
            f"best {best.get('name', 'metric')}": best.get("value"),
            "best epoch": summary.get("best_epoch"),
            **{f"last {k}": last.get(k) for k in ("train_loss", f"train_{second}", "val_loss", f"val_{second}")},
            f"test {name.replace('_', ' ')}": value,
            "test loss": test.get("loss"),
            "parameters": summary.get("parameters"),
            "train seconds": summary.get("train_seconds"),
            "threads": summary.get("threads"),
        }
        for name, value in values.items():
            metrics.setdefault(name, [None] * len(run_dirs))[i] = value
    metrics = {k: v for k, v in metrics.items() if any(x is not None for x in v)}
    return {"runs": [r.name for r in run_dirs], "differ": differ, "same": len(keys) - len(differ),
            "metrics": metrics}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return str(value)


def _duration(value) -> str:
    """Seconds as a reader compares them: 8.4 s, 3 min 05 s, 2 h 07 min."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return _cell(value)
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def render(report: dict, console) -> None:
    from rich.table import Table

    ids = report["runs"]
    differ = Table(title=f"config keys that differ ({len(report['differ'])}; {report['same']} the same)")
    differ.add_column("key", no_wrap=True)
    for run_id in ids:
        differ.add_column(run_id)
    for key, values in report["differ"].items():
        differ.add_row(key, *(_cell(v) for v in values))
    console.print(differ)
    metrics = Table(title="metrics")
    metrics.add_column("", no_wrap=True)
    for run_id in ids:
        metrics.add_column(run_id, justify="right")
    for name, values in report["metrics"].items():
        metrics.add_row(name, *((_duration if name in SECONDS else _cell)(v) for v in values))
    console.print(metrics)


def plot(run_dirs: list[Path], path: Path) -> Path:
    """Validation (or training) loss and accuracy per epoch of every run, overlaid in one PNG."""
    from dlcli.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    drawn = False
    for i, run in enumerate(run_dirs):
        history = [m for m in runs.read_metrics(run) if isinstance(m.get("epoch"), int)]
        colour = f"C{i % 10}"
        for ax, metric in ((axes[0], "loss"), (axes[1], running_metric(history[0]) if history else "accuracy")):
            for split, style in (("val", "-o"), ("train", ":")):
                points = [(m["epoch"], m[f"{split}_{metric}"]) for m in history if f"{split}_{metric}" in m]
                if points:
                    drawn = True
                    ax.plot(*zip(*points), style, color=colour, markersize=3,
                            label=f"{run.name} ({'validation' if split == 'val' else 'train'})")
    if not drawn:
        plt.close(fig)
        raise DlcliError("none of these runs has a finished epoch: nothing to plot")
    for ax, title in ((axes[0], "Loss"), (axes[1], "Accuracy, or the task's running metric")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)
