"""The thread that keeps a running job's heartbeat fresh and notices when another worker took it over."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from records import jobs

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Keeps ``heartbeat_at`` fresh while the job runs, including through phases with no training hook
    (decoding the dataset, calibration, evaluation), and notices when the job was taken over."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, owner: str, every_s: float) -> None:
        super().__init__(name=f"heartbeat-{job_id[:8]}", daemon=True)
        self.sessions, self.job_id, self.owner, self.every_s = sessions, job_id, owner, every_s
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                with self.sessions() as session:
                    if not jobs.heartbeat(session, self.job_id, self.owner):
                        self.lost.set()
                        return
            except Exception:  # noqa: BLE001 - a database blip must not kill the job; the next beat retries
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
