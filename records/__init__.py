"""binwatch's persistence, shared by the API and the worker (which never import each other).

- ``records.db``: engines, sessions and the readiness probe, for Postgres and the embedded SQLite default.
- ``records.orm``: the tables (API keys, bins, bin checks, model versions, promotions, training jobs).
- ``records.migrate``: Alembic, run from code; the migrations live in the repository's ``alembic/`` folder.
- ``records.artifacts``: where checkpoints and check images go, a local folder or an S3 bucket.

The ML core (``model``) never imports this package.
"""
