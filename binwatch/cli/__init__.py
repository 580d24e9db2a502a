"""The `binwatch` command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from binwatch.cli import data, jobs, ml, models, service, tune, tuning

app = typer.Typer(
    name="binwatch",
    help="Count objects in bin photos, flag inventory mismatches, train and serve the counting model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data", help="Fetch and summarise ABID-layout datasets (local folder or S3).")
ml.register(app)
tune.register(app)  # `binwatch tune`
jobs.register(app)  # `binwatch jobs …` and `binwatch worker`
tuning.register(app)  # `binwatch tuning …`
service.register(app)  # `binwatch serve`, `binwatch apikeys …`
models.register(app)  # `binwatch models …`


def main() -> None:
    app()
