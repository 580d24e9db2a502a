"""Optimizer, learning-rate schedule and backbone freezing for training.

Fine-tuning a pretrained backbone wants two things a from-scratch run does not: a smaller learning rate for
the backbone than for the fresh head (``backbone_lr_scale``), and optionally a few first epochs in which only
the head learns (``freeze_epochs``), so the random head's first large gradients do not wreck the features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import TrainConfig
from model.network import is_head_parameter


def build_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: decaying them only hurts. Each group carries its own max lr so
    # OneCycleLR scales head and backbone alike. Head and backbone get separate groups only when their
    # learning rates differ: optimizer states saved before backbone_lr_scale existed hold two groups, and a
    # resumed run must load them.
    named = list(net.named_parameters())
    if cfg.backbone_lr_scale == 1.0:
        parts = [(named, 1.0)]
    else:
        backbone = [(n, p) for n, p in named if not is_head_parameter(n)]
        head = [(n, p) for n, p in named if is_head_parameter(n)]
        parts = [(backbone, cfg.backbone_lr_scale), (head, 1.0)]
    groups: list[dict[str, object]] = []
    for params, scale in parts:
        for decayed in (True, False):
            chosen = [p for _, p in params if (p.ndim > 1) == decayed]
            if chosen:
                decay = cfg.weight_decay if decayed else 0.0
                groups.append({"params": chosen, "weight_decay": decay, "lr": cfg.lr * scale})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, cfg.epochs * steps_per_epoch)
    # OneCycleLR needs at least two steps in each of its phases; very short runs use warm-up + cosine.
    if cfg.schedule == "onecycle" and total >= 8:
        pct = min(0.5, max(2.5 / total, cfg.warmup_epochs * steps_per_epoch / total))
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def set_backbone_frozen(net: nn.Module, frozen: bool) -> None:
    """Freeze (or release) every parameter but the head's. A frozen backbone's BatchNorm layers keep their
    running statistics too, so the head trains on the features the pretrained weights produce."""
    for name, p in net.named_parameters():
        if not is_head_parameter(name):
            p.requires_grad_(not frozen)
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_head_parameter(name + "."):
            module.train(not frozen and net.training)
