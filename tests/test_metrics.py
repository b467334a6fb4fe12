"""The evaluate reports' metrics (dlcli.tasks.metrics) against scikit-learn, on random and on edge-case inputs. No
training: these run in a second, and tools/mutation.py runs them against every planted bug in the module."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from dlcli.tasks.metrics import average_precision, binary_ranking, classification_report, prf, regression_metrics, \
    roc_auc


def close(a, b, tol=1e-9):
    return a is not None and b is not None and math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def check_classification(logits, y, classes):
    report = classification_report(logits, y, classes)
    k, yn, pred = len(classes), y.numpy(), logits.argmax(1).numpy()
    assert report["samples"] == len(yn)
    assert close(report["loss"], skm.log_loss(yn, F.softmax(logits.double(), 1).numpy(), labels=list(range(k))),
                 1e-5)
    assert close(report["accuracy"], skm.accuracy_score(yn, pred))
    # balanced accuracy: the mean recall over the classes present in the labels (sklearn warns when a prediction
    # names a class the labels lack, and averages over the labels' classes as we do)
    recalls = skm.recall_score(yn, pred, labels=np.unique(yn), average=None, zero_division=0)
    assert close(report["balanced_accuracy"], recalls.mean())
    p, r, f, s = skm.precision_recall_fscore_support(yn, pred, labels=list(range(k)), zero_division=0)
    for i, row in enumerate(report["per_class"]):
        assert row == {"index": i, "label": classes[i], "precision": pytest.approx(p[i]),
                       "recall": pytest.approx(r[i]), "f1": pytest.approx(f[i]), "support": int(s[i])}
        assert type(row["support"]) is int
    # macro: over the classes in the labels or the predictions (sklearn's default label set)
    mp, mr, mf, _ = skm.precision_recall_fscore_support(yn, pred, average="macro", zero_division=0)
    assert report["macro"] == {"precision": pytest.approx(mp), "recall": pytest.approx(mr), "f1": pytest.approx(mf)}
    assert report["confusion_matrix"] == skm.confusion_matrix(yn, pred, labels=list(range(k))).tolist()
    assert report["classes"] == list(classes) and report["classes"] is not classes
    if k >= 10:
        assert close(report["top5_accuracy"], skm.top_k_accuracy_score(yn, logits.numpy(), k=5,
                                                                       labels=list(range(k))))
    else:
        assert "top5_accuracy" not in report
    return report


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5, 10, 12])
def test_classification_report_matches_scikit_learn(seed, k):
    g = torch.Generator().manual_seed(seed * 100 + k)
    n = 40 + 7 * seed
    y = torch.randint(0, k, (n,), generator=g)
    # logits leaning to the true class, so precision and recall differ from class to class and from chance
    logits = torch.randn(n, k, generator=g) + 1.5 * F.one_hot(y, k) * torch.rand(n, 1, generator=g)
    check_classification(logits, y, [f"c{i}" for i in range(k)])


def test_a_class_never_predicted_or_never_present_counts_as_zero_and_macro_skips_absent_ones():
    classes = ["a", "b", "c", "d"]
    # labels a, a, b, b, b, c; predictions a, b, b, b, a, a: c is never predicted, d is neither
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = F.one_hot(torch.tensor([0, 1, 1, 1, 0, 0]), 4).float() * 3
    report = check_classification(logits, y, classes)
    c, d = report["per_class"][2], report["per_class"][3]
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert (d["precision"], d["recall"], d["f1"], d["support"]) == (0.0, 0.0, 0.0, 0)
    # by hand: a: p 1/3 r 1/2; b: p 2/3 r 2/3; c: 0 0 (present in the labels, so in the macro average); d left out
    assert report["macro"]["precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert report["macro"]["recall"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert report["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert report["accuracy"] == pytest.approx(3 / 6)


def test_a_class_only_predicted_counts_in_macro_but_not_in_balanced_accuracy():
    y = torch.tensor([0, 0, 1, 1])
    logits = F.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    report = check_classification(logits, y, ["a", "b", "c"])
    assert report["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # c has no labels: not a class present
    assert report["macro"]["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)  # c was predicted: present


def test_top5_accuracy_by_hand_at_ten_classes():
    logits = torch.arange(10.0).repeat(3, 1)  # class 9 scores highest, then 8 ... : the top five are 5..9
    y = torch.tensor([5, 4, 9])
    report = classification_report(logits, y, [str(i) for i in range(10)])
    assert report["top5_accuracy"] == pytest.approx(2 / 3) and report["accuracy"] == pytest.approx(1 / 3)
    assert "top5_accuracy" not in classification_report(logits[:, :9], y.clamp_max(8), [str(i) for i in range(9)])


def test_prf_is_zero_where_undefined():
    tp, predicted, support = (torch.tensor(v, dtype=torch.float64) for v in ([0, 2, 0, 3], [0, 4, 2, 3], [1, 2, 0, 6]))
    precision, recall, f1 = prf(tp, predicted, support)
    assert precision.tolist() == [0.0, 0.5, 0.0, 1.0]
    assert recall.tolist() == [0.0, 1.0, 0.0, 0.5]
    assert f1.tolist() == pytest.approx([0.0, 2 * 0.5 / 1.5, 0.0, 2 * 0.5 / 1.5])


def test_roc_auc_and_average_precision_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    for n, levels in ((30, 4), (50, 1000), (9, 2), (200, 7)):
        scores = rng.integers(0, levels, n) / levels  # few levels: many ties
        positive = rng.random(n) < 0.4
        positive[:2] = [True, False]
        s, p = torch.tensor(scores), torch.tensor(positive)
        assert close(roc_auc(s, p), skm.roc_auc_score(positive, scores)), (n, levels)
        assert close(average_precision(s, p), skm.average_precision_score(positive, scores)), (n, levels)
        assert binary_ranking(s, p) == {"roc_auc": roc_auc(s, p), "average_precision": average_precision(s, p)}


def test_ranking_metrics_by_hand():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    p = torch.tensor([0, 0, 1, 1])
    assert roc_auc(s, p) == pytest.approx(0.75)
    assert average_precision(s, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc(torch.tensor([[0.9], [0.1]]), torch.tensor([[1], [0]])) == pytest.approx(1.0)  # flattened
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 0])) == pytest.approx(0.0)
    # all tied: one threshold, precision = the share of positives
    assert average_precision(torch.zeros(4), torch.tensor([1, 0, 0, 0])) == pytest.approx(0.25)


def test_ranking_metrics_are_none_without_both_classes():
    s = torch.tensor([0.2, 0.7, 0.4])
    assert roc_auc(s, torch.tensor([1, 1, 1])) is None and roc_auc(s, torch.tensor([0, 0, 0])) is None
    assert average_precision(s, torch.tensor([0, 0, 0])) is None
    assert average_precision(s, torch.tensor([1, 1, 1])) == pytest.approx(1.0)
    assert roc_auc(s, torch.tensor([0, 1, 0])) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_regression_metrics_match_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(30, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 2
    pred = y + torch.randn(30, 3, generator=g) * torch.tensor([0.5, 3.0, 0.2])
    m = regression_metrics(pred, y)
    yn, pn = y.double().numpy(), pred.double().numpy()
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(yn, pn, multioutput="raw_values").tolist())
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(yn, pn, multioutput="raw_values")).tolist())
    assert m["r2"] == pytest.approx(skm.r2_score(yn, pn, multioutput="raw_values").tolist())


def test_r2_is_none_for_a_constant_target_and_errors_by_hand():
    y = torch.tensor([[1.0, 2.0], [1.0, 4.0], [1.0, 6.0]])
    pred = torch.tensor([[2.0, 2.0], [0.0, 5.0], [1.0, 3.0]])
    m = regression_metrics(pred, y)
    assert m["mae"] == pytest.approx([2 / 3, 4 / 3])
    assert m["rmse"] == pytest.approx([math.sqrt(2 / 3), math.sqrt(10 / 3)])
    assert m["r2"][0] is None and m["r2"][1] == pytest.approx(1 - 10 / 8)


def test_a_class_seen_once_and_found_once_scores_one():
    y = torch.tensor([0, 0, 1, 2, 2])
    logits = F.one_hot(torch.tensor([0, 0, 1, 2, 0]), 3).float()
    report = check_classification(logits, y, ["a", "b", "c"])
    b = report["per_class"][1]
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == (1.0, 1.0, 1.0, 1)
