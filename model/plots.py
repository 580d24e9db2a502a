"""Pictures people would rather look at than read: confusion matrices and training curves (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or workers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.metrics import Evaluation  # noqa: E402


def plot_confusion(evaluation: Evaluation, path: str | Path, title: str | None = None) -> Path:
    cm = np.asarray(evaluation.confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    labels = evaluation.labels
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)), dpi=110)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color=colour,
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    ax.set_title(
        title or f"accuracy {evaluation.accuracy:.1%}, RMSE {evaluation.rmse:.2f} (n={evaluation.n})"
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_history(history: list[dict[str, float]], path: str | Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for key, label in (
        ("accuracy", "val accuracy"),
        ("accuracy_0-5", "val 0-5 accuracy"),
        ("accuracy_1-5", "val 1-5 accuracy"),
    ):
        if history and key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
