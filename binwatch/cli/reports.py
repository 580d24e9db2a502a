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
    result: CheckpointEvaluation,
    match: float | None,
    mismatch: float | None,
    score: str,
    target: str,
) -> dict[str, object]:
    """Print and return the verdict-quality figures of an evaluation (model/verdict_quality.py).

    The thresholds are the ones a check would use: the options when given, else the checkpoint's own
    operating points (model/operating_points.py), else the legacy P(recorded) pair.
    """
    from model.operating_points import choose_rule
    from model.verdict_quality import verdict_quality

    rule = choose_rule(result.metadata.get("operating_points"), score, target, match, mismatch)  # type: ignore[arg-type]
    quality = verdict_quality(
        result.probabilities,
        result.counts,
        result.classes,
        match_threshold=rule.match,
        mismatch_threshold=rule.mismatch,
        score=rule.score,
    )
    name = rule.score.replace("_", " ")
    table = Table(
        title=f"verdicts on {quality.bins} bins with 0-5 items, by the {name} (match >= {rule.match:.3g}, "
        f"mismatch < {rule.mismatch:.3g}; thresholds from {THRESHOLDS_FROM[rule.source]})"
    )
    table.add_column("record")
    for verdict in ("match", "uncertain", "mismatch"):
        table.add_column(verdict, justify="right")
    table.add_row("correct", *(f"{quality.correct[v]:.1%}" for v in ("match", "uncertain", "mismatch")))
    table.add_row("off by one", *(f"{quality.off_by_one[v]:.1%}" for v in ("match", "uncertain", "mismatch")))
    console.print(table)
    rec = quality.recommended
    console.print(
        f"AUROC of the {name}, correct vs off-by-one: [bold]{quality.auroc:.3f}[/]; "
        f"bins with more than 5 items called 6 or more: {quality.above_five_called_six_or_more:.1%} "
        f"of {quality.above_five}\nthresholds for <= 5% false alarms and <= 10% false matches on these "
        f"bins: mismatch < {rec['mismatch_threshold']:.3g}, match >= {rec['match_threshold']:.3g}"
    )
    console.print(risk_coverage_table(quality.risk_coverage, rec["match_threshold"]))
    return quality.to_dict()


THRESHOLDS_FROM = {
    "model": "the checkpoint's operating points",
    "settings": "the options",
    "legacy": "the legacy defaults: the checkpoint has no operating points",
}


def risk_coverage_table(rows: list[dict[str, float]], match: float) -> Table:
    """At each false-alarm rate: the mismatch point, the off-by-one records caught, the records decided."""
    grid = Table(title=f"risk and coverage on these bins (match >= {match:.3g})")
    for col in (
        "correct called mismatch, at most",
        "mismatch <",
        "off-by-one caught",
        "off-by-one called match",
        "correct decided",
        "off-by-one decided",
    ):
        grid.add_column(col, justify="right")
    for r in rows:
        grid.add_row(
            f"{r['max_false_alarm']:.0%}",
            f"{r['mismatch_threshold']:.3g}",
            f"{r['caught']:.1%}",
            f"{r['false_match']:.1%}",
            f"{r['decided_correct']:.1%}",
            f"{r['decided_off_by_one']:.1%}",
        )
    return grid
