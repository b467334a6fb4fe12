"""`task: multilabel`: any number of labels per sample (a set), one sigmoid output per label, binary cross-entropy.

The labels come from several 0/1 columns (`label_column: [a, b, c]`) or from one column of labels joined by a
separator (`label_separator: "|"`); both spellings give the same run."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from dlcli.errors import DataError
from dlcli.tasks import ERROR, INFO, TASKS, WARNING, ColumnsReader, Targets, Task, unusable_rows

MIN_TUNING_POSITIVES = 10  # positives a label needs in the validation split before its threshold is tuned
TRUE = {"1", "1.0", "true", "yes", "y", "t"}
FALSE = {"0", "0.0", "false", "no", "n", "f"}
RARE = 5  # data check: a label on in fewer training rows than this (or under RARE_SHARE of them) is a warning
RARE_SHARE = 0.01


class FlagReader(ColumnsReader):
    """Several 0/1 columns (numbers, true/false, yes/no) as float32 (N, L)."""

    dropped_because = "with a label cell that is not 0 or 1"

    def read(self, cells):
        import numpy as np

        block = np.zeros((cells.rows, len(self.columns)), dtype=np.float32)
        ok = np.ones(cells.rows, dtype=bool)
        for j, column in enumerate(self.columns):
            text = cells.strings(column).to_pylist()
            for i, value in enumerate(text):
                low = value.lower() if value is not None else None
                if low in TRUE:
                    block[i, j] = 1.0
                elif low in FALSE:
                    continue
                elif self.drop:
                    ok[i] = False
                else:
                    what = "is empty" if value is None else f"'{value}' is not 0 or 1"
                    raise DataError(f"{cells.where(i)}, column '{column}' {what} (a label column holds 0/1, "
                                     "true/false or yes/no; fix the cell, or set data.missing: drop)")
        return block, ok


class SetReader:
    """One column of labels joined by a separator (`cat|dog`); an empty cell is the empty set."""

    def __init__(self, column: str, separator: str):
        self.column, self.separator = column, separator
        self.rows: list[list[str]] = []

    def add(self, cells) -> None:
        for value in cells.strings(self.column).to_pylist():
            parts = value.split(self.separator) if value else []
            self.rows.append(sorted({p.strip() for p in parts if p.strip()}))

    def finish(self, source: str, names: list[str] | None = None) -> Targets:
        import numpy as np

        if not self.rows:
            raise DataError(f"{source}: no data rows under the header")
        seen = sorted({label for row in self.rows for label in row})
        if names is None:
            names = seen
            if not names:
                raise DataError(f"{source}: label column '{self.column}' holds no labels")
        else:
            unseen = sorted(set(seen) - set(names))
            if unseen:
                raise DataError(f"{source}: label '{unseen[0]}' does not occur in the train file")
        index = {name: i for i, name in enumerate(names)}
        y = np.zeros((len(self.rows), len(names)), dtype=np.float32)
        for i, row in enumerate(self.rows):
            y[i, [index[label] for label in row]] = 1.0
        return Targets(y, names)


@TASKS.register("multilabel")
class Multilabel(Task):
    """A set of labels: sigmoid outputs, binary cross-entropy (pos_weight auto for rare labels), a decision threshold
    (0.5, any number, or tuned per label on the validation split); micro and macro F1, subset accuracy, per-label
    precision/recall/F1 and mean average precision. Macro F1 averages over every label, one neither present nor
    predicted counting 0, as scikit-learn's f1_score(average="macro", zero_division=0)."""

    threshold: float | Literal["tuned"] = Field(0.5, description="a label is predicted when its probability "
                                                "reaches this; tuned: per label, the F1-best on validation")
    pos_weight: Literal["none", "auto"] = Field("none", description="auto: weight each label's positives by "
                                                "negatives / positives in training")

    noun: ClassVar[str] = "labels"
    step_metric: ClassVar[str] = "subset_accuracy"
    metrics: ClassVar[tuple[str, ...]] = ("f1_micro", "f1_macro", "subset_accuracy")
    headline: ClassVar[str] = "f1_micro"
    default_monitor: ClassVar[str] = "val_loss"
    integer_steps: ClassVar[bool] = True
    export_output_name: ClassVar[str] = "probabilities"

    def faithful_loss(self):
        """pos_weight: auto rescales the loss (val_loss can rise while micro F1 climbs on), and tuned thresholds move
        the decision after training: then the loss is not what the answers are scored on."""
        return self.pos_weight == "none" and self.threshold != "tuned"

    def check_train(self, train_cfg):
        if train_cfg.label_smoothing:
            return "label_smoothing: not used by multilabel (set task.pos_weight: auto for rare labels); remove it"
        if train_cfg.class_weights != "none":
            return "class_weights: multilabel weighs rare labels with task.pos_weight: auto; remove it"
        return None

    @field_validator("threshold")
    @classmethod
    def _between(cls, v):
        if v != "tuned" and not 0 < v < 1:
            raise ValueError(f"must be between 0 and 1 (exclusive) or tuned, not {v}")
        return v

    def label_columns(self, entry):
        columns = super().label_columns(entry)
        separator = getattr(entry, "label_separator", None)
        if separator is not None and len(columns) != 1:
            raise DataError(f"data.label_separator: splits one column of labels, but data.label_column names "
                             f"{len(columns)}: name one column, or drop label_separator for 0/1 columns")
        return columns

    def reader(self, entry, columns):
        separator = getattr(entry, "label_separator", None)
        if separator is not None:
            return SetReader(columns[0], separator)
        return FlagReader(columns, getattr(entry, "missing", "fill") == "drop")

    def fit(self, y_train, names):
        import numpy as np

        y = np.asarray(y_train, dtype=np.float64)
        return {"positives": y.sum(0).astype(int).tolist(), "rows": int(len(y))}

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        import torch

        super().bind(info, names)
        k = len(self._names)
        self._pos_weight = None
        if self.pos_weight == "auto" and "positives" in self._info:
            pos = torch.tensor(self._info["positives"], dtype=torch.float32)
            neg = self._info["rows"] - pos
            self._pos_weight = torch.where(pos > 0, neg / pos.clamp_min(1), torch.ones_like(pos)).to(device)
        thresholds = self._info.get("thresholds")
        if thresholds is None or self.threshold != "tuned":
            thresholds = [0.5 if self.threshold == "tuned" else float(self.threshold)] * k
        self._threshold = torch.tensor(thresholds, dtype=torch.float32, device=device)
        return self

    # ------------------------------------------------------------ training

    def criterion(self, out, y, reduction="mean"):
        import torch.nn.functional as F

        weight = self._pos_weight.to(out.device) if self._pos_weight is not None else None
        per = F.binary_cross_entropy_with_logits(out.float(), y.float(), pos_weight=weight, reduction="none").mean(1)
        return per.sum() if reduction == "sum" else per.mean()

    def _predicted(self, out):
        return out.float().sigmoid() >= self._threshold.to(out.device)

    def step_stat(self, out, y):
        return (self._predicted(out.detach()) == y.bool()).all(1).sum()

    def stats(self, out, y):
        import torch

        pred, truth = self._predicted(out), y.bool()
        count = torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)
        loss = self.criterion(out, y, reduction="sum").double() if len(y) else count * 0
        return {"count": count, "loss": loss, "tp": (pred & truth).sum(0).double(),
                "fp": (pred & ~truth).sum(0).double(), "fn": (~pred & truth).sum(0).double(),
                "exact": (pred == truth).all(1).sum().double()}

    def scores(self, stats):
        from dlcli.tasks.metrics import prf

        n = float(stats["count"])
        if not n:
            return {"loss": float("nan"), **{m: float("nan") for m in self.metrics}}
        tp, fp, fn = (stats[k].double().cpu() for k in ("tp", "fp", "fn"))
        micro = prf(tp.sum(), tp.sum() + fp.sum(), tp.sum() + fn.sum())[2].item()
        _, _, f1 = prf(tp, tp + fp, tp + fn)
        # over every label, as scikit-learn's f1_score(average="macro", zero_division=0): a label neither present
        # nor predicted counts 0 (a split that never shows a label cannot credit the model with it)
        macro = f1.mean().item()
        return {"loss": float(stats["loss"]) / n, "f1_micro": micro, "f1_macro": macro,
                "subset_accuracy": float(stats["exact"]) / n}

    def tunes(self) -> bool:
        return self.threshold == "tuned"

    def tune(self, out, y) -> dict | None:
        """threshold: tuned -> per label, the threshold of the best F1 on these (validation) outputs, from a grid of
        0.05 steps (thresholds at the exact scores of a few rows fit those rows, not the next ones). A label with
        fewer than MIN_TUNING_POSITIVES positives here keeps 0.5: its F1 curve is noise."""
        if self.threshold != "tuned":
            return None
        import torch

        probs, truth = out.float().sigmoid().cpu(), y.bool().cpu()
        grid = torch.arange(1, 20, dtype=torch.float32) / 20
        chosen = []
        for j in range(probs.shape[1]):
            p, t = probs[:, j], truth[:, j]
            if int(t.sum()) < MIN_TUNING_POSITIVES:
                chosen.append(0.5)
                continue
            pred = p[None, :] >= grid[:, None]  # (thresholds, rows)
            tp, fp, fn = (pred & t).sum(1), (pred & ~t).sum(1), (~pred & t).sum(1)
            f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
            best = f1.max()
            ties = (f1 == best).nonzero().flatten()  # of equal F1, the threshold nearest 0.5
            chosen.append(round(float(grid[ties[(grid[ties] - 0.5).abs().argmin()]]), 2))
        return {"thresholds": chosen}

    # ------------------------------------------------------------ using

    def answers(self, out, top_k=5):
        probs = out.float().sigmoid()
        pred = probs >= self._threshold.to(out.device)
        return [{"labels": [n for n, on in zip(self._names, flags) if on],
                 "probabilities": dict(zip(self._names, row))}
                for row, flags in zip(probs.tolist(), pred.tolist())]

    def export_output(self, out):
        return out.float().sigmoid()

    def export_meta(self):
        return {"output": "per-label probabilities (N, labels), sigmoid applied; a label is on at its threshold",
                "labels": list(self._names), "thresholds": self._threshold.tolist()}

    def report(self, out, y):
        from dlcli.tasks.metrics import average_precision, prf

        out, y = out.float().cpu(), y.float().cpu()
        scores = self.scores({k: v.cpu() for k, v in self.stats(out, y).items()})
        pred, truth = self._predicted(out), y.bool()
        tp, fp, fn = ((pred & truth).sum(0).double(), (pred & ~truth).sum(0).double(),
                      (~pred & truth).sum(0).double())
        precision, recall, f1 = prf(tp, tp + fp, tp + fn)
        probs = out.sigmoid()
        ap = [average_precision(probs[:, j], truth[:, j]) for j in range(len(self._names))]
        found = [v for v in ap if v is not None]
        report = {"samples": len(y), **scores, "map": sum(found) / len(found) if found else None,
                  "label_accuracy": (pred == truth).double().mean().item()}
        report["per_label"] = [
            {"label": name, "precision": precision[j].item(), "recall": recall[j].item(), "f1": f1[j].item(),
             "average_precision": ap[j], "support": int(truth[:, j].sum()), "threshold": self._threshold[j].item()}
            for j, name in enumerate(self._names)]
        report["labels"] = list(self._names)
        return report

    def plots(self, report, out, y, folder, split, title):
        from dlcli.plots import write_label_scores

        path = folder / f"labels-{split}.png"
        write_label_scores(path, report["per_label"], f"{title}, micro F1 {report['f1_micro']:.4f}")
        return {"per_label": str(path)}

    def render_report(self, report, console):
        from rich.table import Table

        from dlcli.tasks.classification import metrics_table

        overall = metrics_table()
        for key, label in (("loss", "loss"), ("f1_micro", "micro F1"), ("f1_macro", "macro F1"),
                           ("subset_accuracy", "subset accuracy"), ("label_accuracy", "label accuracy"),
                           ("map", "mean average precision")):
            overall.add_row(label, "-" if report.get(key) is None else f"{report[key]:.4f}")
        console.print(overall)
        per = Table(title="per label")
        for col in ("label", "precision", "recall", "F1", "AP", "support", "threshold"):
            per.add_column(col, justify="left" if col == "label" else "right")
        for row in report["per_label"]:
            ap = "-" if row["average_precision"] is None else f"{row['average_precision']:.4f}"
            per.add_row(row["label"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", ap,
                        f"{row['support']:,}", f"{row['threshold']:.3f}")
        console.print(per)

    def render_answer(self, name, answer, console):
        from rich.table import Table

        table = Table(title=name, title_justify="left")
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("predicted", justify="center")
        ranked = sorted(answer["probabilities"].items(), key=lambda kv: -kv[1])
        for label, p in ranked:
            table.add_row(label, f"{p:.4f}", "yes" if label in answer["labels"] else "")
        console.print(table)

    def answer_line(self, answer):
        return ", ".join(answer["labels"]) or "(no label)"

    # ------------------------------------------------------------ dlcli data check

    def survey(self, entry, columns):
        separator = getattr(entry, "label_separator", None)
        if separator is not None:
            return SetReader(columns[0], separator)  # every file keeps its own labels: compared below
        return FlagReader(columns, True)

    def check_targets(self, files, entry):
        """Label cells that are not 0/1; how often each label is on per file, and rows with none; labels that train
        never (or always, or rarely) has on, or that only the test file has."""
        findings, counts, rows, empty = [], {}, {}, {}
        for split, found in files.items():
            t = found.targets
            if t.keep is not None:
                findings.append(unusable_rows(found, entry, "bad-label-cell", "a label cell that is not 0 or 1"))
            y = t.y if t.keep is None else t.y[t.keep]
            counts[split] = dict(zip(t.names, y.sum(0).astype(int).tolist()))
            rows[split], empty[split] = len(y), int((y.sum(1) == 0).sum())
            if empty[split]:
                findings.append((INFO, "no-label", f"{found.source}: {empty[split]:,} of {len(y):,} rows have no "
                                 f"label on (the empty set: an answer the model learns to give)", [found.source]))
        train = counts["train"]
        for split, found in counts.items():
            for name, n in found.items():
                if split != "train" and name not in train and n:
                    findings.append((ERROR, "label-not-in-train", f"label '{name}' is on in {_rows(n, split)} "
                                     f"but never in train: a model cannot learn it"))
        for name, n in train.items():
            findings += self._rarity(name, n, rows["train"], {s: c.get(name, 0) for s, c in counts.items()
                                                              if s != "train"})
        names = list(train) + sorted({n for found in counts.values() for n in found} - set(train))
        return findings, {"labels": {"names": names, "counts": counts, "rows": rows, "no_label": empty}}

    def _rarity(self, name: str, n: int, rows: int, elsewhere: dict[str, int]) -> list[tuple[str, str, str]]:
        if n == 0:
            seen = ", ".join(_rows(k, split) for split, k in elsewhere.items() if k)
            if seen:  # its test score would mean nothing
                return [(ERROR, "label-never-on", f"label '{name}' is on in {seen} but never in train: a model "
                         f"cannot learn it")]
            return [(WARNING, "label-never-on", f"label '{name}' is never on in train: the model learns never to "
                     f"predict it (drop it?)")]
        if n == rows:
            return [(WARNING, "label-always-on", f"label '{name}' is on in every training row: there is nothing to "
                     f"learn (drop it?)")]
        if n < RARE or n < RARE_SHARE * rows:
            weigh = "; task.pos_weight: auto weighs its positives up" if self.pos_weight == "none" else ""
            return [(WARNING, "rare-label", f"label '{name}' is on in only {n:,} of {rows:,} training rows "
                     f"({n / rows:.1%}){weigh}")]
        return []


def _rows(n: int, split: str) -> str:
    return f"{n:,} {split} row{'' if n == 1 else 's'}"
