"""What a job run used: its phases' wall time, where it ran, its estimated cost (records/costs.py).

``UsageRecording`` is a part of ``worker.runner.JobRun`` (a mixin): the run laps its phases (``load``,
``train``, ``finish``) and, whatever its outcome, records one entry on the job when it ends.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from records import costs
from settings import Settings
from worker.instance_metadata import instance_type
from worker.outcomes import Outcome

log = logging.getLogger("worker.runner")


class UsageRecording:
    job_id: str
    owner: str
    settings: Settings
    phases: dict[str, float]
    processes: int  # this host's processes of the job (procs_per_node)
    _lap_at: float
    # A method of JobRun, which this class is a part of (declared for the type checker only).
    session: Callable[[], Session]

    def _record_usage(self, outcome: Outcome) -> None:
        """This run's place, phases and estimated cost on the job (records/costs.py); best effort."""
        try:
            # A run that stopped early spent its last stretch in the phase it had reached.
            for phase in ("load", "train", "finish"):
                if phase not in self.phases:
                    self._lap(phase)
                    break
            device = self._device_name()
            entry = costs.run_entry(
                host=self.owner,
                instance_type=instance_type(self.settings),
                capacity=self.settings.capacity,
                device=device,
                processes=self.processes,
                phases=self.phases,
                hourly_usd=costs.price(
                    self.settings.instance_prices, instance_type(self.settings), self.settings.capacity
                ),
                outcome=outcome.value,
            )
            with self.session() as session:
                costs.record_run(session, self.job_id, entry)
        except Exception:  # noqa: BLE001 - the job's result matters more than its bill
            log.warning("job %s: could not record its usage", self.job_id, exc_info=True)

    def _device_name(self) -> str:
        from model.training import resolve_device

        device = resolve_device(self.settings.device)
        if device.type == "cuda":
            import torch

            return f"cuda ({torch.cuda.get_device_name(device)})"
        return f"cpu ({os.cpu_count()} cores)"

    def _lap(self, phase: str) -> None:
        """Close the current phase: its wall time since the previous lap is added to ``phase``."""
        now = time.monotonic()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._lap_at
        self._lap_at = now
