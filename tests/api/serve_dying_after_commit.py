"""`binwatch serve`, except that the process dies right after its first commit that stores an
Idempotency-Key's answer: the request's effects are in the database, its response never leaves.

Used by tests/api/test_hardening_http.py to show that a client retrying with the same key gets the first
answer and nothing is stored twice. Run as ``python serve_dying_after_commit.py`` with the usual
BINWATCH_* environment; exits with status 17 when it dies. Never import it into another process: the
listeners below are installed on import, for every SQLAlchemy session of that process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from records.orm import IdempotencyRecord

DIED = 17
_MARK = "test_stores_an_idempotency_record"


@event.listens_for(Session, "before_flush")
def _remember(session: Session, _context: Any, _instances: Any) -> None:
    if any(isinstance(obj, IdempotencyRecord) for obj in session.new):
        session.info[_MARK] = True


@event.listens_for(Session, "after_commit")
def _die(session: Session) -> None:
    if session.info.pop(_MARK, False):
        sys.stderr.write("serve_dying_after_commit: committed; dying before the response\n")
        sys.stderr.flush()
        os._exit(DIED)


if __name__ == "__main__":
    from binwatch.cli import main

    sys.argv = ["binwatch", "serve"]
    main()
