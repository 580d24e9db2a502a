"""Alembic, run from code: ``binwatch`` commands and tests upgrade the schema without a shell or an ini file.

The migration scripts live in the repository's ``alembic/`` folder, next to ``alembic.ini`` (which serves
the ``alembic`` command line). Both routes share ``alembic/env.py``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from records.db import make_engine, normalize_url

ALEMBIC_DIR = Path(__file__).resolve().parents[1] / "alembic"


def alembic_config(url: str) -> Config:
    """An Alembic Config for the database at ``url``, with no ini file involved."""
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise FileNotFoundError(
            f"Alembic scripts not found at {ALEMBIC_DIR}: records.migrate needs the repository checkout "
            "(pip install -e .), as the alembic/ folder is not packaged"
        )
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("path_separator", "os")
    # Config values go through configparser interpolation, where a bare '%' (URL-escaped passwords) is
    # an error; '%%' reads back as '%'.
    url_text = normalize_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url_text.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (creating the tables on an empty database)."""
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision``; ``base`` drops every binwatch table."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
