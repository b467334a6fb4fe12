"""`train.cv_final: bag`: the K cross-validation folds' models as one module that averages their outputs.

Averaging probabilities (not logits) is what a bag of classifiers means: each member's softmax, then the mean; the
module returns log(mean probability), which are logits whose softmax is that mean, so every task method, export and
serve read it like any classifier's output. A regression bag averages the standardised values (every fold trained on
the same target scaling, dlcli.cv). One state_dict (members.0..K-1) in one ordinary checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

RULES = ("probabilities", "values")


class Bag(nn.Module):
    def __init__(self, members: list[nn.Module], rule: str):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"unknown bag rule {rule!r}")
        self.members, self.rule = nn.ModuleList(members), rule

    def forward(self, x):
        outs = torch.stack([member(x) for member in self.members])
        if self.rule == "probabilities":
            return torch.logsumexp(torch.log_softmax(outs.float(), -1), 0) - math.log(len(self.members))
        return outs.mean(0)


def bagged(cfg) -> int:
    """How many fold models a run's config averages (0: one model)."""
    return cfg.train.cv if cfg.train.cv and cfg.train.cv_final == "bag" else 0


def bag_of(cfg, build) -> nn.Module:
    """The run's model: build() once, or a Bag of cfg.train.cv builds when the run bags its folds."""
    k = bagged(cfg)
    return Bag([build() for _ in range(k)], cfg.task.bag_rule) if k else build()
