"""`task: regression`: one or several numbers per sample. Targets are standardised with the training split's mean and
standard deviation (stored in the run); the network predicts standardised values and every answer, metric and export
comes back in the target's own units."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat

from dlcli.errors import DataError
from dlcli.tasks import ERROR, TASKS, WARNING, ColumnsReader, Task, unusable_rows

LOSSES = ("mse", "mae", "huber", "smooth_l1")
OUTLIER_SCALES = 4.0  # data check: a value this many robust standard deviations from the median is an outlier
OUTLIER_EXAMPLES = 3  # outliers named in the finding, the farthest first


class NumberReader(ColumnsReader):
    """Numeric target columns as float32 (N, T); a missing or non-numeric cell is an error naming its file, line
    and column, or (data.missing: drop) drops its row with a note."""

    dropped_because = "without a numeric target"

    def read(self, cells):
        import numpy as np

        block = np.empty((cells.rows, len(self.columns)), dtype=np.float32)
        ok = np.ones(cells.rows, dtype=bool)
        for j, column in enumerate(self.columns):
            values, bad, text = cells.numbers(column)
            gap = np.isnan(values)
            if not self.drop and gap.any():
                row = int(np.flatnonzero(gap)[0])
                if bad[row]:
                    raise DataError(f"{cells.where(row)}, column '{column}': '{text[row].as_py()}' is not a number "
                                     "(a regression target must be one; fix the cell, or set data.missing: drop "
                                     "to skip such rows)")
                raise DataError(f"{cells.where(row)}, column '{column}' has no target value (fill it, or set "
                                 "data.missing: drop to skip such rows)")
            ok &= ~gap
            block[:, j] = np.where(gap, 0.0, values)
        return block, ok


@TASKS.register("regression")
class Regression(Task):
    """Numbers: mse (default), mae, huber or smooth_l1 on standardised targets; mae, rmse and r2 in the targets'
    units, per target and averaged; best.pt and early stopping follow val_loss by default."""

    loss: Literal[LOSSES] = Field("mse", description="mse, mae, huber or smooth_l1 (the last two weigh outliers "
                                                     "less: see delta), on the targets as standardize leaves them")
    delta: PositiveFloat = Field(1.0, description="huber: where the loss turns linear; smooth_l1: its beta "
                                                  "(in standard deviations of the target)")
    standardize: bool = Field(True, description="train on (y - mean) / std of the training targets")

    noun: ClassVar[str] = "targets"
    step_metric: ClassVar[str] = "mae"
    metrics: ClassVar[tuple[str, ...]] = ("mae", "rmse", "r2")
    headline: ClassVar[str] = "r2"
    default_monitor: ClassVar[str] = "val_loss"
    bag_rule: ClassVar[str | None] = "values"
    export_output_name: ClassVar[str] = "predictions"

    def check_train(self, train_cfg):
        if train_cfg.label_smoothing:
            return "label_smoothing: a regression has no classes to smooth; remove it"
        if train_cfg.class_weights != "none":
            return "class_weights: a regression has no classes to weight; remove it"
        return None

    def reader(self, entry, columns):
        return NumberReader(columns, getattr(entry, "missing", "fill") == "drop")

    def fit(self, y_train, names):
        import numpy as np

        y = np.asarray(y_train, dtype=np.float64)
        if not self.standardize or len(y) == 0:
            return {"mean": [0.0] * len(names), "std": [1.0] * len(names)}
        mean, std = y.mean(0), y.std(0)
        std = np.where(std > 0, std, 1.0)
        return {"mean": mean.tolist(), "std": std.tolist()}

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        import torch

        super().bind(info, names)
        k = len(self._names)
        mean, std = self._info.get("mean", [0.0] * k), self._info.get("std", [1.0] * k)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self._std = torch.tensor(std, dtype=torch.float32, device=device)
        return self

    # ------------------------------------------------------------ training

    def _scaled(self, y):
        return (y.float() - self._mean.to(y.device)) / self._std.to(y.device)

    def criterion(self, out, y, reduction="mean"):
        import torch.nn.functional as F

        # every sample has as many targets, so the mean over all values is the mean of the samples' means
        out, z, reduce = out.float(), self._scaled(y), "sum" if reduction == "sum" else "mean"
        if self.loss == "mse":
            loss = F.mse_loss(out, z, reduction=reduce)
        elif self.loss == "mae":
            loss = F.l1_loss(out, z, reduction=reduce)
        elif self.loss == "huber":
            loss = F.huber_loss(out, z, reduction=reduce, delta=self.delta)
        else:
            loss = F.smooth_l1_loss(out, z, reduction=reduce, beta=self.delta)
        return loss / out.shape[1] if reduction == "sum" else loss  # a sum over samples of their mean

    def step_stat(self, out, y):
        """The batch's summed absolute error in the targets' units, averaged over targets."""
        return ((out.detach().float() - self._scaled(y)).abs() * self._std.to(y.device)).sum() / out.shape[1]

    def predictions(self, out):
        return out.float() * self._std.to(out.device) + self._mean.to(out.device)

    def stats(self, out, y):
        import torch

        pred, y = self.predictions(out).double(), y.double()
        err = pred - y
        return {"count": torch.tensor(float(len(y)), dtype=torch.float64, device=y.device),
                "loss": self.loss_sum(out, y), "abs": err.abs().sum(0), "sq": err.pow(2).sum(0),
                "y": y.sum(0), "y2": y.pow(2).sum(0)}

    def loss_sum(self, out, y):
        import torch

        if not len(y):
            return out.new_zeros((), dtype=torch.float64)
        return self.criterion(out, y, reduction="sum").double()

    def scores(self, stats):
        n = float(stats["count"])
        if not n:
            return {"loss": float("nan"), "mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
        sse, sst = stats["sq"].double(), stats["y2"].double() - stats["y"].double() ** 2 / n
        r2 = [1 - e / t if t > 1e-12 else float("nan") for e, t in zip(sse.tolist(), sst.tolist())]
        return {"loss": float(stats["loss"]) / n, "mae": (stats["abs"].double() / n).mean().item(),
                "rmse": (sse / n).sqrt().mean().item(), "r2": sum(r2) / len(r2)}

    # ------------------------------------------------------------ using

    def answers(self, out, top_k=5):
        values = self.predictions(out).tolist()
        if len(self._names) == 1:
            return [{"prediction": row[0]} for row in values]
        return [{"prediction": dict(zip(self._names, row))} for row in values]

    def export_output(self, out):
        return self.predictions(out)

    def export_meta(self):
        return {"output": "predicted values (N, targets) in the targets' own units; the run's normalisation is "
                          "inside", "targets": list(self._names)}

    def report(self, out, y):
        from dlcli.tasks.metrics import regression_metrics

        pred = self.predictions(out).cpu()
        per = regression_metrics(pred, y.float().cpu())
        mean = lambda values: (sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values)))  # noqa: E731
        report = {"samples": len(y), "loss": self.criterion(out.float(), y.to(out.device)).item(),
                  "mae": mean(per["mae"]), "rmse": mean(per["rmse"]), "r2": mean(per["r2"]) if any(
                      v is not None for v in per["r2"]) else None}
        report["per_target"] = {name: {"mae": per["mae"][i], "rmse": per["rmse"][i], "r2": per["r2"][i],
                                       "mean": y[:, i].double().mean().item()}
                                for i, name in enumerate(self._names)}
        report["targets"] = list(self._names)
        return report

    def plots(self, report, out, y, folder, split, title):
        from dlcli.plots import write_regression

        path = folder / f"regression-{split}.png"
        r2 = report.get("r2")
        write_regression(path, self.predictions(out).cpu().numpy(), y.float().cpu().numpy(), self._names,
                         f"{title}, r2 {r2:.4f}" if r2 is not None else title)
        return {"predicted_vs_actual": str(path)}

    def render_report(self, report, console):
        from rich.table import Table

        from dlcli.tasks.classification import metrics_table

        overall = metrics_table()
        overall.add_row("loss", f"{report['loss']:.4f}")
        for key in ("mae", "rmse", "r2"):
            overall.add_row(key, _fmt(report[key]))
        console.print(overall)
        per = Table(title="per target")
        for col in ("target", "mae", "rmse", "r2", "mean"):
            per.add_column(col, justify="left" if col == "target" else "right")
        for name, row in report["per_target"].items():
            per.add_row(name, *(_fmt(row[k]) for k in ("mae", "rmse", "r2", "mean")))
        console.print(per)

    def render_answer(self, name, answer, console):
        console.print(f"{name}: {self.answer_line(answer)}", soft_wrap=True, markup=False)

    # ------------------------------------------------------------ dlcli data check

    def survey(self, entry, columns):
        return NumberReader(columns, drop=True)

    def check_targets(self, files, entry):
        """Rows without a numeric target; per target and file its range, constant targets and outliers."""
        import numpy as np

        findings, stats = [], {}
        for split, found in files.items():
            t = found.targets
            if t.keep is not None:
                findings.append(unusable_rows(found, entry, "missing-target", "a target that is empty or not a "
                                                                              "number"))
            rows = np.flatnonzero(t.keep) if t.keep is not None else np.arange(len(t.y))
            stats[split] = {}
            for j, name in enumerate(t.names):
                values = t.y[rows, j].astype(np.float64)
                stats[split][name] = target_stats(values)
                findings += self._spread(split, found, name, values, rows)
        return findings, {"targets": {"names": list(files["train"].targets.names), "stats": stats}}

    def _spread(self, split, found, name, values, rows) -> list[tuple[str, str, str]]:
        """A constant target (nothing to learn, r2 undefined) or values far out (a typo, another unit)."""
        import numpy as np

        if not len(values):
            return []
        if values.min() == values.max():
            # train: the headline r2 is NaN and the model learns a constant; test: only the test r2 is lost
            why = ("there is nothing to learn and r2 is undefined; choose another label column" if split == "train"
                   else f"the {split} r2 is undefined")
            return [(ERROR if split == "train" else WARNING, "constant-target",
                     f"target '{name}' is {values[0]:g} in every {split} row: {why}")]
        far = outliers(values)
        if not len(far):
            return []
        shown = ", ".join(f"{found.where(int(rows[i]))}: {values[i]:g}" for i in far[:OUTLIER_EXAMPLES])
        advice = ("under loss mse they weigh most: fix them, or set task.loss: huber" if self.loss == "mse"
                  else f"task.loss: {self.loss} keeps them from dominating")
        lie = "value lies" if len(far) == 1 else "values lie"
        return [(WARNING, "outliers", f"target '{name}': {len(far):,} {split} {lie} more than "
                 f"{OUTLIER_SCALES:g} robust standard deviations from the median {np.median(values):g} (typos? "
                 f"another unit?) e.g. {shown}; {advice}")]

    def answer_line(self, answer):
        value = answer["prediction"]
        if isinstance(value, dict):
            return "  ".join(f"{k} {_fmt(v)}" for k, v in value.items())
        return f"{self._names[0]} {_fmt(value)}"


def target_stats(values) -> dict:
    """A target's range in one file (data check's `targets` section); None where there is no value."""
    import numpy as np

    if not len(values):
        return {"rows": 0, "min": None, "max": None, "mean": None, "std": None, "median": None, "outliers": 0}
    figures = {"min": values.min(), "max": values.max(), "mean": values.mean(), "std": values.std(),
               "median": np.median(values)}
    # the targets are read as float32: more than its 7 significant digits would be noise
    return {"rows": len(values), **{k: float(f"{v:.7g}") for k, v in figures.items()},
            "outliers": len(outliers(values))}


def outliers(values):
    """Indices of the values beyond OUTLIER_SCALES robust standard deviations of the median, the farthest first.

    The robust standard deviation is 1.4826 x the median absolute deviation (the standard deviation of normal
    data), or the interquartile range / 1.349 where over half the values are equal; none where both are 0."""
    import numpy as np

    median = np.median(values)
    distance = np.abs(values - median)
    scale = 1.4826 * np.median(distance)
    if scale == 0:
        q1, q3 = np.percentile(values, [25, 75])
        scale = (q3 - q1) / 1.349
    if scale == 0:
        return np.zeros(0, dtype=np.int64)
    far = np.flatnonzero(distance > OUTLIER_SCALES * scale)
    return far[np.argsort(-distance[far], kind="stable")]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else f"{value:.4f}"
