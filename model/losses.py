"""Training losses for counting: plain cross-entropy, or ordinal-aware variants.

Counting classes are ordered: calling a 4-item bin "3" is a smaller error than calling it "0". Plain
cross-entropy ignores that. Two ordinal-aware terms are offered:

- soft ordinal targets: the one-hot target is replaced by a discretised Gaussian around the true class
  (``sigma`` in classes), so probability mass on neighbours is penalised less than mass far away;
- an expected-count term: the squared error between the softmax's expected count and the true count
  (clipped to the class range), which directly targets RMSE.
"""

from __future__ import annotations

import torch
from torch import nn


class CountingLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        ordinal_sigma: float | None = None,
        expected_count_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.ordinal_sigma = ordinal_sigma
        self.expected_count_weight = expected_count_weight
        self.register_buffer("positions", torch.arange(num_classes, dtype=torch.float32), persistent=False)

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        assert self.ordinal_sigma is not None
        dist = self.positions.view(1, -1) - targets.view(-1, 1).float()
        weights = torch.exp(-0.5 * (dist / self.ordinal_sigma) ** 2)
        return weights / weights.sum(dim=1, keepdim=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.ordinal_sigma:
            q = self.soft_targets(targets)
            if self.label_smoothing:
                q = q * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
            loss = -(q * logits.log_softmax(dim=1)).sum(dim=1).mean()
        else:
            loss = nn.functional.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        if self.expected_count_weight:
            expected = (logits.softmax(dim=1) * self.positions).sum(dim=1)
            loss = loss + self.expected_count_weight * ((expected - targets.float()) ** 2).mean()
        return loss
