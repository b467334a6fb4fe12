"""`task: forecast`: the next `horizon` steps of one or more series (`dataset: series`, dlcli.data.series).

The head has horizon x targets outputs (step by step, each target in turn), trained on the series' scaled values
less the window's base forecast (its mean, or its seasonal naive forecast; dlcli.data.series). Every figure is
computed in the targets' own units: MAE, RMSE, sMAPE (in percent, 200 |F - A| / (|F| + |A|)) and MASE (each
window's mean absolute error over its series' in-sample seasonal naive error, then averaged over windows). A
window's target row carries what scoring needs (Pack): the truth, its base, its series' scale and the seasonal naive
forecast, which evaluate reports beside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat

from dlcli.errors import DataError, DlcliError
from dlcli.tasks import TASKS, Task

LOSSES = ("mae", "mse", "huber")
PLOTTED_SERIES = 6  # forecast-vs-actual panels in evaluate's figure
LISTED_SERIES = 20  # rows of evaluate's per-series table


@dataclass
class Pack:
    """The layout of a window's target row: the truth (H horizon steps x K targets), the base (H x K, in the
    series' scaled units: what the forecast is when the network answers 0), per target the series' mean, standard
    deviation and MASE denominator, the seasonal naive forecast (H x K), and the series' index."""

    horizon: int
    targets: int

    @property
    def width(self) -> int:
        return 3 * self.horizon * self.targets + 3 * self.targets + 1

    def parts(self, y):
        H, K = self.horizon, self.targets
        hk = H * K
        grid = lambda a: y[:, a:a + hk].reshape(-1, H, K)  # noqa: E731
        return {"y": grid(0), "base": grid(hk), "mean": y[:, 2 * hk:2 * hk + K],
                "std": y[:, 2 * hk + K:2 * hk + 2 * K], "scale": y[:, 2 * hk + 2 * K:2 * hk + 3 * K],
                "naive": grid(2 * hk + 3 * K), "series": y[:, -1]}


def as_tensor(y):
    """A block of target rows as a tensor, whether given as one or as a lazy view of windows (dlcli.data.series)."""
    import torch

    return y if isinstance(y, torch.Tensor) else y.cpu()


@TASKS.register("forecast")
class Forecast(Task):
    """The next `horizon` steps: mae (default), mse or huber on scaled values; mae, rmse, smape and mase in the
    targets' own units; best.pt and early stopping follow val_loss by default."""

    loss: Literal[LOSSES] = Field("mae", description="on the scaled values, averaged over the horizon")
    delta: PositiveFloat = Field(1.0, description="huber: where the loss turns linear (in series standard "
                                                  "deviations)")

    noun: ClassVar[str] = "forecast outputs (horizon x targets)"
    step_metric: ClassVar[str] = "mase"
    metrics: ClassVar[tuple[str, ...]] = ("mae", "rmse", "smape", "mase")
    headline: ClassVar[str] = "mase"
    default_monitor: ClassVar[str] = "val_loss"
    export_output_name: ClassVar[str] = "forecast"

    def check_train(self, train_cfg):
        if train_cfg.label_smoothing:
            return "label_smoothing: a forecast has no classes to smooth; remove it"
        if train_cfg.class_weights != "none":
            return "class_weights: a forecast has no classes to weight; remove it"
        return None

    def reader(self, entry, columns):
        raise DataError("task forecast reads its series from `dataset: series` (time_column, label_column, "
                        "lookback, horizon)")

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        super().bind(info, names)
        self._pack = Pack(int(self._info.get("horizon", len(names))), len(self._info.get("targets", [0])))
        return self

    # ------------------------------------------------------------ training

    def _parts(self, y, device=None):
        y = as_tensor(y)
        return self._pack.parts(y.float() if device is None else y.to(device).float())

    def _grid(self, out):
        return out.float().reshape(len(out), self._pack.horizon, self._pack.targets)

    def criterion(self, out, y, reduction="mean"):
        import torch.nn.functional as F

        p = self._parts(y, out.device)
        z = (p["y"] - p["mean"][:, None]) / p["std"][:, None] - p["base"]
        o = self._grid(out)
        if self.loss == "mae":
            each = F.l1_loss(o, z, reduction="none")
        elif self.loss == "mse":
            each = F.mse_loss(o, z, reduction="none")
        else:
            each = F.huber_loss(o, z, reduction="none", delta=self.delta)
        per_window = each.flatten(1).mean(1)
        return per_window.sum() if reduction == "sum" else per_window.mean()

    def forecasts(self, out, y):
        """(windows, horizon, targets) in the targets' own units."""
        p = self._parts(y, out.device)
        return self.in_units(self._grid(out), p["base"], p["mean"], p["std"])

    @staticmethod
    def in_units(grid, base, mean, std):
        """The network's answers (windows, horizon, targets) added to the base they correct, in the targets' own
        units given each window's series mean and std (windows, targets); an exported graph ends in it too."""
        return (grid + base) * std[:, None] + mean[:, None]

    def step_stat(self, out, y):
        """The batch's summed MASE (each window's mean absolute error over its series' scale)."""
        p = self._parts(y, out.device)
        return ((self.forecasts(out.detach(), y) - p["y"]).abs() / p["scale"][:, None]).flatten(1).mean(1).sum()

    def _errors(self, pred, p) -> dict:
        """Per window (float64): summed absolute and squared errors and sMAPE terms, and the window's MASE."""
        err = (pred.double() - p["y"].double())
        a = err.abs()
        denom = pred.double().abs() + p["y"].double().abs()
        smape = torch_where_zero(denom, 200 * a / denom.clamp_min(1e-300))
        return {"abs": a.flatten(1).sum(1), "sq": err.pow(2).flatten(1).sum(1), "smape": smape.flatten(1).sum(1),
                "mase": (a / p["scale"].double()[:, None]).flatten(1).mean(1)}

    def stats(self, out, y):
        import torch

        p = self._parts(y, out.device)
        e = self._errors(self.forecasts(out, y), p)
        n = float(len(out))
        return {"count": torch.tensor(n, dtype=torch.float64), "cells": torch.tensor(
                    n * self._pack.horizon * self._pack.targets, dtype=torch.float64),
                "loss": self.criterion(out, y, reduction="sum").double().cpu() if len(out) else torch.zeros(
                    (), dtype=torch.float64),
                **{k: v.sum().cpu() for k, v in e.items()}}

    def scores(self, stats):
        n, cells = float(stats["count"]), float(stats["cells"])
        if not n:
            return {k: float("nan") for k in ("loss", *self.metrics)}
        return {"loss": float(stats["loss"]) / n, "mae": float(stats["abs"]) / cells,
                "rmse": math.sqrt(float(stats["sq"]) / cells), "smape": float(stats["smape"]) / cells,
                "mase": float(stats["mase"]) / n}

    # ------------------------------------------------------------ using

    def answers(self, out, top_k=5):
        raise DlcliError("a forecast run forecasts from a series' history: dlcli predict HISTORY.csv --run RUN")

    def export_output(self, out):
        # the outputs alone are no forecast: the graph needs the window and its series' scaling too
        raise DlcliError("a forecast run is exported from windows with their series' scaling "
                         "(dlcli.data.series.window_model), not from the network's outputs alone")

    def export_meta(self):
        return {"output": "the forecast (N, horizon, targets) in the targets' own units, the step after the "
                          "window's last first", "targets": list(self._info.get("targets", [])),
                "horizon": self._pack.horizon}

    def report(self, out, y):
        import torch

        p = self._parts(y, out.device)
        pred = self.forecasts(out, y)
        figures = {}
        for who, guess in (("model", pred), ("seasonal_naive", p["naive"])):
            e = self._errors(guess, p)
            cells = guess[0].numel() * len(guess)
            figures[who] = {"mae": e["abs"].sum().item() / cells, "rmse": math.sqrt(e["sq"].sum().item() / cells),
                            "smape": e["smape"].sum().item() / cells, "mase": e["mase"].mean().item(),
                            "per_window_mase": e["mase"].tolist()}
        names = self._info.get("series") or []
        series = p["series"].long().tolist()
        per = [{"series": names[s] if s < len(names) else str(s), "mase": m, "seasonal_naive_mase": b}
               for s, m, b in zip(series, figures["model"].pop("per_window_mase"),
                                  figures["seasonal_naive"].pop("per_window_mase"))]
        beaten = sum(r["mase"] < r["seasonal_naive_mase"] for r in per)
        return {"samples": len(out), "loss": self.criterion(out, y).item(), **figures["model"],
                "seasonal_naive": figures["seasonal_naive"], "horizon": self._pack.horizon,
                "season": self._info.get("season"), "targets": list(self._info.get("targets", [])),
                "windows_beating_seasonal_naive": beaten, "per_window": per,
                "forecast": pred.cpu().tolist() if len(out) <= PLOTTED_SERIES else None,
                **({} if torch.isfinite(p["y"]).all() else {"note": "some targets are missing"})}

    def plots(self, report, out, y, folder, split, title):
        from pathlib import Path

        from dlcli.plots import _pyplot, _save

        p = self._parts(y, out.device)
        pred, actual, naive = self.forecasts(out, y).cpu(), p["y"].cpu(), p["naive"].cpu()
        shown = min(len(out), PLOTTED_SERIES)
        if not shown:
            return {}
        plt = _pyplot()
        fig, axes = plt.subplots(shown, 1, figsize=(8, 2.6 * shown), constrained_layout=True, squeeze=False)
        steps = list(range(1, self._pack.horizon + 1))
        target = (self._info.get("targets") or ["value"])[0]
        for i in range(shown):
            ax, row = axes[i][0], report["per_window"][i]
            ax.plot(steps, actual[i, :, 0], color="black", marker="o", markersize=3, label="actual")
            ax.plot(steps, pred[i, :, 0], color="tab:blue", label=f"dlcli (MASE {row['mase']:.3f})")
            ax.plot(steps, naive[i, :, 0], color="tab:orange", linestyle="--",
                    label=f"seasonal naive (MASE {row['seasonal_naive_mase']:.3f})")
            ax.set_title(f"{row['series']}: {target}", fontsize=9)
            ax.set_xlabel("steps ahead")
            ax.legend(fontsize=7)
        fig.suptitle(title)
        path = Path(folder) / f"forecast-{split}.png"
        _save(fig, path)
        return {"forecast_vs_actual": str(path)}

    def render_report(self, report, console):
        from rich.table import Table

        table = Table(title=f"horizon {report['horizon']}, season {report['season']}")
        for col in ("metric", "dlcli", "seasonal naive"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        table.add_row("loss", f"{report['loss']:.4f}", "")
        for key in self.metrics:
            table.add_row(key + (" (%)" if key == "smape" else ""), _fmt(report[key]),
                          _fmt(report["seasonal_naive"][key]))
        console.print(table)
        per = report["per_window"]
        console.print(f"{report['windows_beating_seasonal_naive']:,} of {len(per):,} windows beat the seasonal "
                      "naive forecast (lower MASE)")
        if len(per) > 1:
            rows = Table(title=f"per window (the first {min(len(per), LISTED_SERIES)})")
            for col in ("series", "mase", "seasonal naive mase"):
                rows.add_column(col, justify="left" if col == "series" else "right")
            for r in per[:LISTED_SERIES]:
                rows.add_row(r["series"], _fmt(r["mase"]), _fmt(r["seasonal_naive_mase"]))
            console.print(rows)

    def render_answer(self, name, answer, console):
        from rich.table import Table

        table = Table(title=name)
        table.add_column("time")
        steps = answer["forecast"]
        values = steps[0]["value"] if steps else 0
        keys = list(values) if isinstance(values, dict) else [self._info.get("targets", ["value"])[0]]
        for k in keys:
            table.add_column(k, justify="right")
        for step in steps:
            v = step["value"]
            table.add_row(step["time"], *(_fmt(v[k]) if isinstance(v, dict) else _fmt(v) for k in keys))
        console.print(table)

    def answer_line(self, answer):
        steps = answer["forecast"]
        return "  ".join(f"{s['time']} {_fmt(s['value'])}" for s in steps if not isinstance(s["value"], dict))


def torch_where_zero(denom, value):
    """value where denom > 0, else 0 (a forecast and a truth both 0 is no error)."""
    import torch

    return torch.where(denom > 0, value, torch.zeros_like(value))


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else f"{value:.4f}"
