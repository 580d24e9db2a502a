"""Spot instances: a worker reads its instance type from the instance metadata service at the address the
operator configured, and hands its job back when a spot interruption notice appears there.

The metadata service is real HTTP on loopback: moto_server's (instance type, IMDSv2 token) and, for the
notice, which moto does not serve, a small server speaking the same paths. Never a real EC2 address.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from settings import Settings
from tests.conftest import ABID
from tests.worker.conftest import Stack
from tests.worker.support import wait_for
from worker.instance_metadata import InstanceMetadata, instance_type

pytestmark = pytest.mark.slow


class Imds(ThreadingHTTPServer):
    notice: str | None = None
    seen_tokens: int = 0


class Handler(BaseHTTPRequestHandler):
    server: Imds

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.server.seen_tokens += 1
            return self._send(200, "token-1")
        self._send(400, "bad")

    def do_GET(self) -> None:  # noqa: N802
        if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
            return self._send(401, "")
        if self.path == "/latest/meta-data/instance-type":
            return self._send(200, "g5.xlarge")
        if self.path == "/latest/meta-data/spot/instance-action" and self.server.notice:
            return self._send(200, self.server.notice)
        self._send(404, "")


@pytest.fixture
def imds() -> Iterator[Imds]:
    server = Imds(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_moto_servers_metadata_gives_the_instance_type(moto_endpoint: str) -> None:
    assert InstanceMetadata(moto_endpoint).instance_type() == "moto.virtual"
    settings = Settings(_env_file=None, instance_metadata_url=moto_endpoint)  # type: ignore[call-arg]
    assert instance_type(settings) == "moto.virtual"
    # The operator's own setting wins; with neither, nothing is contacted and the type is unknown.
    given = Settings(_env_file=None, instance_metadata_url=moto_endpoint, instance_type="c7i.large")  # type: ignore[call-arg]
    assert instance_type(given) == "c7i.large"
    assert instance_type(Settings(_env_file=None)) is None  # type: ignore[call-arg]


def test_a_spot_notice_hands_the_job_back_and_another_worker_finishes_it(stack: Stack, imds: Imds) -> None:
    url = f"http://127.0.0.1:{imds.server_address[1]}"
    spot = stack.worker(
        "spot",
        BINWATCH_INSTANCE_METADATA_URL=url,
        BINWATCH_SPOT_POLL_SECONDS="0.3",
        BINWATCH_CAPACITY="spot",
        BINWATCH_INSTANCE_PRICES=json.dumps({"g5.xlarge": {"on-demand": 1.006, "spot": 0.4}}),
    )
    spot.wait_ready()
    job_id = stack.jobs.submit({"uri": str(ABID), "limit": 200}, epochs=4, policy="always")
    wait_for(lambda: stack.jobs.get(job_id).epoch >= 1, 120, "epoch 1 to be stored", interval=0.05)
    imds.notice = json.dumps({"action": "terminate", "time": "2026-11-27T05:00:00Z"})
    # Warm shutdown: the job stops at its next batch, goes back to the queue, and the worker exits.
    assert spot.proc.wait(timeout=60) == 0, spot.log()[-3000:]
    assert "spot interruption notice" in spot.log()
    job = stack.jobs.get(job_id)
    assert job.status == "queued" and job.epoch >= 1, (job.status, job.epoch)
    handed_back_after = job.epoch
    run = wait_for(lambda: (stack.jobs.get(job_id).usage or {}).get("runs"), 10, "the spot run's usage")[0]
    assert run["instance_type"] == "g5.xlarge" and run["capacity"] == "spot" and run["outcome"] == "requeue"
    assert run["cost_usd"] is not None and run["cost_usd"] > 0
    # Another worker resumes it after its last stored epoch; one model version in the end.
    stack.worker("on-demand")
    job = stack.jobs.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=240)
    assert job.status == "succeeded", stack.logs()[-4000:]
    epochs = stack.jobs.epochs(job_id)
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert epochs[handed_back_after].metrics["resumed_after_epoch"] == handed_back_after
    assert imds.seen_tokens > 0
