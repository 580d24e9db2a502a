"""Training losses for counting: plain cross-entropy, or ordinal-aware variants.

Counting classes are ordered: calling a 4-item bin "3" is a smaller error than calling it "0". Plain
cross-entropy ignores that. Two ordinal-aware terms are offered:

- soft ordinal targets: the one-hot target is replaced by a discretised Gaussian around the true class
  (``sigma`` in classes), so probability mass on neighbours is penalised less than mass far away;
- an expected-count term: the squared error between the softmax's expected count and the true count
  (clipped to the class range), which directly targets RMSE.

``class_weights`` weigh each example by its true class (a weighted mean, so the loss keeps its scale):
model/datasets.py uses them to keep the first dataset's class mix when others are added.
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
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.ordinal_sigma = ordinal_sigma
        self.expected_count_weight = expected_count_weight
        self.register_buffer("positions", torch.arange(num_classes, dtype=torch.float32), persistent=False)
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        weights = torch.ones(num_classes) if class_weights is None else torch.tensor(class_weights)
        self.weighted = class_weights is not None
        self.register_buffer("class_weights", weights.float(), persistent=False)

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        assert self.ordinal_sigma is not None
        dist = self.positions.view(1, -1) - targets.view(-1, 1).float()
        weights = torch.exp(-0.5 * (dist / self.ordinal_sigma) ** 2)
        return weights / weights.sum(dim=1, keepdim=True)

    def _mean(self, per_example: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self.weighted:
            return per_example.mean()
        w = self.class_weights[targets]
        return (w * per_example).sum() / w.sum()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.ordinal_sigma:
            q = self.soft_targets(targets)
            if self.label_smoothing:
                q = q * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
            per_example = -(q * logits.log_softmax(dim=1)).sum(dim=1)
        else:
            per_example = nn.functional.cross_entropy(
                logits, targets, label_smoothing=self.label_smoothing, reduction="none"
            )
        loss = self._mean(per_example, targets)
        if self.expected_count_weight:
            expected = (logits.softmax(dim=1) * self.positions).sum(dim=1)
            loss = loss + self.expected_count_weight * self._mean((expected - targets.float()) ** 2, targets)
        return loss
