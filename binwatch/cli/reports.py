"""Tables the ML commands print: evaluation figures, per-class accuracy, verdict quality."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from model.evaluation import CheckpointEvaluation

console = Console()


def metrics_table(evaluation: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("subset")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("RMSE", justify="right")
    table.add_column("within ±1", justify="right")
    table.add_column("ECE", justify="right")
    table.add_row(
        "model classes",
        str(evaluation["n"]),
        f"{evaluation['accuracy']:.1%}",
        f"{evaluation['rmse']:.3f}",
        f"{evaluation['within_one']:.1%}",
        f"{evaluation['ece']:.3f}",
    )
    for name, sub in evaluation["subsets"].items():
        table.add_row(
            name,
            str(sub["n"]),
            f"{sub['accuracy']:.1%}",
            f"{sub['rmse']:.3f}",
            f"{sub['within_one']:.1%}",
            "",
        )
    for name, sub in evaluation["subsets"].items():
        if "accuracy_restricted" in sub:
            table.add_row(
                f"{name}, argmax within {name}",
                str(sub["n"]),
                f"{sub['accuracy_restricted']:.1%}",
                f"{sub['rmse_restricted']:.3f}",
                "",
                "",
            )
    return table


def per_class_table(evaluation: dict) -> Table:
    table = Table(title="per-class accuracy (model classes)")
    for label in evaluation["labels"]:
        table.add_column(label, justify="right")
    table.add_row(
        *[
            f"{evaluation['per_class_accuracy'][lbl]:.0%}" if lbl in evaluation["per_class_accuracy"] else "-"
            for lbl in evaluation["labels"]
        ]
    )
    return table


def verdict_report(
    result: CheckpointEvaluation, match: float | None, mismatch: float | None
) -> dict[str, object]:
    """Print and return the verdict-quality figures of an evaluation (model/verdict_quality.py)."""
    from model.verdict_quality import verdict_quality
    from settings import Settings

    fields = Settings.model_fields
    quality = verdict_quality(
        result.probabilities,
        result.counts,
        result.classes,
        match_threshold=fields["match_threshold"].default if match is None else match,
        mismatch_threshold=fields["mismatch_threshold"].default if mismatch is None else mismatch,
    )
    table = Table(
        title=f"verdicts on {quality.bins} bins with 0-5 items (match >= {quality.thresholds['match']}, "
        f"mismatch < {quality.thresholds['mismatch']})"
    )
    table.add_column("record")
    for name in ("match", "uncertain", "mismatch"):
        table.add_column(name, justify="right")
    table.add_row("correct", *(f"{quality.correct[v]:.1%}" for v in ("match", "uncertain", "mismatch")))
    table.add_row("off by one", *(f"{quality.off_by_one[v]:.1%}" for v in ("match", "uncertain", "mismatch")))
    console.print(table)
    rec = quality.recommended
    console.print(
        f"AUROC of P(recorded count), correct vs off-by-one: [bold]{quality.auroc:.3f}[/]; "
        f"bins with more than 5 items called 6 or more: {quality.above_five_called_six_or_more:.1%} "
        f"of {quality.above_five}\nthresholds for <= 5% false alarms and <= 10% false matches: mismatch < "
        f"{rec['mismatch_threshold']}, match >= {rec['match_threshold']} (correct records matched "
        f"{rec['correct_match']:.1%}, off-by-one flagged {rec['off_by_one_mismatch']:.1%})"
    )
    grid = Table(title="the same records at other thresholds")
    for col in ("mismatch <", "match >=", "correct: match", "correct: mismatch", "±1: mismatch", "±1: match"):
        grid.add_column(col, justify="right")
    for r in quality.trade_offs:
        grid.add_row(
            f"{r['mismatch_threshold']}",
            f"{r['match_threshold']}",
            f"{r['correct_match']:.1%}",
            f"{r['false_alarm']:.1%}",
            f"{r['off_by_one_mismatch']:.1%}",
            f"{r['false_match']:.1%}",
        )
    console.print(grid)
    return quality.to_dict()
