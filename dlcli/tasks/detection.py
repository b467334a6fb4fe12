"""`task: detection`: boxes around the objects of a picture, each with its class and a score.

Targets (a dataset's Split.y): float32 (N, M, 5) rows [class, x1, y1, x2, y2] in the model-input pixels, class -1
for padding (docs: the spatial contract). Models (dlcli.models.detection) answer one dense row per location
[px, py, stride, x1, y1, x2, y2, centre-ness logit, class logits ...].

Training follows FCOS (Tian et al., 2019): a location is a positive of a box when it lies inside the box and within
`center_radius` strides of its centre, and the box's largest distance from it falls in its level's range (stride x 4
to stride x 8; the finest level from 0, the coarsest to infinity); among several boxes it takes the smallest. The loss
is the sigmoid focal loss of the classes over every location (per positive), the GIoU loss of the positives' boxes
weighted by their centre-ness targets, and the binary cross-entropy of the centre-ness (torchvision.ops).

Scoring and answers keep per picture at most `max_detections` boxes [x1, y1, x2, y2, score, class] (score
sqrt(sigmoid(class) x sigmoid(centre-ness)), over `score_threshold`, class-wise NMS at `nms_iou`), padded with
score -1 (`shrink`). Validation and evaluate score them with torchmetrics' MeanAveragePrecision (COCO's protocol,
pycocotools underneath): mAP over IoU .50:.95 (`map`, the headline and the default monitor), mAP at .50 and .75,
per class and object size, and recall; there is no validation loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from dlcli.errors import BAD_INPUT, RUNTIME, DlcliError
from dlcli.tasks import TASKS, Task

ROW = 8  # the dense row's columns before the class logits


def pairwise_iou(a, b):
    """IoU of matching rows of two (..., 4) box tensors (not all pairs: torchvision.ops.box_iou does those)."""
    import torch

    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda z: (z[..., 2] - z[..., 0]).clamp(min=0) * (z[..., 3] - z[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def assign(points, y, center_radius: float):
    """FCOS's targets for every location of every picture: (positive (B, L) bool, the assigned box's index (B, L)).

    points: (L, 3) [px, py, stride]; y: (B, M, 5) [class, x1, y1, x2, y2], class -1 for padding."""
    import torch

    px, py, stride = (points[:, i].view(1, -1, 1) for i in range(3))
    x1, y1, x2, y2 = (y[:, None, :, i] for i in range(1, 5))  # (B, 1, M)
    left, top, right, bottom = px - x1, py - y1, x2 - px, y2 - py  # (B, L, M)
    inside = torch.minimum(torch.minimum(left, top), torch.minimum(right, bottom)) > 0
    radius = stride * center_radius
    near = ((px - (x1 + x2) / 2).abs() < radius) & ((py - (y1 + y2) / 2).abs() < radius)
    reach = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))
    levels = torch.unique(points[:, 2])  # ascending strides
    low = torch.where(stride == levels[0], torch.zeros_like(stride), stride * 4)
    high = torch.where(stride == levels[-1], torch.full_like(stride, math.inf), stride * 8)
    fits = (reach >= low) & (reach <= high)
    valid = (y[:, None, :, 0] >= 0)
    candidate = inside & near & fits & valid
    area = ((x2 - x1) * (y2 - y1)).expand_as(candidate)
    area = torch.where(candidate, area, torch.full_like(area, math.inf))
    smallest, index = area.min(dim=2)
    return torch.isfinite(smallest), index


def centerness(points, boxes):
    """FCOS's centre-ness target of each point (..., >= 2) in its box (..., 4): sqrt of the ratios of the shorter to
    the longer distance, horizontally and vertically."""
    left, top = points[..., 0] - boxes[..., 0], points[..., 1] - boxes[..., 1]
    right, bottom = boxes[..., 2] - points[..., 0], boxes[..., 3] - points[..., 1]
    lr = left.minimum(right).clamp(min=0) / left.maximum(right).clamp(min=1e-9)
    tb = top.minimum(bottom).clamp(min=0) / top.maximum(bottom).clamp(min=1e-9)
    return (lr * tb).sqrt()


@TASKS.register("detection")
class Detection(Task):
    """Where are the objects, and of which class? Boxes scored by COCO's mAP."""

    noun: ClassVar[str] = "classes"
    step_metric: ClassVar[str] = "iou"  # the mean IoU of the positives' boxes with their assigned targets
    metrics: ClassVar[tuple[str, ...]] = ("map", "map50", "map75", "recall")
    headline: ClassVar[str] = "map"
    default_monitor: ClassVar[str] = "val_map"
    export_output_name: ClassVar[str] = "detections"
    spatial: ClassVar[str | None] = "boxes"
    rank_stats: ClassVar[str] = "join"  # DDP: every rank's boxes gathered, mAP over the whole split

    loss: Literal["focal", "bce"] = Field("focal", description="the classes' loss over every location: focal "
                                                               "(sigmoid, alpha 0.25, gamma 2; Lin et al. 2017) or "
                                                               "plain binary cross-entropy, per positive")
    center_radius: float = Field(1.5, gt=0, description="a positive lies within this many strides of its box's centre")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="boxes scoring less are dropped before scoring")
    nms_iou: float = Field(0.6, gt=0, le=1, description="a box overlapping a better one of its class more is dropped")
    max_detections: int = Field(100, ge=1, le=1000, description="boxes kept per picture")
    candidates: int = Field(300, ge=1, le=2000, description="the best (location, class) pairs per picture that NMS "
                            "considers; an exported graph unrolls its loop over them")
    conf: float = Field(0.25, ge=0, le=1, description="predict and serve show boxes scoring at least this")

    # ------------------------------------------------------------ config

    def monitors(self):
        return ["train_loss", f"train_{self.step_metric}"] + [f"val_{m}" for m in self.metrics]

    def faithful_loss(self):
        return False  # no validation loss: best.pt and early stopping follow val_map

    def check_train(self, train_cfg):
        if train_cfg.label_smoothing:
            return "label_smoothing: detection's class loss is per box; it takes no label smoothing"
        if train_cfg.class_weights != "none":
            return "class_weights: detection's focal loss balances the classes itself; leave class_weights unset"
        return None

    def check_model(self, model_cfg):
        if getattr(model_cfg, "for_task", None) != "detection":
            return f"type: detection needs a detector model (model: {{type: detector}}), not {model_cfg.type}"
        return None

    def bind(self, info, names, train_cfg=None, device=None, y_train=None):
        super().bind(info, names)
        self._cached = None  # (the outputs, their positives' IoU per picture) of the last training batch
        return self

    # ------------------------------------------------------------ training

    def criterion(self, out, y, reduction="mean"):
        import torch
        import torch.nn.functional as F
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        out, y = out.float(), y.float()
        points = out[0, :, :3]
        positive, index = assign(points, y, self.center_radius)
        cls_logits = out[..., ROW:]
        target = torch.zeros_like(cls_logits)
        classes = torch.gather(y[..., 0], 1, index).long()  # (B, L): the assigned box's class
        target[positive, classes[positive]] = 1.0
        count = positive.sum().clamp(min=1).float()
        if self.loss == "focal":
            cls_loss = sigmoid_focal_loss(cls_logits, target, alpha=0.25, gamma=2.0, reduction="sum") / count
        else:
            cls_loss = F.binary_cross_entropy_with_logits(cls_logits, target, reduction="sum") / count
        boxes = torch.gather(y[..., 1:5], 1, index[..., None].expand(-1, -1, 4))  # (B, L, 4)
        predicted, truth = out[..., 3:7][positive], boxes[positive]
        ctr_target = centerness(out[..., :2][positive], truth)
        if len(truth):
            box_loss = (generalized_box_iou_loss(predicted, truth, reduction="none") * ctr_target).sum() / \
                ctr_target.sum().clamp(min=1e-6)
            ctr_loss = F.binary_cross_entropy_with_logits(out[..., 7][positive], ctr_target, reduction="sum") / count
        else:  # no object in the batch: only the classes learn (that nothing is there)
            box_loss = ctr_loss = out[..., 3:8].sum() * 0.0
        with torch.no_grad():
            ious = torch.zeros(positive.shape, device=out.device)
            ious[positive] = pairwise_iou(predicted.detach(), truth)
            per_picture = ious.sum(1) / positive.sum(1).clamp(min=1)
            self._cached = (out, per_picture.sum())
        loss = cls_loss + box_loss + ctr_loss
        return loss * len(y) if reduction == "sum" else loss

    def step_stat(self, out, y):
        import torch

        if self._cached is not None and self._cached[0].data_ptr() == out.data_ptr():
            return self._cached[1]
        with torch.no_grad():  # the loss was not computed on these outputs: work the IoU out again
            self.criterion(out.detach(), y)
        return self._cached[1]

    # ------------------------------------------------------------ boxes from the dense rows

    def shrink(self, out):
        return self.decode(out, self.score_threshold, self.nms_iou, self.max_detections, self.candidates)

    @staticmethod
    def decode(out, score_threshold: float, nms_iou: float, max_detections: int, candidates: int = 300):
        """Dense rows (B, L, 8 + C) -> (B, max_detections, 6) [x1, y1, x2, y2, score, class], best first, padded
        with score -1 and class -1: class-wise NMS (torchvision's nms) over each picture's best `candidates`
        (location, class) pairs, those under `score_threshold` then dropped. One nms call serves every picture and
        class (their boxes moved apart so that they never overlap), and the rest keeps fixed shapes, so an exported
        graph holds it all (ONNX NonMaxSuppression)."""
        import torch
        from torchvision.ops import nms

        out = out.float()
        b, locations, width = out.shape
        classes = width - ROW
        scores = (torch.sigmoid(out[..., ROW:]) * torch.sigmoid(out[..., 7:8])).sqrt().flatten(1)  # (B, L*C)
        k = min(candidates, locations * classes)
        top, flat = scores.topk(k, dim=1)  # best first
        where, cls = flat // classes, flat % classes
        boxes = torch.gather(out[..., 3:7], 1, where[..., None].expand(-1, -1, 4))  # (B, k, 4)
        group = torch.arange(b, device=out.device)[:, None] * classes + cls  # a picture's class: its own group
        span = boxes.max() - boxes.min() + 1.0
        apart = boxes + (group.to(boxes.dtype) * span)[..., None]
        # lower-scoring candidates under the threshold can only suppress others under it, so nms may see them
        found = nms(apart.reshape(-1, 4), top.reshape(-1), nms_iou)
        keep = torch.zeros(b * k, device=out.device).scatter(0, found, torch.ones_like(found, dtype=torch.float32))
        keep = (keep.view(b, k) > 0) & (top > score_threshold)
        n = min(max_detections, k)
        rank = torch.arange(k, 0, -1, device=out.device, dtype=torch.float32)  # earlier (better) first
        order = (keep.float() * rank).topk(n, dim=1).indices
        chosen = torch.gather(keep, 1, order)
        rows = torch.cat([boxes, top[..., None], cls[..., None].float()], dim=2)
        rows = torch.gather(rows, 1, order[..., None].expand(-1, -1, 6))
        padding = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0, -1.0], device=out.device)
        rows = torch.where(chosen[..., None], rows, padding)
        if n < max_detections:
            rows = torch.cat([rows, padding.expand(b, max_detections - n, 6)], dim=1)
        return rows

    # ------------------------------------------------------------ scores

    def stats(self, out, y):
        import torch

        # mAP is no sum over pictures: the split's boxes are kept whole (under DDP, gathered from the ranks: `join`)
        return {"count": torch.tensor(float(len(y)), dtype=torch.float64), "detections": out.double(),
                "targets": y.double()}

    def join(self, parts):
        import torch

        # every rank pads alike: detections to max_detections rows, targets to the most boxes of any picture
        return {"count": sum(p["count"] for p in parts), "detections": torch.cat([p["detections"] for p in parts]),
                "targets": torch.cat([p["targets"] for p in parts])}

    def scores(self, stats):
        if not float(stats["count"]):
            return {m: float("nan") for m in self.metrics}
        found = coco_map(stats["detections"], stats["targets"], len(self.names))
        return {"map": found["map"], "map50": found["map_50"], "map75": found["map_75"], "recall": found["mar_100"]}

    # ------------------------------------------------------------ using a trained model

    def thresholded(self, conf=None, iou=None):
        for name, value in (("conf", conf), ("iou", iou)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise DlcliError(f"--{name} must be between 0 and 1, not {value}", BAD_INPUT)
        update = {}
        if conf is not None:  # boxes under the scoring threshold never reach the answer: lower it too
            update.update(conf=conf, score_threshold=min(self.score_threshold, conf))
        if iou is not None:
            update["nms_iou"] = iou
        return self.model_copy(update=update) if update else self

    def answers(self, out, top_k=5, sizes=None):
        from dlcli.data.spatial import clip_to, scale_boxes

        shape = getattr(self, "_input_shape", None)
        input_hw = tuple(shape[-2:]) if shape else None
        found = []
        for i, row in enumerate(out.float().cpu()):
            row = row[row[:, 4] >= max(self.conf, 0.0)]
            boxes = row[:, :4]
            if sizes is not None and input_hw is not None:
                boxes = clip_to(scale_boxes(boxes, input_hw, sizes[i]), sizes[i])
            found.append({"boxes": [
                {"label": self.names[int(c)], "index": int(c), "score": round(float(s), 6),
                 "box": [round(float(v), 2) for v in box]}
                for box, s, c in zip(boxes.tolist(), row[:, 4].tolist(), row[:, 5].tolist())]})
        return found

    def export_output(self, out):
        # Inside the graph `out` is the dense rows (8 + classes wide); export's reference passes what a loaded run's
        # logits already are, the shrunk (N, K, 6) detections, which stay as they are.
        return out if out.shape[-1] == 6 else self.shrink(out)

    def export_meta(self):
        return {"output": f"detections (N, {self.max_detections}, 6): rows [x1, y1, x2, y2, score, class] in the model "
                          "input's pixels (the picture stretched to input_shape), best first, padded with score -1 and "
                          "class -1; inside: the normalisation, the network, the decoding (score = sqrt(sigmoid(class) "
                          f"* sigmoid(centerness)), the best {self.candidates} per picture, class-wise NMS at IoU "
                          f"{self.nms_iou}, scores over {self.score_threshold}); outside: keeping boxes scoring at "
                          f"least a threshold (predict's conf, {self.conf}) and scaling x by width / input width, y by "
                          "height / input height for a picture's own pixels; a TorchScript file needs `import "
                          "torchvision` before torch.jit.load (its nms op)",
                "output_shape": [-1, self.max_detections, 6], "classes": list(self._names), "nms_iou": self.nms_iou,
                "score_threshold": self.score_threshold, "conf": self.conf, "max_detections": self.max_detections}

    # ------------------------------------------------------------ evaluate

    def report(self, out, y):
        found = coco_map(out.double(), y.double(), len(self.names), detail=True)
        per_class = []
        counts = count_objects(y, len(self.names))
        for i, name in enumerate(self.names):
            per_class.append({"index": i, "label": name, "map": found["per_class_map"].get(i),
                              "map50": found["per_class_map50"].get(i), "recall": found["per_class_mar"].get(i),
                              "objects": counts[i]})
        return {"samples": len(y), "objects": sum(counts), "map": found["map"], "map50": found["map_50"],
                "map75": found["map_75"], "map_small": found["map_small"], "map_medium": found["map_medium"],
                "map_large": found["map_large"], "recall": found["mar_100"], "mar_1": found["mar_1"],
                "mar_10": found["mar_10"], "mar_small": found["mar_small"], "mar_medium": found["mar_medium"],
                "mar_large": found["mar_large"], "per_class": per_class, "classes": list(self.names),
                "pr_curves": found["pr_curves"]}

    def plots(self, report, out, y, folder, split, title):
        from dlcli.tasks.detection_plots import write_pr_curves

        path = folder / f"pr-{split}.png"
        write_pr_curves(path, report, f"{title}, mAP50 {fmt(report['map50'])}")
        return {"pr_curves": str(path)}

    def draw(self, x, out, y, folder, split):
        from dlcli.tasks.detection_plots import write_boxes_grid

        if not len(y):
            return {}
        path = folder / f"boxes-{split}.png"
        write_boxes_grid(path, self.names, x, out, y)
        return {"boxes": str(path)}

    def save_answer(self, name, answer, folder, source=None):
        """predict --save: the picture (`source`) in its own size with the answer's boxes drawn, as
        FOLDER/<name's stem>.png."""
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        from dlcli.tasks.detection_plots import draw_boxes

        folder = Path(folder)
        try:
            with Image.open(source or name) as img:  # upright, as predict read it: the boxes are in its pixels
                img = ImageOps.exif_transpose(img).convert("RGB")
        except (OSError, ValueError, TypeError) as err:
            raise DlcliError(f"--save: cannot read {source or name} again to draw its boxes ({err})", RUNTIME) from None
        picture = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        boxes = answer["boxes"]
        drawn = draw_boxes(picture, [b["box"] for b in boxes], [b["index"] for b in boxes],
                           [f"{b['label']} {b['score']:.2f}" for b in boxes], self.names)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(name).stem}.png"
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(path)
        return [str(path)]

    def render_report(self, report, console):
        from rich.table import Table

        overall = Table(title="metrics")
        overall.add_column("metric")
        overall.add_column("value", justify="right")
        for key, label in (("map", "mAP@[.50:.95]"), ("map50", "mAP@.50"), ("map75", "mAP@.75"),
                           ("map_small", "mAP small"), ("map_medium", "mAP medium"), ("map_large", "mAP large"),
                           ("recall", "recall (100 boxes)"), ("mar_1", "recall (1 box)"), ("mar_10", "recall (10)")):
            overall.add_row(label, fmt(report.get(key)))
        overall.add_row("objects", f"{report['objects']:,}")
        console.print(overall)
        per_class = Table(title="per class")
        for col in ("class", "mAP", "mAP@.50", "recall", "objects"):
            per_class.add_column(col, justify="left" if col == "class" else "right")
        for row in report["per_class"]:
            per_class.add_row(row["label"], fmt(row["map"]), fmt(row["map50"]), fmt(row["recall"]),
                              f"{row['objects']:,}")
        console.print(per_class)

    def render_answer(self, name, answer, console):
        from rich.table import Table

        table = Table(title=f"{name}: {len(answer['boxes'])} box{'es' if len(answer['boxes']) != 1 else ''}",
                      title_justify="left")
        for col in ("class", "score", "x1", "y1", "x2", "y2"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for box in answer["boxes"]:
            table.add_row(box["label"], f"{box['score']:.3f}", *(f"{v:.1f}" for v in box["box"]))
        console.print(table)

    def answer_line(self, answer):
        boxes = answer["boxes"]
        if not boxes:
            return "no boxes"
        shown = ", ".join(f"{b['label']} {b['score']:.2f}" for b in boxes[:3])
        return f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}: {shown}{', ...' if len(boxes) > 3 else ''}"


def fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def count_objects(y, classes: int) -> list[int]:
    import torch

    cls = y[..., 0].long().flatten()
    return torch.bincount(cls[cls >= 0], minlength=classes).tolist()


def as_torchmetrics(out, y):
    """Shrunk detections (N, K, 6) and targets (N, M, 5) as torchmetrics' lists of per-picture dicts."""
    preds, targets = [], []
    for det, tgt in zip(out, y):
        det = det[det[:, 4] >= 0]
        tgt = tgt[tgt[:, 0] >= 0]
        preds.append({"boxes": det[:, :4].float(), "scores": det[:, 4].float(), "labels": det[:, 5].long()})
        targets.append({"boxes": tgt[:, 1:5].float(), "labels": tgt[:, 0].long()})
    return preds, targets


def coco_map(out, y, classes: int, detail: bool = False) -> dict:
    """COCO's box metrics of shrunk detections against targets, by torchmetrics' MeanAveragePrecision (pycocotools
    underneath): floats, -1 (COCO's 'no such objects') read as None; `detail` adds per-class figures and each class's
    precision-recall curve at IoU .50."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                  class_metrics=detail, extended_summary=detail)
    preds, targets = as_torchmetrics(out.cpu(), y.cpu())
    metric.update(preds, targets)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        found = metric.compute()
    value = lambda t: None if float(t) < 0 else float(t)  # noqa: E731
    result = {k: value(v) for k, v in found.items() if isinstance(v, torch.Tensor) and v.numel() == 1
              and k not in ("classes",)}
    for key in ("map", "map_50", "map_75", "mar_100"):
        result[key] = result.get(key) if result.get(key) is not None else 0.0
    if detail:
        present = [int(c) for c in found["classes"].flatten().tolist()]
        per_map = found["map_per_class"].flatten().tolist()
        per_mar = found["mar_100_per_class"].flatten().tolist()
        result["per_class_map"] = {c: value(v) for c, v in zip(present, per_map)}
        result["per_class_mar"] = {c: value(v) for c, v in zip(present, per_mar)}
        precision = found["precision"]  # (IoU thresholds, recall points, classes, areas, max detections)
        recall_points = torch.linspace(0, 1, precision.shape[1]).tolist()
        result["per_class_map50"], result["pr_curves"] = {}, {}
        for k, c in enumerate(present):
            curve = precision[0, :, k, 0, -1]  # IoU .50, every area, 100 detections
            if (curve < 0).all():
                continue
            result["per_class_map50"][c] = float(curve.clamp(min=0).mean())
            result["pr_curves"][str(c)] = {"recall": recall_points, "precision": curve.clamp(min=0).tolist()}
    return result
