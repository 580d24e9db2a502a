"""Training, resume, checkpoints and prediction on a small real ABID subset."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from model.abid import LocalSource, load_records
from model.checkpoint import CheckpointError, load_model, load_payload, save_checkpoint, sha256_file
from model.config import TrainConfig
from model.evaluation import evaluate_checkpoint
from model.network import PretrainedWeightsError, build_resnet
from model.predictor import Predictor
from model.subsets import stratified_sample
from model.training import TrainHooks, TrainingCancelled, selection_score, train

pytestmark = pytest.mark.slow


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        architecture="resnet18",
        image_size=64,
        epochs=2,
        batch_size=16,
        lr=2e-3,
        num_workers=0,
        calibrate=True,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def subset(abid_root: Path):
    source = LocalSource(abid_root)
    records = load_records(source)
    train = stratified_sample([r for r in records if r.split == "train"], 64, seed=1)
    val = stratified_sample([r for r in records if r.split == "val"], 24, seed=1)
    return source, train, val


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    source, train_recs, val_recs = subset
    out = tmp_path_factory.mktemp("run")
    seen = []
    result = train(
        tiny_config(), source, train_recs, val_recs, out, TrainHooks(on_epoch_end=seen.append), progress=False
    )
    return result, seen, out


def test_training_writes_checkpoints_metrics_and_plots(trained) -> None:
    result, seen, out = trained
    assert [e.epoch for e in seen] == [1, 2]
    assert all(e.train_loss > 0 and e.evaluation.n == 24 for e in seen)
    for name in (
        "best.pt",
        "best.json",
        "last.pt",
        "last.json",
        "confusion_matrix.png",
        "training_curves.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    side = json.loads((out / "best.json").read_text())
    assert side["sha256"] == sha256_file(out / "best.pt")
    assert side["architecture"] == "resnet18" and side["labels"] == ["0", "1", "2", "3", "4", "5", "6+"]
    assert side["preprocessing"]["image_size"] == 64
    assert side["metrics"]["n"] == 24 and "0-5" in side["metrics"]["subsets"]
    # the temperature is fitted on bins held out of the train split, never on validation
    assert side["data"]["calibration"]["n"] >= 1
    assert side["data"]["train"]["n"] + side["data"]["calibration"]["n"] == 64 and side["code_version"]
    assert 0.05 < side["temperature"] < 20
    assert len(result.history) == 2


def test_resume_continues_and_matches_uninterrupted_run(subset, trained, tmp_path: Path) -> None:
    source, train_recs, val_recs = subset
    _result, _seen, full_out = trained
    done = []

    hooks = TrainHooks(on_epoch_end=done.append, should_stop=lambda: bool(done))
    with pytest.raises(TrainingCancelled):
        train(tiny_config(), source, train_recs, val_recs, tmp_path, hooks, progress=False)
    assert [e.epoch for e in done] == [1]
    assert json.loads((tmp_path / "last.json").read_text())["epoch"] == 1

    again = []
    result = train(
        tiny_config(),
        source,
        train_recs,
        val_recs,
        tmp_path,
        TrainHooks(on_epoch_end=again.append),
        progress=False,
    )
    assert result.resumed_from_epoch == 1
    assert [e.epoch for e in again] == [2]
    assert [h["epoch"] for h in result.history] == [1, 2]
    resumed = load_payload(tmp_path / "last.pt")["state_dict"]
    straight = load_payload(full_out / "last.pt")["state_dict"]
    for key, value in straight.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-5), key


def test_resume_refuses_a_different_recipe(subset, trained, tmp_path: Path) -> None:
    source, train_recs, val_recs = subset
    _r, _s, out = trained
    target = tmp_path / "run"
    target.mkdir()
    (target / "last.pt").write_bytes((out / "last.pt").read_bytes())
    (target / "last.json").write_bytes((out / "last.json").read_bytes())
    with pytest.raises(CheckpointError, match="different training configuration.*lr"):
        train(tiny_config(lr=1e-2), source, train_recs, val_recs, target, progress=False)


def test_cancel_mid_epoch_is_prompt(subset, tmp_path: Path) -> None:
    source, train_recs, val_recs = subset
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(TrainingCancelled, match="during epoch 1"):
        train(
            tiny_config(),
            source,
            train_recs,
            val_recs,
            tmp_path,
            TrainHooks(should_stop=stop, stop_check_every=1),
            progress=False,
        )
    assert not (tmp_path / "last.pt").exists()


def test_tampered_or_corrupt_checkpoints_are_rejected(trained, tmp_path: Path) -> None:
    _r, _s, out = trained
    best = tmp_path / "best.pt"
    best.write_bytes((out / "best.pt").read_bytes())
    (tmp_path / "best.json").write_bytes((out / "best.json").read_bytes())
    load_model(best)  # intact: fine

    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_model(best)

    # without the sidecar the hash check cannot run, but a damaged zip still fails to load cleanly
    (tmp_path / "best.json").unlink()
    best.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_model(best)

    # the registry's expected hash wins over a replaced sidecar
    best.write_bytes((out / "best.pt").read_bytes())
    with pytest.raises(CheckpointError, match="modified"):
        load_model(best, expected_sha256="0" * 64)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"format": "binwatch-checkpoint/1", "metadata": {}, "state_dict": {}, "x": Evil()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_model(path)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a binwatch checkpoint"):
        load_model(plain)


def test_weights_that_do_not_fit_metadata_are_rejected(trained, tmp_path: Path) -> None:
    _r, _s, out = trained
    payload = load_payload(out / "best.pt")
    meta = dict(payload["metadata"], architecture="resnet34")
    save_checkpoint(tmp_path / "x.pt", payload["state_dict"], meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "x.pt")


def test_predictor_counts_full_size_originals(trained, abid_root: Path) -> None:
    _r, _s, out = trained
    predictor = Predictor(out / "best.pt", device="cpu")
    paths = sorted((abid_root / "originals").glob("*.jpg"))[:5]
    from PIL import Image

    inputs = [paths[0], paths[1].read_bytes(), Image.open(paths[2]), str(paths[3]), paths[4]]
    preds = predictor.predict(inputs)
    assert len(preds) == 5
    for p in preds:
        assert p.label in predictor.labels
        assert abs(sum(p.probabilities.values()) - 1) < 1e-4
        assert p.confidence == max(p.probabilities.values())
        assert p.count == (6 if p.label == "6+" else int(p.label))
    # batching does not change the answer
    single = predictor.predict([paths[0]])[0]
    assert single.label == preds[0].label and abs(single.confidence - preds[0].confidence) < 1e-4


def test_evaluate_checkpoint_matches_training_metrics(trained, subset) -> None:
    source, _train, val = subset
    _r, _s, out = trained
    result = evaluate_checkpoint(out / "best.pt", source, val, device="cpu", workers=0, progress=False)
    side = json.loads((out / "best.json").read_text())
    assert result.evaluation.n == side["metrics"]["n"]
    assert result.evaluation.accuracy == pytest.approx(side["metrics"]["accuracy"])
    assert result.evaluation.confusion == side["metrics"]["confusion"]


def test_pretrained_weights_only_from_a_local_file(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="never downloads"):
        build_resnet("resnet18", 7, tmp_path / "missing.pth")
    donor = build_resnet("resnet18", 1000)
    weights = {k.replace("fc.1.", "fc."): v for k, v in donor.state_dict().items()}
    torch.save(weights, tmp_path / "r18.pth")
    net = build_resnet("resnet18", 7, tmp_path / "r18.pth")
    assert torch.equal(net.conv1.weight, donor.conv1.weight)
    with pytest.raises(PretrainedWeightsError, match="does not hold resnet34"):
        build_resnet("resnet34", 7, tmp_path / "r18.pth")


@pytest.mark.parametrize("batches,epochs", [(1, 1), (2, 1), (1, 3), (3, 3)])
def test_one_cycle_schedule_survives_tiny_runs(batches: int, epochs: int) -> None:
    from model.optimization import build_optimizer as _optimizer
    from model.optimization import build_schedule as _schedule

    net = build_resnet("resnet18", 3)
    cfg = tiny_config(epochs=epochs, schedule="onecycle")
    opt = _optimizer(net, cfg)
    peaks = [g["lr"] for g in opt.param_groups]  # the configured peak, before the schedule rescales it
    sched = _schedule(opt, cfg, batches)
    seen = [[g["lr"] for g in opt.param_groups]]
    for _ in range(batches * epochs):
        opt.step()
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    for step in seen:
        for lr, peak in zip(step, peaks, strict=True):
            # Finite, never negative, never above the configured peak (a division by zero gave NaN here).
            assert math.isfinite(lr) and 0 <= lr <= peak * (1 + 1e-9), (seen, peaks)
    # The schedule steps after the optimizer, so seen[i] is the rate batch i trained with: the run reaches
    # its peak and, given three batches or more, anneals well below it by the last one.
    used = seen[:-1]
    for group, peak in enumerate(peaks):
        assert max(u[group] for u in used) >= 0.9 * peak, seen
        if len(used) >= 3:
            assert used[-1][group] <= 0.3 * peak, seen


def test_optimizer_state_of_the_previous_layout_resumes() -> None:
    """Runs started before backbone_lr_scale existed saved two parameter groups (decay, no decay); with the
    default scale the optimizer keeps that layout, so their last.pt still resumes."""
    from model.optimization import build_optimizer

    net = build_resnet("resnet18", 7)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    old = torch.optim.AdamW(groups)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    old.step()
    new = build_optimizer(net, tiny_config())
    new.load_state_dict(old.state_dict())
    assert len(new.param_groups) == 2
    assert new.state[decay[0]]["step"] == 1


def test_a_crash_between_checkpoint_and_sidecar_says_so(tmp_path: Path) -> None:
    net = build_resnet("resnet18", 3)
    meta = {"architecture": "resnet18", "epoch": 1}
    path = tmp_path / "last.pt"
    save_checkpoint(path, net.state_dict(), meta)
    old_sidecar = (tmp_path / "last.json").read_bytes()
    save_checkpoint(path, net.state_dict(), {**meta, "epoch": 2})
    # The process died after writing the epoch-2 checkpoint, before its sidecar: the epoch-1 sidecar stays.
    (tmp_path / "last.json").write_bytes(old_sidecar)
    with pytest.raises(
        CheckpointError, match="newer than its sidecar last.json: the process that wrote them stopped"
    ):
        load_payload(path)
    # Deleting the stale sidecar, as the message says, loads the whole checkpoint.
    (tmp_path / "last.json").unlink()
    assert load_payload(path)["metadata"]["epoch"] == 2
    # A checkpoint changed behind its sidecar's back (same metadata, other bytes) is still "modified".
    save_checkpoint(path, net.state_dict(), meta)
    sidecar = (tmp_path / "last.json").read_bytes()
    torch.save({"format": "binwatch-checkpoint/1", "metadata": meta, "state_dict": {}}, path)
    (tmp_path / "last.json").write_bytes(sidecar)
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_payload(path)
    # And the registry's hash is never explained away by a local sidecar.
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_payload(path, expected_sha256="0" * 64)


def test_ema_early_stopping_and_channels_last_survive_a_resume(subset, tmp_path: Path) -> None:
    """What gpu-full uses besides AMP (CUDA only, ignored on this CPU): EMA weights, early stopping and
    channels-last, for a few steps, interrupted after epoch 1 and resumed, against one unbroken run."""
    source, train_recs, val_recs = subset
    cfg = tiny_config(
        epochs=4, ema_decay=0.9, early_stopping_patience=1, channels_last=True, max_train_batches=2
    )
    straight_out, resumed_out = tmp_path / "straight", tmp_path / "resumed"
    straight_epochs: list = []
    straight = train(
        cfg,
        source,
        train_recs,
        val_recs,
        straight_out,
        TrainHooks(on_epoch_end=straight_epochs.append),
        progress=False,
    )
    done: list = []
    with pytest.raises(TrainingCancelled):
        train(
            cfg,
            source,
            train_recs,
            val_recs,
            resumed_out,
            TrainHooks(on_epoch_end=done.append, should_stop=lambda: bool(done)),
            progress=False,
        )
    resumed = train(cfg, source, train_recs, val_recs, resumed_out, progress=False)
    assert resumed.resumed_from_epoch == 1
    # Early stopping decides the same way after the resume (its counter is part of the saved state).
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in straight.history]
    a, b = load_payload(straight_out / "last.pt"), load_payload(resumed_out / "last.pt")
    assert a["stale_epochs"] == b["stale_epochs"]
    # The EMA state is saved and restored: after the resume it equals the unbroken run's.
    assert int(a["ema"]["n_averaged"]) == int(b["ema"]["n_averaged"]) == 2 * len(straight.history)
    for key, value in a["ema"].items():
        assert torch.allclose(value.float(), b["ema"][key].float(), atol=1e-5), key


def test_the_most_accurate_epoch_is_best_whatever_its_loss() -> None:
    # A diverging run: the loss is in the millions, and must not outweigh one more correct bin in 16.
    assert selection_score(0.375, 288_652.0, 16) > selection_score(0.0, 4_879.8, 16)
    assert selection_score(6 / 89, 1e12, 89) > selection_score(5 / 89, 0.0, 89)
    # Equal accuracy: the lower loss wins.
    assert selection_score(0.5, 0.7, 16) > selection_score(0.5, 0.9, 16) > selection_score(0.5, 1e9, 16)
    assert math.isnan(selection_score(1.0, math.nan, 16)) and math.isnan(selection_score(1.0, math.inf, 16))
