"""Reviewed checks become training data, end to end over real HTTP.

A real API process (two uvicorn workers) and a real worker process on Postgres and Redis, real ABID
photos: bins are checked with their photos, people review the checks (POST …/review), a training job
adds the reviewed photos to a small ABID subset, and the model it trains is promoted and serves
predictions. Training on reviews in-process: tests/worker/test_job_data_reviews.py.
"""

from __future__ import annotations

import httpx
import pytest

from model.abid import LocalSource, load_records
from tests.conftest import ABID
from tests.e2e.conftest import Deployment, create_key
from tests.worker.support import wait_for

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "cancelled")


def test_reviewed_checks_train_a_model_that_is_promoted_and_serves(deployment: Deployment) -> None:
    dep = deployment
    key = create_key(dep.jobs, ["predict", "inventory", "train"])
    # Twelve real bins, six holding 2 objects and six holding 3: with one photo unusable, 5 and 6 reviewed
    # photos per count, so the stratified 15% split gives validation one of each.
    val_bins = [r for r in load_records(LocalSource(ABID)) if r.split == "val"]
    bins = [r for r in val_bins if r.count == 2][:6] + [r for r in val_bins if r.count == 3][:6]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=dep.api.url, headers=headers, timeout=120) as http:
        expected_examples = 0
        for i, record in enumerate(bins):
            # Every third bin records a wrong count: its reviewer counts the photo and corrects the record.
            wrong = i % 3 == 2
            recorded = record.count + 1 if wrong else record.count
            r = http.put(f"/v1/bins/{record.id}", json={"expected_count": recorded})
            assert r.status_code in (200, 201), r.text
            photo = (ABID / "bin-images" / f"{record.id}.jpg").read_bytes()
            r = http.post(f"/v1/bins/{record.id}/checks", files={"image": (f"{record.id}.jpg", photo)})
            assert r.status_code == 201, r.text
            check_id = r.json()["id"]
            if i == 0:
                review = {"outcome": "unusable"}
            elif wrong:
                review = {"outcome": "counted", "seen_count": record.count, "correct_record": True}
            else:
                review = {"outcome": "confirmed"}
            expected_examples += review["outcome"] != "unusable"
            r = http.post(f"/v1/bins/{record.id}/checks/{check_id}/review", json=review)
            assert r.status_code == 200, r.text
        assert expected_examples == 11
        corrected = http.get(f"/v1/bins/{bins[2].id}").json()
        assert corrected["expected_count"] == bins[2].count and corrected["source"] == "review"

        body = {
            "dataset": {"uri": str(ABID), "limit": 60, "reviews": {}},
            "hyperparameters": {"recipe": "smoke", "image_size": 64, "batch_size": 16, "epochs": 1},
            "promotion_policy": "always",
            "model_name": "with-reviews",
        }
        r = http.post("/v1/training-jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert set(r.json()["dataset"]["reviews"]) == {"reviewed_before"}  # pinned at submission
        job = wait_for(
            lambda: (
                j if (j := http.get(f"/v1/training-jobs/{job_id}").json())["status"] in FINISHED else None
            ),
            240,
            f"job {job_id} to finish",
            interval=0.5,
        )
        assert job["status"] == "succeeded", f"{job}\n{dep.logs()}"
        new_id = job["model_version_id"]
        assert new_id != dep.baseline_id and job["promotion_decision"].startswith("policy 'always': promoted")

        # The version records how many reviewed photos it trained and validated on, and which split.
        metrics = http.get(f"/v1/models/{new_id}").json()["metrics"]
        reviewed = metrics["reviewed_examples"]
        assert reviewed == {"train": 9, "val": 2}
        assert "and 2 reviewed photos, a stratified 15% split" in metrics["evaluated_on"], metrics[
            "evaluated_on"
        ]
        assert metrics["train_bins"] > reviewed["train"]  # the ABID subset trained too
        assert "reviewed photos" in dep.worker.log()

        # Promoted: both API processes swap to it, and it counts photos.
        photo = (ABID / "bin-images" / f"{bins[1].id}.jpg").read_bytes()
        served: list[int] = []

        def swapped() -> bool:
            r = http.post("/v1/predictions", files={"images": ("bin.jpg", photo, "image/jpeg")})
            assert r.status_code == 200, r.text
            served.append(r.json()["predictions"][0]["model"]["id"])
            return served[-6:] == [new_id] * 6

        wait_for(swapped, 60, "six predictions in a row from the new version", interval=0.2)
        prediction = http.post("/v1/predictions", files={"images": ("bin.jpg", photo, "image/jpeg")}).json()[
            "predictions"
        ][0]
        assert prediction["model"]["id"] == new_id and prediction["count"] >= 0
    print(
        f"\njob on 60 ABID bins + {expected_examples} reviewed photos {reviewed}: "
        f"{job['timings']['running_s']:.1f} s running, {job['timings']['total_s']:.1f} s from submission"
    )
