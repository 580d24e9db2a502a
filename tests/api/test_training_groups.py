"""POST /v1/training-jobs with nodes and procs_per_node: what the edge refuses (and why, in words the client
can act on), and what a job shows of its group. The training itself: tests/worker/test_training_groups.py and
tests/e2e/test_two_hosts.py."""

from __future__ import annotations

from collections.abc import Callable

from tests.api.conftest import Service


def test_a_group_that_cannot_run_here_is_refused_before_anything_is_stored(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service(max_nodes=4)
    h = svc.headers()
    data = {"uri": "/data/abid"}
    cases = [
        (
            {"nodes": 3, "hyperparameters": {"recipe": "smoke", "batch_size": 32}},
            "multiple of 3",
            "hyperparameters",
        ),
        (
            {"nodes": 2, "procs_per_node": 3, "hyperparameters": {"batch_size": 64}},
            "use e.g. 60",
            "hyperparameters",
        ),
        ({"nodes": 5}, "BINWATCH_MAX_NODES", "nodes"),
        ({"procs_per_node": 9}, "BINWATCH_MAX_PROCS_PER_NODE", "procs_per_node"),
    ]
    for extra, words, field in cases:
        refused = svc.client.post("/v1/training-jobs", json={"dataset": data, **extra}, headers=h)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert words in body["detail"], body
        assert body["errors"][0]["loc"] == ["body", field]
    zero = svc.client.post("/v1/training-jobs", json={"dataset": data, "nodes": 0}, headers=h)
    assert zero.status_code == 422 and zero.json()["errors"][0]["loc"][-1] == "nodes"
    assert svc.client.get("/v1/training-jobs", headers=h).json()["items"] == []


def test_a_multi_node_job_shows_its_size_and_an_empty_group_until_a_worker_claims_it(
    make_service: Callable[..., Service],
) -> None:
    svc = make_service()
    h = svc.headers()
    body = {
        "dataset": {"uri": "/data/abid"},
        "hyperparameters": {"batch_size": 64},
        "nodes": 2,
        "procs_per_node": 2,
    }
    job = svc.client.post("/v1/training-jobs", json=body, headers=h).json()
    assert (job["nodes"], job["procs_per_node"]) == (2, 2)
    shown = svc.client.get(f"/v1/training-jobs/{job['id']}", headers=h).json()
    assert shown["group"] == [] and shown["nodes"] == 2
    listed = svc.client.get("/v1/training-jobs", headers=h).json()["items"][0]
    assert listed["procs_per_node"] == 2 and listed["group"] is None
