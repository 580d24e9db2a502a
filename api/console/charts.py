"""Small SVG charts drawn on the server: checks per day, and a job's per-epoch curves.

SVG rather than a JavaScript chart library: the pages work without script, nothing is vendored, and the
same drawing serves the live curve (api/console/jobs.py re-serves it as the job trains). Every chart has
a <title> and <desc> for screen readers; the numbers are also in a table on the same page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#0b5cad", "#c0311f", "#1a7f37", "#9a6700")


def bar_chart(values: Sequence[tuple[str, int]], title: str, width: int = 720, height: int = 180) -> str:
    """Vertical bars, one per (label, value), labels every few bars."""
    pad_l, pad_b, pad_t = 36, 24, 10
    top = max([v for _, v in values] + [1])
    n = max(len(values), 1)
    slot = (width - pad_l - 8) / n
    plot_h = height - pad_b - pad_t
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" font-family="sans-serif" role="img" '
        'aria-labelledby="bt bd" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="bt">{escape(title)}</title>',
        f'<desc id="bd">{escape(", ".join(f"{label}: {v}" for label, v in values))}</desc>',
        f'<text x="4" y="{pad_t + 10}" font-size="11" fill="#5b6470">{top}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 4}" y2="{height - pad_b}" stroke="#9aa4b1"/>',
    ]
    every = max(1, math.ceil(n / 7))
    for i, (label, value) in enumerate(values):
        h = plot_h * value / top
        x = pad_l + i * slot + slot * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{height - pad_b - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}: {value}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 6}" font-size="11" fill="#5b6470">{escape(label[5:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _panel(
    series: dict[str, list[tuple[float, float]]],
    x0: float,
    y0: float,
    w: float,
    h: float,
    label: str,
    y_range: tuple[float, float] | None = None,
) -> list[str]:
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    out = [
        f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#d5dae1"/>',
        f'<text x="{x0}" y="{y0 - 8}" font-size="16" fill="#1b1f24">{escape(label)}</text>',
    ]
    if not points:
        out.append(f'<text x="{x0 + 10}" y="{y0 + h / 2}" font-size="12" fill="#5b6470">no epochs yet</text>')
        return out
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = y_range or (min(ys), max(ys))
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

    def sx(x: float) -> float:
        return x0 + 8 + (w - 16) * (x - x_lo) / (x_hi - x_lo)

    def sy(y: float) -> float:
        return y0 + h - 8 - (h - 16) * (y - y_lo) / (y_hi - y_lo)

    out.append(f'<text x="{x0 + 4}" y="{y0 + 16}" font-size="13" fill="#5b6470">{y_hi:.3g}</text>')
    out.append(f'<text x="{x0 + 4}" y="{y0 + h - 6}" font-size="13" fill="#5b6470">{y_lo:.3g}</text>')
    first, last = int(min(xs)), int(max(xs))
    out.append(
        f'<text x="{x0}" y="{y0 + h + 16}" font-size="13" fill="#5b6470">epoch {first}</text>'
        f'<text x="{x0 + w}" y="{y0 + h + 16}" font-size="13" fill="#5b6470" text-anchor="end">{last}</text>'
    )
    legend_y = y0 + 18
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        good = [(sx(x), sy(y)) for x, y in pts if math.isfinite(y)]
        if not good:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in good:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
        out.append(
            f'<text x="{x0 + w - 8}" y="{legend_y}" font-size="13" fill="{color}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        legend_y += 17
    return out


def epoch_curves(epochs: list[dict[str, float | None]], title: str) -> str:
    """Losses (train, val) and val accuracy against the epoch, as a standalone SVG document."""
    width, height = 720, 280

    def pts(key: str) -> list[tuple[float, float]]:
        return [(float(e["epoch"] or 0), float(v)) for e in epochs if (v := e.get(key)) is not None]

    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" role="img" aria-labelledby="ct cd">',
        f'<title id="ct">{escape(title)}</title>',
        f'<desc id="cd">{len(epochs)} epochs: train and validation loss, validation accuracy.</desc>',
        '<rect width="100%" height="100%" fill="#fff"/>',
    ]
    body += _panel({"train loss": pts("train_loss"), "val loss": pts("val_loss")}, 10, 28, 340, 220, "loss")
    accuracy = {"val accuracy": pts("val_accuracy")}
    body += _panel(accuracy, 370, 28, 340, 220, "validation accuracy", y_range=(0.0, 1.0))
    body.append("</svg>")
    return "".join(body)
