"""Metrics of the tasks' evaluate reports, in torch (float64 where sums grow). Definitions follow scikit-learn's
(zero_division=0, ties averaged in ROC AUC, average precision as the step sum over thresholds); the tests check them
against scikit-learn."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_report(logits, y, classes: list[str]) -> dict:
    """Loss, accuracy, top-5 accuracy (10+ classes), per-class and macro precision/recall/F1, confusion matrix.

    Precision, recall or F1 of a class that is never predicted (or never present) count as 0, as scikit-learn's
    zero_division=0 does; macro averages run over the classes present in the labels or the predictions.
    """
    k = len(classes)
    y = y.long().cpu()
    logits = logits.float().cpu()
    pred = logits.argmax(1)
    cm = torch.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = cm.diag().double()
    predicted, support = cm.sum(0).double(), cm.sum(1).double()
    precision, recall, f1 = prf(tp, predicted, support)
    present = (predicted + support) > 0
    report = {
        "samples": len(y),
        "loss": F.cross_entropy(logits, y).item(),
        "accuracy": (pred == y).double().mean().item(),
        # the mean recall over the classes present: chance is 1/k however imbalanced the split
        "balanced_accuracy": recall[support > 0].mean().item(),
    }
    if k >= 10:
        top5 = logits.topk(5, dim=1).indices
        report["top5_accuracy"] = (top5 == y[:, None]).any(1).double().mean().item()
    report["macro"] = {name: v[present].mean().item() for name, v in
                       (("precision", precision), ("recall", recall), ("f1", f1))}
    report["per_class"] = [
        {"index": i, "label": classes[i], "precision": precision[i].item(), "recall": recall[i].item(),
         "f1": f1[i].item(), "support": int(support[i].item())}
        for i in range(k)
    ]
    report["classes"] = list(classes)
    report["confusion_matrix"] = cm.tolist()
    return report


def prf(tp, predicted, support):
    """Precision, recall and F1 from true positives, predicted positives and actual positives (0 where undefined)."""
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(tp))
    return precision, recall, f1


def roc_auc(scores, positive) -> float | None:
    """The probability that a positive scores above a negative (ties count half): None with one class only."""
    scores, positive = scores.double().cpu().flatten(), positive.bool().cpu().flatten()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = scores.argsort()
    sorted_scores = scores[order]
    # average ranks (1-based) over runs of tied scores
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg_rank = (ends - (counts.double() - 1) / 2)[inverse]
    ranks = torch.empty_like(avg_rank)
    ranks[order] = avg_rank
    return ((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def average_precision(scores, positive) -> float | None:
    """Sum over score thresholds (highest first) of precision x the recall gained: None without positives."""
    scores, positive = scores.double().cpu().flatten(), positive.double().cpu().flatten()
    n_pos = positive.sum()
    if n_pos == 0:
        return None
    order = scores.argsort(descending=True)
    s, p = scores[order], positive[order]
    tp, fp = p.cumsum(0), (1 - p).cumsum(0)
    last = torch.ones(len(s), dtype=torch.bool)  # the last position of each run of tied scores is a threshold
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    precision, recall = tp / (tp + fp), tp / n_pos
    gained = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return (gained * precision).sum().item()


def binary_ranking(scores, positive) -> dict:
    """ROC AUC and average precision of a two-class problem (the second class is the positive one)."""
    return {"roc_auc": roc_auc(scores, positive), "average_precision": average_precision(scores, positive)}


def regression_metrics(pred, y) -> dict:
    """Per target (columns): mae, rmse and r2 (1 - SSE / SST; None where the targets are constant, as r2 is then
    undefined)."""
    pred, y = pred.double().cpu(), y.double().cpu()
    err = pred - y
    mae = err.abs().mean(0)
    rmse = err.pow(2).mean(0).sqrt()
    sst = (y - y.mean(0)).pow(2).sum(0)
    sse = err.pow(2).sum(0)
    r2 = [None if t == 0 else 1 - e / t for e, t in zip(sse.tolist(), sst.tolist())]
    return {"mae": mae.tolist(), "rmse": rmse.tolist(), "r2": r2}
