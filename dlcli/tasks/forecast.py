"""`task: forecast`: the next `horizon` steps of one or more series (`dataset: series`, dlcli.data.series).

The head has horizon x targets outputs (step by step, each target in turn), trained on the series' scaled values
less the window's base forecast (its mean, or its seasonal naive forecast; dlcli.data.series). Every figure is
computed in the targets' own units: MAE, RMSE, sMAPE (in percent, 200 |F - A| / (|F| + |A|)) and MASE (each
window's mean absolute error over its series' in-sample seasonal naive error, then averaged over windows). A
window's target row carries what scoring needs (Pack): the truth, its base, its series' scale and the seasonal naive
forecast, which evaluate reports beside the model.

Two options change what the head answers. `quantiles: [0.1, 0.5, 0.9]` gives the head horizon x targets x
quantiles outputs, trained on the pinball loss (each quantile's own asymmetric absolute error, whose minimiser is
that quantile of the forecast's distribution); 0.5, the point forecast, is always among them, and the quantiles are
sorted per step so that they never cross; with `intervals: conformal` the head forecasts the point alone, and after
training each central interval is the point +- the empirical quantile (per horizon step) of its absolute errors over
every training and validation window, in series standard deviations. `blend: seasonal_naive` lets validation
decide how much of the seasonal naive forecast to mix in: after training, w on a grid 0, 0.1, ..., 1 that gives the
lowest MASE over the validation windows (ties: more network), and every forecast becomes w x the network's + (1 - w)
x the seasonal naive one (each quantile moves with its median, so an interval keeps its width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, ValidationInfo, field_validator, model_validator

from dlcli.errors import DataError, DlcliError
from dlcli.tasks import TASKS, Task

LOSSES = ("mae", "mse", "huber")
PLOTTED_SERIES = 6  # forecast-vs-actual panels in evaluate's figure
LISTED_SERIES = 20  # rows of evaluate's per-series table
BLEND_GRID = 11  # the network's weights blend: seasonal_naive tries: 0, 0.1, ..., 1
SPREAD_GRID = [round(0.5 + 0.1 * i, 1) for i in range(26)]  # calibrate's interval scales: 0.5, 0.6, ..., 3


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
    intervals: Literal["head", "conformal"] = Field(
        "head", description="how `quantiles` are made: head: the network forecasts each quantile, trained on the "
                            "pinball loss; conformal: the network forecasts the point (on `loss`) and each central "
                            "interval is the point +- the empirical quantile, per horizon step, of its absolute "
                            "errors over every training and validation window (in series standard deviations)")
    quantiles: list[float] | None = Field(None, description="forecast these quantiles of each step too (e.g. [0.1, "
                                          "0.5, 0.9]: an 80% interval), trained on the pinball loss (intervals: "
                                          "head) or from the errors of past windows (intervals: conformal); 0.5, the "
                                          "point forecast, is added when missing")
    calibrate: bool = Field(True, description="quantiles from the head: after training, scale every quantile's "
                                              "distance from the median by the factor (0.5 to 3) of the lowest "
                                              "pinball loss on the validation windows (conformal intervals are "
                                              "calibrated by construction)")
    blend: Literal["none", "seasonal_naive"] = Field(
        "none", description="seasonal_naive: after training, forecast w x the network's + (1 - w) x the seasonal "
                            "naive forecast, w in 0, 0.1, ..., 1 chosen for the lowest MASE on the validation windows")

    @field_validator("quantiles")
    @classmethod
    def _quantile_levels(cls, value, info: ValidationInfo):
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one quantile level, e.g. [0.1, 0.5, 0.9]")
        outside = [q for q in value if not 0 < q < 1]
        if outside:
            raise ValueError(f"{outside[0]:g} is not a quantile level: each lies strictly between 0 and 1")
        if len(set(value)) < len(value):
            twice = next(q for q in value if value.count(q) > 1)
            raise ValueError(f"{twice:g} is listed twice")
        if info.data.get("loss", "mae") != "mae" and info.data.get("intervals") != "conformal":
            raise ValueError(f"quantiles train on the pinball loss, not loss: {info.data['loss']}; remove one of them")
        return value

    @model_validator(mode="after")
    def _conformal_needs_levels(self):
        if self.intervals == "conformal" and not self.quantiles:
            raise ValueError("intervals: conformal gives intervals at the quantile levels: list them in "
                             "task.quantiles, e.g. [0.1, 0.5, 0.9]")
        return self

    def levels(self) -> list[float]:
        """The quantile levels the forecast answers, sorted, 0.5 among them; [] for a point forecast."""
        return sorted({*self.quantiles, 0.5}) if self.quantiles else []

    def head_levels(self) -> list[float]:
        """The quantile levels the network's head forecasts: the levels, or [] (the point) for conformal intervals."""
        return [] if self.intervals == "conformal" else self.levels()

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
        self._levels = self.levels()
        self._head = self.head_levels()
        self._mid = self._levels.index(0.5) if self._levels else 0
        width = len(self._head) or 1
        self._pack = Pack(int(self._info.get("horizon", len(names) // width)), len(self._info.get("targets", [0])))
        self._weight = float(self._info.get("naive_weight", 1.0))  # blend: the network's share, tuned on validation
        self._spread = float(self._info.get("interval_scale", 1.0))  # calibrate: the quantiles' spread, tuned too
        self._offsets = None  # conformal: each level's distance from the point (horizon, targets, levels), in stds
        if self.intervals == "conformal":
            import torch

            found = self._info.get("conformal_offsets")
            self._offsets = (torch.tensor(found, dtype=torch.float32) if found is not None else  # before calibration:
                             torch.zeros(self._pack.horizon, self._pack.targets, len(self._levels)))  # the point
        return self

    # ------------------------------------------------------------ training

    def _parts(self, y, device=None):
        y = as_tensor(y)
        return self._pack.parts(y.float() if device is None else y.to(device).float())

    def _grid(self, out):
        """The outputs as (windows, horizon, targets, quantiles); one quantile, the point, without `quantiles`."""
        return out.float().reshape(len(out), self._pack.horizon, self._pack.targets, len(self._head) or 1)

    def criterion(self, out, y, reduction="mean"):
        import torch
        import torch.nn.functional as F

        p = self._parts(y, out.device)
        z = (p["y"] - p["mean"][:, None]) / p["std"][:, None] - p["base"]
        o = self._grid(out)
        if self._head:  # pinball: q x the error above the quantile, (1 - q) x the error below it
            q = torch.tensor(self._head, device=out.device)
            diff = z[..., None] - o
            each = 2 * torch.maximum(q * diff, (q - 1) * diff)  # twice: at 0.5, the mae loss
        elif self.loss == "mae":
            o = o[..., 0]
            each = F.l1_loss(o, z, reduction="none")
        elif self.loss == "mse":
            each = F.mse_loss(o[..., 0], z, reduction="none")
        else:
            each = F.huber_loss(o[..., 0], z, reduction="none", delta=self.delta)
        per_window = each.flatten(1).mean(1)
        return per_window.sum() if reduction == "sum" else per_window.mean()

    def forecasts(self, out, y):
        """(windows, horizon, targets) in the targets' own units: the point forecast (the median with quantiles)."""
        return self.quantile_forecasts(out, y)[..., self._mid]

    def quantile_forecasts(self, out, y):
        """(windows, horizon, targets, quantiles) in the targets' own units (quantiles: 1 without `quantiles`)."""
        p = self._parts(y, out.device)
        return self.in_units(self._grid(out), p["base"], p["mean"], p["std"], p["naive"], self._weight, self._mid,
                             self._spread, self._offsets)

    def exported(self, out, y):
        """What an exported graph returns for these windows: the forecast, with a last axis of quantiles if any."""
        return self.quantile_forecasts(out, y) if self._levels else self.forecasts(out, y)

    @staticmethod
    def in_units(grid, base, mean, std, naive=None, weight: float = 1.0, mid: int = 0, spread: float = 1.0,
                 offsets=None):
        """The network's answers (windows, horizon, targets, quantiles) added to the base they correct, in the
        targets' own units given each window's series mean and std (windows, targets); quantiles sorted so that they
        never cross, their distance from the median times `spread`, or (`offsets`, conformal: a point forecast)
        the point plus each level's offset (horizon, targets, levels) times the series' std; blended with the
        seasonal naive forecast (windows, horizon, targets) by the network's weight, each quantile moved as its
        median is. An exported graph ends in it too."""
        q = (grid + base[..., None]) * std[:, None, :, None] + mean[:, None, :, None]
        if offsets is not None:
            q = q + offsets.to(q.device) * std[:, None, :, None]
        elif q.shape[-1] > 1:
            q = q.sort(-1).values
            if spread != 1.0:
                q = q[..., mid:mid + 1] + spread * (q - q[..., mid:mid + 1])
        if weight != 1.0:
            q = q + ((1 - weight) * (naive - q[..., mid]))[..., None]
        return q

    def tunes(self) -> bool:
        return self.blend == "seasonal_naive" or bool(self._head and self.calibrate)

    def tunes_on_history(self) -> bool:
        return self.intervals == "conformal"

    def tune_history(self, out, y) -> dict:
        """Conformal intervals from these windows (every training and validation window, with the weights and
        blend chosen): per horizon step and target, the absolute errors of the point forecast in series standard
        deviations; a central interval of coverage c = |1 - 2 q| lies at +- their ceil((n + 1) c)-th smallest of n
        (split conformal's finite-sample rank; the largest where that exceeds n), below the point for q < 0.5 and
        above it for q > 0.5. Windows with a missing truth are left out."""
        import torch

        p = self._parts(y, out.device)
        point = self.in_units(self._grid(out), p["base"], p["mean"], p["std"], p["naive"], self._weight)[..., 0]
        errors = ((p["y"] - point).abs() / p["std"][:, None]).double()
        errors = errors[torch.isfinite(errors).flatten(1).all(1)].sort(0).values  # (n, horizon, targets)
        n = len(errors)
        if not n:
            return {}
        offsets = []
        for q in self._levels:
            k = min(math.ceil((n + 1) * abs(1 - 2 * q)), n)
            offsets.append(0.0 * errors[0] if k == 0 else math.copysign(1.0, q - 0.5) * errors[k - 1])
        return {"conformal_offsets": torch.stack(offsets, -1).tolist(), "conformal_windows": n}

    def tune(self, out, y) -> dict | None:
        """On these (validation) windows: blend: seasonal_naive -> the network's weight w of the lowest MASE of w x
        its forecast + (1 - w) x the seasonal naive forecast (of equal MASE the larger w); calibrate (with
        quantiles) -> the spread of the lowest mean pinball loss (of equal loss the one nearest 1)."""
        found = {}
        if self.blend == "seasonal_naive":
            found.update(self._tune_blend(out, y))
        if self._head and self.calibrate:
            found.update(self._tune_spread(out, y, found.get("naive_weight", 1.0)))
        return found or None

    def _tune_spread(self, out, y, weight: float) -> dict:
        import torch

        p = self._parts(y, out.device)
        truth = p["y"].double()[..., None]
        lv = torch.tensor(self._levels, dtype=torch.float64, device=truth.device)
        found = {}
        for c in SPREAD_GRID:
            q = self.in_units(self._grid(out), p["base"], p["mean"], p["std"], p["naive"], weight, self._mid,
                              c).double()
            diff = truth - q
            found[c] = (torch.maximum(lv * diff, (lv - 1) * diff) / p["scale"].double()[:, None, :, None]).mean().item()
        best = min(found, key=lambda c: (found[c], abs(c - 1)))
        return {"interval_scale": best, "interval_scale_validation_pinball": [[c, v] for c, v in found.items()]}

    def _tune_blend(self, out, y) -> dict:
        import torch

        p = self._parts(y, out.device)
        model = self.in_units(self._grid(out), p["base"], p["mean"], p["std"])
        model = model[..., self._mid if self._head else 0].double()  # the point (conformal: the head's one column)
        naive, truth = p["naive"].double(), p["y"].double()
        scale = p["scale"].double()[:, None]
        found = {}
        for w in torch.linspace(1, 0, BLEND_GRID, dtype=torch.float64).tolist():
            guess = w * model + (1 - w) * naive
            found[round(w, 2)] = ((guess - truth).abs() / scale).flatten(1).mean(1).mean().item()
        best = min(found, key=lambda w: (found[w], -w))
        return {"naive_weight": best, "naive_weight_validation_mase": [[w, m] for w, m in found.items()]}

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
        shape = "(N, horizon, targets, quantiles)" if self._levels else "(N, horizon, targets)"
        return {"output": f"the forecast {shape} in the targets' own units, the step after the window's last first",
                "targets": list(self._info.get("targets", [])), "horizon": self._pack.horizon,
                **({"quantiles": self._levels} if self._levels else {}),
                **({"naive_weight": self._weight} if self._weight != 1.0 else {}),
                **({"interval_scale": self._spread} if self._spread != 1.0 else {})}

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
                **({"naive_weight": self._weight} if self.blend != "none" else {}),
                **({"interval_scale": self._spread} if self._head and self.calibrate else {}),
                **({"interval_method": "conformal", "conformal_windows": self._info.get("conformal_windows", 0)}
                   if self._offsets is not None else {}),
                **(self.interval_report(self.quantile_forecasts(out, y), p) if self._levels else {}),
                "forecast": pred.cpu().tolist() if len(out) <= PLOTTED_SERIES else None,
                **({} if torch.isfinite(p["y"]).all() else {"note": "some targets are missing"})}

    def interval_report(self, q, p) -> dict:
        """How well the quantiles hold, over every step of every window: per level the share of true values at or
        below it (a calibrated 0.9 quantile: 0.9), per central interval (levels q and 1 - q) the share inside it, the
        mean scaled pinball loss (each quantile's, over the series' MASE scale, averaged over levels: about half the
        scaled CRPS when the levels are many) and the MSIS of the widest central interval (M4's mean scaled interval
        score: width plus 2/alpha x each miss, over the MASE scale)."""
        import torch

        truth, scale = p["y"].double(), p["scale"].double()[:, None]
        q = q.double()
        levels = self._levels
        below = (truth[..., None] <= q).double().flatten(0, 2).mean(0)
        coverage = {f"{lv:g}": below[i].item() for i, lv in enumerate(levels)}
        diff = truth[..., None] - q
        lv = torch.tensor(levels, dtype=torch.float64, device=q.device)
        pinball = torch.maximum(lv * diff, (lv - 1) * diff) / scale[..., None]
        out = {"quantiles": levels, "coverage": coverage, "scaled_pinball": pinball.mean().item(), "intervals": {}}
        pairs = [(i, levels.index(round(1 - a, 10))) for i, a in enumerate(levels)
                 if a < 0.5 and round(1 - a, 10) in levels]
        for i, j in pairs:
            lo, hi = q[..., i], q[..., j]
            inside = ((truth >= lo) & (truth <= hi)).double().mean().item()
            out["intervals"][f"{round(levels[j] - levels[i], 10):g}"] = {"lower": levels[i], "upper": levels[j],
                                                                         "coverage": inside}
        if pairs:
            i, j = pairs[0]  # the widest
            alpha = 1 - (levels[j] - levels[i])
            lo, hi = q[..., i], q[..., j]
            score = (hi - lo) + 2 / alpha * ((lo - truth).clamp_min(0) + (truth - hi).clamp_min(0))
            out["msis"] = (score / scale).flatten(1).mean(1).mean().item()
            out["msis_interval"] = f"{round(levels[j] - levels[i], 10):g}"
        return out

    def plots(self, report, out, y, folder, split, title):
        from pathlib import Path

        from dlcli.plots import _pyplot, _save

        p = self._parts(y, out.device)
        pred, actual, naive = self.forecasts(out, y).cpu(), p["y"].cpu(), p["naive"].cpu()
        band = None
        if report.get("msis_interval"):  # the widest central interval, shaded
            wide = report["intervals"][report["msis_interval"]]
            q = self.quantile_forecasts(out, y).cpu()
            band = (q[..., self._levels.index(wide["lower"])], q[..., self._levels.index(wide["upper"])],
                    f"{float(report['msis_interval']):.0%}")
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
            if band is not None:
                ax.fill_between(steps, band[0][i, :, 0], band[1][i, :, 0], color="tab:blue", alpha=0.2,
                                label=f"dlcli {band[2]} interval")
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
        if "naive_weight" in report:
            console.print(f"blend: {report['naive_weight']:g} x the network + {1 - report['naive_weight']:g} x the "
                          "seasonal naive forecast (chosen on validation)")
        if "coverage" in report:
            shares = ", ".join(f"{level}: {share:.3f}" for level, share in report["coverage"].items())
            console.print(f"share of true values at or below each quantile: {shares}")
            for width, found in report["intervals"].items():
                console.print(f"{float(width):.0%} interval [{found['lower']:g}, {found['upper']:g}]: "
                              f"{found['coverage']:.1%} of true values inside")
            msis = f", MSIS ({float(report['msis_interval']):.0%}) {_fmt(report['msis'])}" if "msis" in report else ""
            if "interval_scale" in report:
                msis += f"; quantiles' spread x {report['interval_scale']:g} (chosen on validation)"
            if report.get("interval_method") == "conformal":
                msis += (f"; conformal, from the errors of {report['conformal_windows']:,} training and validation "
                         "windows")
            console.print(f"scaled pinball loss {_fmt(report['scaled_pinball'])}{msis}")
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
        levels = [lv for lv in (steps[0].get("quantiles") or {}) if lv != "0.5"] if steps and len(keys) == 1 else []
        for lv in levels:
            table.add_column(f"q{lv}", justify="right")
        for step in steps:
            v = step["value"]
            table.add_row(str(step.get("time", step.get("step"))),
                          *(_fmt(v[k]) if isinstance(v, dict) else _fmt(v) for k in keys),
                          *(_fmt(step["quantiles"][lv]) for lv in levels))
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
