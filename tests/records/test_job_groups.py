"""records/job_groups.py on both dialects: a group belongs to one claim of the job, each node rank seats one
worker, and members of an older group cannot join or keep waiting."""

from __future__ import annotations

from records import job_groups, jobs


def test_nodes_join_the_group_of_the_claim_once_each(sessions) -> None:  # type: ignore[no-untyped-def]
    J = job_groups.JoinOutcome
    with sessions() as s:
        job = jobs.create_job(
            s, dataset={"uri": "/d"}, params={}, promotion_policy="never", epochs=1, nodes=3
        )
        s.commit()
        job_id = job.id
        # Not running yet: nobody can join, and only the job's owner can open a group.
        assert job_groups.join_group(s, job_id, "g1", 1, "b", "10.0.0.2") == J.STALE
        assert not job_groups.open_group(s, job_id, "a", "g1", "host-a", "10.0.0.1", 29500)
        assert jobs.claim_job(s, job_id, "a", 60).outcome == jobs.ClaimOutcome.CLAIMED
        assert job_groups.open_group(s, job_id, "a", "g1", "host-a", "10.0.0.1", 29500)

        assert job_groups.join_group(s, job_id, "g1", 1, "b", "10.0.0.2") == J.JOINED
        assert job_groups.join_group(s, job_id, "g1", 1, "c", "10.0.0.3") == J.TAKEN  # a redelivered message
        assert job_groups.join_group(s, job_id, "g1", 3, "c", "10.0.0.3") == J.STALE  # no node 3 of 3
        assert job_groups.join_group(s, job_id, "other", 2, "c", "10.0.0.3") == J.STALE
        seated = job_groups.members(s, "g1")
        assert [(m.node_rank, m.address, m.port) for m in seated] == [
            (0, "10.0.0.1", 29500),
            (1, "10.0.0.2", None),
        ]
        assert job_groups.still_forming(s, job_id, "g1")

        # The next claim opens a new group: the old one's members stop waiting and cannot join it.
        assert jobs.release_job(s, job_id, "a", give_back_attempt=False)
        assert not job_groups.still_forming(s, job_id, "g1")
        assert jobs.claim_job(s, job_id, "b", 60).outcome == jobs.ClaimOutcome.CLAIMED
        assert s.get(type(job), job_id).attempts == 2  # the lost group's attempt was kept  # type: ignore[union-attr]
        assert job_groups.open_group(s, job_id, "b", "g2", "host-b", "10.0.0.2", 29501)
        assert job_groups.join_group(s, job_id, "g1", 2, "c", "10.0.0.3") == J.STALE
        assert job_groups.join_group(s, job_id, "g2", 2, "c", "10.0.0.3") == J.JOINED
        assert [r.node_rank for r in job_groups.group_rows(s, "g2")] == [0, 2]
