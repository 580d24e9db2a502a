"""The default model that ships with binwatch (model/bundle.py): pinned, verified, compact, and it counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model.bundle import (
    BUNDLED_CHECKPOINT,
    BUNDLED_SHA256,
    BundledModelError,
    bundled_metadata,
    export,
    materialise,
)
from model.checkpoint import load_payload, sha256_file
from model.predictor import Predictor
from tests.api.support import tiny_checkpoint


def test_the_shipped_file_is_the_pinned_one() -> None:
    assert BUNDLED_CHECKPOINT.is_file(), "model/bundled/counter.pt is part of the package"
    assert sha256_file(BUNDLED_CHECKPOINT) == BUNDLED_SHA256
    # fp16 on disk: about 2 bytes a parameter, half a normal checkpoint.
    payload = load_payload_of_bundle()
    floats = [v for v in payload["state_dict"].values() if v.is_floating_point()]
    assert floats and all(str(v.dtype) == "torch.float16" for v in floats)
    params = sum(v.numel() for v in floats)
    assert BUNDLED_CHECKPOINT.stat().st_size < 2.2 * params + 2_000_000


def test_the_bundled_model_carries_its_verdict_operating_points() -> None:
    """Measured on ../shared/abid's val split (docs/verdicts.md); a fresh install judges checks with them."""
    points = bundled_metadata()["operating_points"]
    assert points["measured_on"] == "the val split of ../shared/abid, 1722 bins"
    assert points["correct_records"] == 1182 and points["off_by_one_records"] == 2343
    ratio = points["scores"]["neighbour_ratio"]
    assert ratio["mismatch"]["5%"]["false_alarm"] <= 0.05 and ratio["mismatch"]["2%"]["false_alarm"] <= 0.02
    assert ratio["mismatch"]["2%"]["threshold"] < ratio["mismatch"]["5%"]["threshold"] < ratio["match"]
    assert ratio["auroc"] > points["scores"]["probability"]["auroc"]
    assert bundled_metadata()["bundled_from"]["file"] == "best.pt"


def load_payload_of_bundle() -> dict:
    import torch

    return torch.load(BUNDLED_CHECKPOINT, map_location="cpu", weights_only=True)


def test_the_bundled_model_counts_full_size_photos(tmp_path: Path, abid_root: Path) -> None:
    checkpoint = materialise(tmp_path)
    assert (tmp_path / "best.json").is_file()
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "training_curves.png").is_file()
    payload = load_payload(checkpoint)  # a normal checkpoint: sidecar sha256 verified
    assert all(str(v.dtype) != "torch.float16" for v in payload["state_dict"].values())
    meta = bundled_metadata()
    assert payload["metadata"]["bundled"] is True
    assert payload["metadata"]["architecture"] == meta["architecture"]
    predictor = Predictor(checkpoint)
    photos = sorted((abid_root / "originals").glob("*.jpg"))[:8]
    predictions = predictor.predict(photos)
    assert len(predictions) == 8
    for p in predictions:
        assert abs(sum(p.probabilities.values()) - 1) < 1e-4
    assert len({p.label for p in predictions}) > 1, "a real counter does not give every bin the same count"


def test_a_modified_or_missing_bundle_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "counter.pt"
    shutil.copyfile(BUNDLED_CHECKPOINT, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(BundledModelError, match="modified or replaced"):
        materialise(tmp_path / "out", path=copy)
    with pytest.raises(BundledModelError, match="missing; reinstall binwatch"):
        materialise(tmp_path / "out", path=tmp_path / "nothing.pt")
    assert not (tmp_path / "out" / "best.pt").exists()


@pytest.mark.slow
def test_export_then_materialise_keeps_the_counts(tmp_path: Path, abid_root: Path) -> None:
    source = tiny_checkpoint(tmp_path / "ckpt", seed=5)
    bundle = tmp_path / "bundle" / "counter.pt"
    digest = export(source, bundle)
    assert digest == sha256_file(bundle)
    assert bundle.stat().st_size < 0.6 * source.stat().st_size
    with pytest.raises(BundledModelError):  # the pinned hash is the shipped model's, not this one's
        materialise(tmp_path / "m0", path=bundle)
    restored = materialise(tmp_path / "m1", path=bundle, expected_sha256=digest)
    photos = sorted((abid_root / "originals").glob("*.jpg"))[:20]
    before, after = Predictor(source).predict(photos), Predictor(restored).predict(photos)
    assert [p.label for p in before] == [p.label for p in after]
    worst = max(
        abs(a.probabilities[k] - b.probabilities[k])
        for a, b in zip(before, after, strict=True)
        for k in a.probabilities
    )
    assert worst < 5e-3
