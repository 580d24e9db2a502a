"""The end of a tuning job's study: its pictures drawn, the best trial's checkpoint registered as the study's
one model version and the promotion policy applied, in the transaction that marks the study succeeded
(worker/trials.py says when this runs; docs/tuning.md why it is safe to run twice).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy.exc import IntegrityError

from model.metrics import Evaluation
from model.tuning.pictures import draw
from model.tuning.study import best_trial
from records import model_versions, registry, tuning_jobs
from records.job_spec import DatasetSpec
from records.orm import ModelVersion
from records.tuning_storage import load_study
from worker.promotion import Decision, decide
from worker.trials import pictures_prefix, tell

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from worker.runner import Resources

log = logging.getLogger(__name__)


def finish_study(res: Resources, tuning_id: str) -> None:
    """Draw the pictures, register the best trial's model and apply the promotion policy, once."""
    import optuna

    with res.sessions() as session:
        tuning = tuning_jobs.get_tuning_job(session, tuning_id)
        if tuning is None or tuning.status not in tuning_jobs.ACTIVE_STATUSES:
            return
        params = dict(tuning.params)
        policy, study_name = tuning.promotion_policy, tuning.study_name
        trial_jobs = tuning_jobs.trial_jobs(session, tuning_id)
        by_number = {t.trial_number: t.id for t in trial_jobs}
        status_of = {t.trial_number: t.status for t in trial_jobs}
        dataset = dict(tuning.dataset)
    study = load_study(res.settings.resolved_tuning_storage_url, study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Either its job already ended and its worker has not told Optuna yet (a pruned job is marked in
        # the database first; this finisher can run in that gap), or it was asked by a worker that died
        # before it could record the trial on its job, and it will never report.
        tell(study, t.number, state="PRUNED" if status_of.get(t.number) == "pruned" else "FAIL")
    work = Path(tempfile.mkdtemp(prefix=f"tuning-{tuning_id[:8]}-", dir=_scratch(res)))
    try:
        pictures = _store_pictures(res, study, tuning_id, work)
        best = best_trial(study)
        if best is None:
            counts = _state_counts(study)
            with res.sessions() as session:
                tuning_jobs.finish(
                    session, tuning_id, "failed", pictures=pictures, error=f"no trial completed ({counts})"
                )
                session.commit()
            log.error("tuning job %s failed: no trial completed (%s)", tuning_id, counts)
            return
        job_id = by_number.get(best.number) or str(best.user_attrs.get("job"))
        path = work / "best.pt"
        res.artifacts.download(str(best.user_attrs["checkpoint"]), path)
        res.artifacts.download(
            str(best.user_attrs["checkpoint"]).replace(".pt", ".json"), path.with_suffix(".json")
        )
        decision = _decide(res, policy, path, dataset, params)
        meta = model_versions.read_checkpoint_metadata(path)
        meta["metrics"] = model_versions.finite_json(
            {
                **dict(best.user_attrs.get("figures") or {}),
                "temperature": best.user_attrs.get("temperature"),
                "dataset": dataset.get("uri"),
                "tuning_job": tuning_id,
                "trial": best.number,
                "params": dict(best.params),
                "objective": params["objective"],
                "value": best.value,
            }
        )
        name = str(params.get("model_name") or f"tuning-{tuning_id[:8]}")
        _register_and_finish(res, tuning_id, job_id, path, meta, name, decision, best.number, pictures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scratch(res: Resources) -> Path:
    root = res.settings.resolved_job_work_dir
    root.mkdir(parents=True, exist_ok=True)
    return root


def _state_counts(study: optuna.Study) -> str:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"


def _store_pictures(res: Resources, study: optuna.Study, tuning_id: str, work: Path) -> dict[str, str]:
    try:
        written, skipped = draw(study, work / "pictures")
    except Exception:  # noqa: BLE001 - pictures are for people; the study's result does not depend on them
        log.warning("tuning job %s: could not draw the pictures", tuning_id, exc_info=True)
        return {}
    keys = {}
    for name, path in written.items():
        key = f"{pictures_prefix(tuning_id)}/{name}"
        res.artifacts.put_file(key, path)
        keys[name] = key
    for name, why in skipped.items():
        log.info("tuning job %s: picture %s skipped: %s", tuning_id, name, why)
    return keys


def _decide(
    res: Resources, policy: str, path: Path, dataset: dict[str, Any], params: dict[str, Any]
) -> Decision:
    """The promotion decision for the study's best checkpoint (if_better: both evaluated on the val split)."""
    with res.sessions() as session:
        active = registry.active_version(session)
        active_ref = (active.id, active.artifact_key, active.sha256) if active else None
    if policy != "if_better" or active_ref is None:
        # These branches decide without evaluating anything (worker/promotion.py).
        return decide(
            policy,
            cast(Evaluation, None),
            "the study's validation split",
            active_ref[0] if active_ref else None,
            _unused_evaluation,
        )
    from model.evaluation import evaluate_checkpoint
    from worker.job_data import load_job_data

    data = load_job_data(DatasetSpec.model_validate(dataset), res.settings)
    batch = int(params["config"].get("batch_size", 32))

    def evaluate(p: Path) -> Evaluation:
        return evaluate_checkpoint(
            p, data.source, data.val, device=res.settings.device, batch_size=batch, workers=0, progress=False
        ).evaluation

    def evaluate_active() -> Evaluation:
        active_path = path.parent / "active.pt"
        res.artifacts.download(active_ref[1], active_path)
        return evaluate(active_path)

    return decide(policy, evaluate(path), data.split, active_ref[0], evaluate_active)


def _unused_evaluation() -> Evaluation:
    raise AssertionError("decide() evaluates only under if_better with an active model")


def _register_and_finish(
    res: Resources,
    tuning_id: str,
    job_id: str,
    path: Path,
    meta: dict[str, Any],
    name: str,
    decision: Decision,
    best_number: int,
    pictures: dict[str, str],
) -> None:
    """One transaction: the version (found if it exists), the promotion, the study marked succeeded."""
    for _attempt in range(3):
        with res.sessions() as session:
            try:
                registry.lock_promotions(session)
                tuning = tuning_jobs.lock(session, tuning_id)
                if tuning is None or tuning.status not in tuning_jobs.ACTIVE_STATUSES:
                    session.rollback()
                    log.info(
                        "tuning job %s ended meanwhile (%s): nothing registered",
                        tuning_id,
                        tuning.status if tuning else "deleted",
                    )
                    return
                version = registry.version_for_job(session, job_id)
                if version is None:
                    version, _created = model_versions.register_checkpoint(
                        session, res.artifacts, path, meta, name=name, source="job", training_job_id=job_id
                    )
                    if version.training_job_id is None:
                        version.training_job_id = job_id
                    session.flush()
                mine = session.get(ModelVersion, version.id)
                assert mine is not None
                if decision.promote and not mine.is_active:
                    registry.promote(session, mine, actor=f"tuning job {tuning_id}", reason=decision.reason)
                tuning_jobs.finish(
                    session,
                    tuning_id,
                    "succeeded",
                    model_version_id=version.id,
                    best_trial=best_number,
                    promotion_decision=decision.reason,
                    pictures=pictures,
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                continue
        log.info(
            "tuning job %s succeeded: trial %d registered as version %s; %s",
            tuning_id,
            best_number,
            version.id,
            decision.reason,
        )
        return
    raise RuntimeError(f"tuning job {tuning_id}: could not register its best trial")
