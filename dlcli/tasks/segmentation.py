"""`task: segmentation`: a class for every pixel. The model gives (B, classes, H, W) logits at its input's size; the
targets are uint8 masks (B, H, W) of class indices, `ignore_index` (data.json's, 255 by default) marking pixels
that count nowhere.

Loss: cross-entropy over each picture's scored pixels, averaged per picture (so a DDP rank's sum over its pictures
adds up; train.label_smoothing and train.class_weights apply, `auto` weighing classes by inverse pixel frequency).
Scores come from one confusion matrix of scored pixels (true x predicted, additive over batches and ranks): IoU per
class, mIoU (over the classes present in the truth or the predictions) with and without background (class 0), mean
Dice, pixel accuracy.

Answers map the predicted mask back to each picture's own pixels (nearest neighbour, dlcli.data.spatial) and give
per-class pixel shares and the mask as a run-length encoding (row-major runs of one class: `values` and `counts`,
so numpy.repeat(values, counts).reshape(height, width) decodes it).
"""

from __future__ import annotations

from typing import ClassVar

from dlcli.errors import DataError, closest
from dlcli.tasks import TASKS, Task

GRID = 16  # pictures drawn in evaluate's grid at most
ALPHA = 0.5  # opacity of the drawn masks


def run_length(mask) -> dict:
    """A (H, W) integer mask -> {"height", "width", "values", "counts"}: row-major runs of equal values."""
    import numpy as np

    flat = np.asarray(mask).reshape(-1)
    if not len(flat):
        return {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "values": [], "counts": []}
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    counts = np.diff(np.r_[starts, len(flat)])
    return {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "values": flat[starts].tolist(),
            "counts": counts.tolist()}


def decode_run_length(rle: dict):
    """The (H, W) uint8 mask of `run_length`'s encoding."""
    import numpy as np

    return np.repeat(np.asarray(rle["values"], dtype=np.uint8), rle["counts"]).reshape(rle["height"], rle["width"])


def confusion(pred, y, k: int, ignore_index: int):
    """float64 (k, k) counts of scored pixels: rows the true class, columns the predicted one."""
    import torch

    valid = y != ignore_index
    truth, guess = y[valid].long(), pred[valid].long()
    return torch.bincount(truth * k + guess, minlength=k * k).reshape(k, k).double()


def iou_scores(cm) -> dict:
    """IoU, Dice, precision and recall per class (NaN where the class is in neither truth nor prediction), their
    means, and pixel accuracy, from a confusion matrix."""
    import torch

    cm = cm.double().cpu()
    tp = cm.diag()
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    dice = torch.where(union > 0, 2 * tp / (truth + predicted).clamp_min(1), nan)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.where(union > 0, 0.0, nan))
    recall = torch.where(truth > 0, tp / truth.clamp_min(1), torch.where(union > 0, 0.0, nan))
    total = cm.sum()

    def mean(v):
        v = v[~v.isnan()]
        return v.mean().item() if len(v) else float("nan")

    return {"iou": iou, "dice": dice, "precision": precision, "recall": recall,
            "miou": mean(iou), "miou_foreground": mean(iou[1:]), "dice_mean": mean(dice),
            "pixel_accuracy": (tp.sum() / total).item() if total > 0 else float("nan")}


@TASKS.register("segmentation")
class Segmentation(Task):
    """Which class is each pixel? Cross-entropy per pixel (ignore_index skipped); mIoU with and without background,
    IoU per class, Dice, pixel accuracy; evaluate draws test pictures with their true and predicted masks."""

    noun: ClassVar[str] = "classes"
    step_metric: ClassVar[str] = "pixel_accuracy"
    metrics: ClassVar[tuple[str, ...]] = ("miou", "miou_foreground", "dice", "pixel_accuracy")
    headline: ClassVar[str] = "miou"
    default_monitor: ClassVar[str] = "val_miou"
    export_output_name: ClassVar[str] = "probabilities"
    spatial: ClassVar[str | None] = "mask"
    figure_rows: ClassVar[int | None] = GRID  # a split's per-pixel scores would not fit in memory: scored in chunks

    def output_shape(self, outputs, input_shape):
        return (outputs, *tuple(input_shape)[1:])

    def fit(self, y_train, names):
        import torch

        y = torch.as_tensor(y_train)
        return {"pixels": torch.bincount(y.flatten().long(), minlength=256)[: len(names)].tolist()}

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        import torch

        super().bind(info, names)
        self._ignore = int(self._info.get("ignore_index", 255))
        self._smoothing = train_cfg.label_smoothing if train_cfg is not None else 0.0
        self._weights = None
        spec = train_cfg.class_weights if train_cfg is not None else "none"
        if spec == "auto" and self._info.get("pixels"):
            counts = torch.tensor(self._info["pixels"], dtype=torch.float64)
            present = int((counts > 0).sum())
            self._weights = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1)),
                                        torch.ones_like(counts)).float().to(device)
        elif isinstance(spec, dict):
            weights = torch.ones(len(self._names))
            for name, value in spec.items():
                if name not in self._names:
                    raise DataError(f"train.class_weights: no class '{name}' in this dataset"
                                    f"{closest(name, self._names)}")
                weights[self._names.index(name)] = value
            self._weights = weights.to(device)
        return self

    @property
    def ignore_index(self) -> int:
        return self._ignore

    # ------------------------------------------------------------ training and scoring

    def _per_picture(self, out, y):
        """Each picture's mean cross-entropy over its scored pixels (B,)."""
        import torch.nn.functional as F

        weight = self._weights.to(out.device) if self._weights is not None else None
        per = F.cross_entropy(out.float(), y.long(), weight, ignore_index=self._ignore,
                              label_smoothing=self._smoothing, reduction="none")
        scored = (y != self._ignore).flatten(1).sum(1).clamp_min(1)
        return per.flatten(1).sum(1) / scored

    def criterion(self, out, y, reduction="mean"):
        per = self._per_picture(out, y)
        return per.sum() if reduction == "sum" else per.mean()

    def step_stat(self, out, y):
        """Each picture's share of scored pixels predicted right, summed over the batch."""
        valid = y != self._ignore
        right = ((out.detach().argmax(1) == y.long()) & valid).flatten(1).sum(1)
        return (right / valid.flatten(1).sum(1).clamp_min(1)).sum()

    def stats(self, out, y):
        import torch

        k = len(self._names)
        if not len(y):
            zero = torch.zeros((), dtype=torch.float64)
            return {"count": zero, "loss": zero.clone(), "confusion": torch.zeros((k, k), dtype=torch.float64)}
        return {"count": torch.tensor(float(len(y)), dtype=torch.float64, device=y.device),
                "loss": self.criterion(out, y, reduction="sum").double(),
                "confusion": confusion(out.argmax(1), y, k, self._ignore).to(y.device)}

    def scores(self, stats):
        n = float(stats["count"])
        if not n:
            return {"loss": float("nan"), **{m: float("nan") for m in self.metrics}}
        found = iou_scores(stats["confusion"])
        return {"loss": float(stats["loss"]) / n, "miou": found["miou"], "miou_foreground": found["miou_foreground"],
                "dice": found["dice_mean"], "pixel_accuracy": found["pixel_accuracy"]}

    # ------------------------------------------------------------ using

    def masks(self, out, sizes=None) -> list:
        """The predicted class per pixel of each output, uint8 (H, W) tensors, each resized (nearest) to its
        picture's own (height, width) where `sizes` gives them."""
        import torch

        from dlcli.data.spatial import resize_mask

        pred = out.argmax(1).to(torch.uint8).cpu()
        return [resize_mask(m, sizes[i]) if sizes is not None else m for i, m in enumerate(pred)]

    def answers(self, out, top_k=5, sizes=None):
        import torch

        answers = []
        k = len(self._names)
        for mask in self.masks(out, sizes):
            counts = torch.bincount(mask.flatten().long(), minlength=k)[:k]
            total = max(int(mask.numel()), 1)
            shares = {name: round(int(c) / total, 6) for name, c in zip(self._names, counts.tolist())}
            answers.append({"classes": [n for n, c in zip(self._names, counts.tolist()) if c],
                            "shares": shares, "mask": run_length(mask.numpy())})
        return answers

    def export_output(self, out):
        import torch

        return torch.softmax(out.float(), dim=1)

    def export_meta(self):
        return {"output": "class probabilities per pixel (N, classes, H, W) at the input size, softmax applied; the "
                          "mask is their argmax over axis 1, resized to a picture's own size with nearest neighbour "
                          "(outside the graph); the run's normalisation is inside",
                "classes": list(self._names),
                "output_shape": [-1, len(self._names), *getattr(self, "_input_shape", (0, "H", "W"))[1:]]}

    def report(self, out, y):
        return self.report_stats(self.stats(out.float().cpu(), y.cpu()), y)

    def report_stats(self, stats, y):
        import torch

        y = y.cpu()
        cm = stats["confusion"].cpu()
        found = iou_scores(cm)
        n = len(y)
        loss = float(stats["loss"]) / n if n else float("nan")
        as_float = lambda v: None if v != v else v  # noqa: E731  (NaN -> null in the JSON)
        per_class = [{"index": i, "label": name, "iou": as_float(found["iou"][i].item()),
                      "dice": as_float(found["dice"][i].item()), "precision": as_float(found["precision"][i].item()),
                      "recall": as_float(found["recall"][i].item()), "pixels": int(cm[i].sum().item()),
                      "predicted": int(cm[:, i].sum().item())} for i, name in enumerate(self._names)]
        return {"samples": n, "loss": loss, "miou": as_float(found["miou"]),
                "miou_foreground": as_float(found["miou_foreground"]), "dice": as_float(found["dice_mean"]),
                "pixel_accuracy": as_float(found["pixel_accuracy"]), "ignored_pixels": int((y == self._ignore).sum()),
                "ignore_index": self._ignore, "per_class": per_class, "classes": list(self._names),
                "confusion_matrix": cm.long().tolist(), "total_pixels": int(torch.tensor(y.shape).prod()) if n else 0}

    def draw(self, x, out, y, folder, split):
        """A grid of up to GRID test pictures: each picture, then its true mask, then the predicted one drawn over
        it (torchvision's draw_segmentation_masks; background and ignored pixels left undrawn), two pictures a row."""
        import torch
        from torchvision.utils import draw_segmentation_masks, make_grid, save_image

        n = min(GRID, len(y))
        if not n:
            return {}
        k = len(self._names)
        colors = palette(k)
        tiles = []
        pred = out[:n].argmax(1)
        for i in range(n):
            picture = x[i].cpu()
            picture = picture.expand(3, -1, -1) if picture.shape[0] == 1 else picture
            tiles.append(picture)
            for mask in (y[i].cpu().long(), pred[i]):  # background (0) and ignored pixels left as they are
                planes = torch.stack([mask == c for c in range(1, k)])
                tiles.append(draw_segmentation_masks(picture, planes, alpha=ALPHA, colors=colors[1:]))
        path = folder / f"masks-{split}.png"
        grid = make_grid(torch.stack(tiles).float() / 255, nrow=6, padding=2, pad_value=1.0)
        save_image(grid, path)
        return {"masks": str(path)}

    def render_report(self, report, console):
        from rich.table import Table

        from dlcli.tasks.classification import metrics_table

        show = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        overall = metrics_table()
        for key, label in (("loss", "loss"), ("miou", "mIoU"), ("miou_foreground", "mIoU without background"),
                           ("dice", "mean Dice"), ("pixel_accuracy", "pixel accuracy")):
            overall.add_row(label, show(report.get(key)))
        console.print(overall)
        per = Table(title="per class (pixels scored; ignore_index skipped)")
        for col in ("class", "IoU", "Dice", "precision", "recall", "true pixels", "predicted pixels"):
            per.add_column(col, justify="left" if col == "class" else "right")
        for row in report["per_class"]:
            per.add_row(f"{row['index']} {row['label']}", show(row["iou"]), show(row["dice"]), show(row["precision"]),
                        show(row["recall"]), f"{row['pixels']:,}", f"{row['predicted']:,}")
        console.print(per)

    def render_answer(self, name, answer, console):
        from rich.table import Table

        mask = answer["mask"]
        table = Table(title=f"{name} ({mask['width']} x {mask['height']} mask)", title_justify="left")
        table.add_column("class")
        table.add_column("pixel share", justify="right")
        for label, share in sorted(answer["shares"].items(), key=lambda kv: -kv[1]):
            if share:
                table.add_row(label, f"{share:.4f}")
        console.print(table)

    def answer_line(self, answer):
        ranked = sorted(((s, n) for n, s in answer["shares"].items() if s), reverse=True)
        return ", ".join(f"{n} {s:.1%}" for s, n in ranked) or "(empty)"

    def for_python(self, answer):
        """Run.predict: the mask as a NumPy uint8 array (height, width) of class indices."""
        return {**answer, "mask": decode_run_length(answer["mask"])}

    def save_answer(self, name: str, answer: dict, folder, source: str | None = None) -> list[str]:
        """predict --save: the mask as a single-channel PNG of class indices in the picture's own size,
        FOLDER/<picture's stem>.png."""
        from pathlib import Path

        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(str(name)).stem}.png"
        Image.fromarray(decode_run_length(answer["mask"]), "L").save(path)
        return [str(path)]


def palette(k: int) -> list[tuple[int, int, int]]:
    """k distinct colours: background black, then spread hues."""
    import colorsys

    colours = [(0, 0, 0)]
    for i in range(1, k):
        r, g, b = colorsys.hsv_to_rgb((i - 1) / max(k - 1, 1), 0.85, 1.0)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours
