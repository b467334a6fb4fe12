"""`task: classification` (the default): one class per sample, softmax over the classes, cross-entropy."""

from __future__ import annotations

from typing import ClassVar

from dlcli.errors import DataError, closest
from dlcli.tasks import ERROR, TASKS, WARNING, Targets, Task

# A label column of numbers with more distinct values than this is refused unless `task: classification` is spelled
# out: a measurement (price, mpg) read as classes trains a useless classifier without a word of warning.
MAX_NUMERIC_CLASSES = 20


def label_names(values) -> list[str]:
    """Class names in a stable order: numerically when every label is a number, else alphabetically."""
    unique = set(values)

    def number(v):
        try:
            return float(v)
        except ValueError:
            return None

    if all(number(v) is not None for v in unique):
        return sorted(unique, key=float)
    return sorted(unique)


def looks_like_measurement(names: list[str]) -> bool:
    """Numbers with many distinct values, not the codes 0..k-1 of classes."""
    try:
        values = sorted(float(v) for v in names)
    except ValueError:
        return False
    if len(values) <= MAX_NUMERIC_CLASSES:
        return False
    return values != [float(i) for i in range(len(values))]


def measurement_refusal(source: str, column: str, distinct: int) -> str:
    """Why a numeric label column with many values is not read as classes (training and `dlcli data check` alike)."""
    return (f"{source}: label column '{column}' holds numbers with {distinct:,} distinct values: set `task: "
            f"regression` to predict the number, or `task: classification` to classify it anyway")


class ClassReader:
    """One label column as class codes, chunk by chunk; names in first-seen order until `finish` sorts them."""

    def __init__(self, task: "Classification", column: str):
        self.task, self.column = task, column
        self.codes, self.index = [], {}

    def add(self, cells) -> None:
        import numpy as np
        import pyarrow.compute as pc

        values = cells.strings(self.column)
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{cells.where(row)} has no value in label column '{self.column}'")
        encoded = pc.dictionary_encode(values)
        local = [self.index.setdefault(v, len(self.index)) for v in encoded.dictionary.to_pylist()]
        self.codes.append(np.asarray(local, dtype=np.int64)[encoded.indices.to_numpy(zero_copy_only=False)])

    def finish(self, source: str, names: list[str] | None = None) -> Targets:
        import numpy as np

        if not self.codes:
            raise DataError(f"{source}: no data rows under the header")
        seen = list(self.index)
        if names is None:  # the training file decides the classes
            names = label_names(seen)
            if len(names) < 2:
                raise DataError(f"{source}: label column '{self.column}' has only one class ({names[0]})")
            if not self.task._spelled and looks_like_measurement(names):
                raise DataError(measurement_refusal(source, self.column, len(names)))
        else:
            unseen = sorted(set(seen) - set(names))
            if unseen:
                raise DataError(f"{source}: label '{unseen[0]}' does not occur in the train file")
        to_class = np.asarray([names.index(v) for v in seen], dtype=np.int64)
        y = to_class[np.concatenate(self.codes)]
        return Targets(y, names, None, y)


class ClassSurvey(ClassReader):
    """ClassReader for `dlcli data check`: a row without a label is marked in Targets.keep rather than stopping the
    read, and every file keeps its own classes (check_targets compares them with train's)."""

    def __init__(self, task: "Classification", column: str):
        super().__init__(task, column)
        self.present = []

    def add(self, cells) -> None:
        import numpy as np
        import pyarrow.compute as pc

        values = cells.strings(self.column)
        present = values.is_valid().to_numpy(zero_copy_only=False)
        encoded = pc.dictionary_encode(values.filter(present))
        local = [self.index.setdefault(v, len(self.index)) for v in encoded.dictionary.to_pylist()]
        codes = np.zeros(len(present), dtype=np.int64)
        codes[present] = np.asarray(local, dtype=np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]
        self.codes.append(codes)
        self.present.append(present)

    def finish(self, source: str, names: list[str] | None = None) -> Targets:
        import numpy as np

        names = label_names(list(self.index))
        to_class = np.asarray([names.index(v) for v in self.index] or [0], dtype=np.int64)
        y = to_class[np.concatenate(self.codes)] if self.codes else np.zeros(0, dtype=np.int64)
        keep = np.concatenate(self.present) if self.present else np.zeros(0, dtype=bool)
        return Targets(y, names, None if keep.all() else keep, y)


@TASKS.register("classification")
class Classification(Task):
    """Which class? Cross-entropy over the classes (train.label_smoothing and train.class_weights apply), accuracy;
    evaluate adds per-class precision/recall/F1, the confusion matrix, and ROC AUC for two classes."""

    noun: ClassVar[str] = "classes"
    step_metric: ClassVar[str] = "accuracy"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    headline: ClassVar[str] = "accuracy"
    default_monitor: ClassVar[str] = "val_accuracy"
    bag_rule: ClassVar[str | None] = "probabilities"
    integer_steps: ClassVar[bool] = True
    export_output_name: ClassVar[str] = "probabilities"
    uses_top_k: ClassVar[bool] = True

    def label_columns(self, entry) -> list[str]:
        columns = super().label_columns(entry)
        if len(columns) != 1:
            raise DataError(f"data.label_column: classification reads one column of classes, not {len(columns)} "
                             "(several 0/1 columns are `task: multilabel`, several numbers `task: regression`)")
        return columns

    def reader(self, entry, columns):
        return ClassReader(self, columns[0])

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        super().bind(info, names)
        self._smoothing = train_cfg.label_smoothing if train_cfg is not None else 0.0
        self._weights = None
        if train_cfg is not None and y_train is not None:
            weights = class_weights(train_cfg.class_weights, y_train, self._names)
            self._weights = weights.to(device) if weights is not None else None
        return self

    def criterion(self, out, y, reduction="mean"):
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), y, self._weights, label_smoothing=self._smoothing, reduction=reduction)

    def step_stat(self, out, y):
        return (out.detach().argmax(1) == y).sum()

    def stats(self, out, y):
        import torch
        import torch.nn.functional as F

        if not len(y):
            return {"count": torch.zeros((), dtype=torch.float64), "loss": torch.zeros((), dtype=torch.float64),
                    "correct": torch.zeros((), dtype=torch.float64)}
        return {"count": torch.tensor(float(len(y)), dtype=torch.float64),
                "loss": F.cross_entropy(out.float(), y, reduction="sum").double(),
                "correct": (out.argmax(1) == y).sum().double()}

    def scores(self, stats):
        n = float(stats["count"])
        if not n:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {"loss": float(stats["loss"]) / n, "accuracy": float(stats["correct"]) / n}

    # ------------------------------------------------------------ using

    def answers(self, out, top_k=5):
        import torch

        probs = torch.softmax(out.float(), dim=1)
        return [{"top": top} for top in ranked(probs, self._names, top_k)]

    def export_output(self, out):
        import torch

        return torch.softmax(out.float(), dim=1)

    def export_meta(self):
        return {"output": "class probabilities (N, classes), softmax applied; the run's normalisation is inside",
                "classes": list(self._names)}

    def report(self, out, y):
        from dlcli.tasks.metrics import binary_ranking, classification_report

        report = classification_report(out, y, self._names)
        if len(self._names) == 2:
            import torch

            scores = torch.softmax(out.float(), dim=1)[:, 1]
            report.update(binary_ranking(scores, y.long() == 1))
        return report

    def plots(self, report, out, y, folder, split, title):
        from dlcli.plots import write_confusion

        path = folder / f"confusion-{split}.png"
        write_confusion(path, report["confusion_matrix"], self._names, f"{title}, accuracy {report['accuracy']:.4f}")
        return {"confusion_matrix": str(path)}

    def render_report(self, report, console):
        from rich.table import Table

        overall = metrics_table()
        overall.add_row("loss", f"{report['loss']:.4f}")
        overall.add_row("accuracy", f"{report['accuracy']:.4f}")
        overall.add_row("balanced accuracy", f"{report['balanced_accuracy']:.4f}")
        if "top5_accuracy" in report:
            overall.add_row("top-5 accuracy", f"{report['top5_accuracy']:.4f}")
        for name in ("precision", "recall", "f1"):
            overall.add_row(f"macro {name if name != 'f1' else 'F1'}", f"{report['macro'][name]:.4f}")
        for key, label in (("roc_auc", "ROC AUC"), ("average_precision", "average precision")):
            if report.get(key) is not None:
                overall.add_row(label, f"{report[key]:.4f}")
        console.print(overall)

        per_class = Table(title="per class")
        for col in ("class", "precision", "recall", "F1", "support"):
            per_class.add_column(col, justify="left" if col == "class" else "right")
        for row in report["per_class"]:
            per_class.add_row(row["label"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                              f"{row['support']:,}")
        console.print(per_class)

        classes, cm = report["classes"], report["confusion_matrix"]
        if len(classes) <= 20:
            matrix = Table(title="confusion matrix: true (rows) x predicted (columns)")
            matrix.add_column("true class", no_wrap=True)
            for i in range(len(classes)):
                matrix.add_column(str(i), justify="right")
            for i, (name, row) in enumerate(zip(classes, cm)):
                matrix.add_row(f"{i} {name}",
                               *(f"[bold]{v}[/bold]" if i == j and v else str(v) for j, v in enumerate(row)))
            console.print(matrix)
        else:
            console.print(f"confusion matrix: {len(classes)} classes, too many for a table: see the PNG or the JSON")

    def render_answer(self, name, answer, console):
        from rich.table import Table

        table = Table(title=name, title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for rank, entry in enumerate(answer["top"], 1):
            table.add_row(str(rank), entry["label"], f"{entry['probability']:.4f}")
        console.print(table)

    def answer_line(self, answer):
        best = answer["top"][0]
        return f"{best['label']} ({best['probability']:.4f})"

    # ------------------------------------------------------------ dlcli data check

    def survey(self, entry, columns):
        return ClassSurvey(self, columns[0])

    def check_targets(self, files, entry):
        """Rows without a label; a numeric label that training refuses as classes; else the class counts."""
        import numpy as np

        column = self.label_columns(entry)[0]
        findings = []
        for found in files.values():
            keep = found.targets.keep
            if keep is not None:
                findings.append((ERROR, "missing-label", f"{found.source}: {int((~keep).sum()):,} rows have no value "
                                 f"in label column '{column}'", [found.source]))
        train = files["train"]
        if not self._spelled and looks_like_measurement(train.targets.names):
            # Training stops here; the classes' counts of a measurement would be hundreds of lines of noise.
            return findings + [(ERROR, "numeric-label", measurement_refusal(
                train.source, column, len(train.targets.names)))], {}
        counts = {}
        for split, found in files.items():
            t = found.targets
            y = t.y if t.keep is None else t.y[t.keep]
            counts[split] = dict(zip(t.names, np.bincount(y, minlength=len(t.names)).tolist()))
        more, section = class_findings(counts, "label")
        return findings + more, {"classes": section}


def metrics_table():
    from rich.table import Table

    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    return table


def ranked(probs, classes: list[str], top_k: int) -> list[list[dict]]:
    """Each row of probabilities as its top-k [{index, label, probability}], best first."""
    values, indices = probs.topk(min(top_k, len(classes)), dim=1)
    return [[{"index": i, "label": classes[i], "probability": p} for i, p in zip(idxs, vals)]
            for vals, idxs in zip(values.tolist(), indices.tolist())]


def class_weights(spec, y, classes: list[str]):
    """train.class_weights as a loss weight per class: none; auto, the inverse of each class's share of the training
    labels (n / (classes present x count), scikit-learn's "balanced": 1 for every class when balanced); or
    {class name: weight}, 1 for classes not named. Unknown class names are an error naming the valid ones."""
    import torch

    if spec == "none":
        return None
    k = len(classes)
    if spec == "auto":
        counts = torch.bincount(torch.as_tensor(y).cpu().long(), minlength=k).double()
        present = int((counts > 0).sum())
        weights = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1)), torch.ones_like(counts))
        return weights.float()
    weights = torch.ones(k)
    for name, value in spec.items():
        if name not in classes:
            raise DataError(f"train.class_weights: no class '{name}' in this dataset{closest(name, classes)}")
        weights[classes.index(name)] = value
    return weights


# `dlcli data check` on classes (tables, image folders and the built-in sets)
NEAR_EMPTY = 5  # a training class with fewer samples than this (or under NEAR_EMPTY_SHARE of the largest) is a warning
NEAR_EMPTY_SHARE = 0.01
IMBALANCE = 10.0  # largest / smallest training class at or above this is a warning
FOLD = 10  # more classes than this with one finding are one line (a label of hundreds of classes, each rare)


def _samples(n: int) -> str:
    return f"{n} sample{'' if n == 1 else 's'}"


def class_findings(counts: dict[str, dict[str, int]], noun: str = "class") -> tuple[list[tuple[str, str, str]], dict]:
    """Per-class counts of each split ({split: {class: n}}, train's first) -> (findings on empty, near-empty,
    seen-once and unknown classes and the imbalance of train, the report's `classes` section). More than FOLD
    classes with the same finding are one line: how many, and the worst FOLD of them."""
    train = counts["train"]
    present = [n for n in train.values() if n]
    largest = max(present, default=0)
    groups: dict[tuple[str, str, str], list[tuple[str, int, str]]] = {}  # (severity, check, folded) -> classes

    def add(severity: str, check: str, folded: str, name: str, n: int, message: str) -> None:
        groups.setdefault((severity, check, folded), []).append((name, n, message))

    for split, found in counts.items():
        for name, n in found.items():
            if split != "train" and name not in train:
                add(ERROR, "class-not-in-train", f"have samples in {split} but none in train: a model cannot learn "
                    f"them", name, n, f"{noun} '{name}' has {_samples(n)} in {split} but none in train: a model "
                    f"cannot learn it")
    for name, n in train.items():
        if n == 0:
            add(ERROR, "empty-class", "have no training samples", name, n, f"{noun} '{name}' has no training samples")
        elif n == 1:
            add(WARNING, "label-seen-once", "occur once in train (typos? they cannot be learnt, nor land in both "
                "train and val)", name, n, f"{noun} '{name}' occurs once in train (a typo? it cannot be learnt, nor "
                f"land in both train and val)")
        elif n < NEAR_EMPTY:
            add(WARNING, "near-empty-class", f"have fewer than {NEAR_EMPTY} training samples, too few to learn or "
                f"to score", name, n, f"{noun} '{name}' has only {n} training samples (fewer than {NEAR_EMPTY}: "
                f"too few to learn it or to score it)")
        elif n < NEAR_EMPTY_SHARE * largest:
            add(WARNING, "near-empty-class", f"have under {NEAR_EMPTY_SHARE:.0%} of the largest class's {largest:,} "
                f"training samples", name, n, f"{noun} '{name}' has {n} training samples, {n / largest:.1%} of "
                f"the largest class's {largest:,}")
    for split, found in counts.items():
        if split != "train":
            for name, n in train.items():
                if n and not found.get(name):
                    add(WARNING, "class-missing-from-split", f"have no samples in {split}: their {split} scores "
                        f"will be missing", name, n, f"{noun} '{name}' has no samples in {split}: its {split} "
                        f"scores will be missing")
    plural = f"{noun}{'es' if noun == 'class' else 's'}"
    findings = []
    for (severity, check, folded), found in groups.items():
        if len(found) <= FOLD:
            findings += [(severity, check, message) for _, _, message in found]
            continue
        worst = sorted(found, key=lambda f: -f[1] if check == "class-not-in-train" else f[1])[:FOLD]
        where = "" if check == "class-not-in-train" else " in train"
        shown = ", ".join(f"'{name}' ({n:,}{where})" for name, n, _ in worst)
        findings.append((severity, check, f"{len(found):,} {plural} {folded}; the worst {FOLD}: {shown}, ..."))
    if len(train) < 2:
        findings.append((ERROR, "too-few-classes", f"train has {len(train)} {noun}"
                         f"{'es' if noun == 'class' else 's'}: a classifier needs at least two"))
    ratio = largest / min(present) if present else None
    if ratio is not None and ratio >= IMBALANCE:
        smallest = min((n, name) for name, n in train.items() if n)[1]
        biggest = max((n, name) for name, n in train.items())[1]
        findings.append((WARNING, "imbalance", f"classes are imbalanced {ratio:.1f}:1 ('{biggest}' {largest} vs "
                         f"'{smallest}' {train[smallest]}): consider class weights or resampling"))
    names = list(train) + sorted({n for found in counts.values() for n in found} - set(train))
    return findings, {"names": names, "counts": counts,
                      "imbalance_ratio": round(ratio, 3) if ratio is not None else None}
