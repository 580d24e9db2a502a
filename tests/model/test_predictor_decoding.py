"""Predictor(decode_threads=N): a batch's photos decoded on N threads give exactly the serial result, in
order, and a bad photo in the batch fails the call the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.bundle import materialise
from model.predictor import Predictor
from model.preprocess import ImageDecodeError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialise(tmp_path_factory.mktemp("bundled"))


def test_parallel_decoding_gives_the_serial_predictions_in_order(checkpoint: Path, abid_root: Path) -> None:
    photos = sorted((abid_root / "originals").glob("*.jpg"))[:12]
    photos += sorted((abid_root / "bin-images").glob("*.jpg"))[:12]
    blobs = [p.read_bytes() for p in photos]
    serial = Predictor(checkpoint, device="cpu").predict(blobs)
    parallel = Predictor(checkpoint, device="cpu", decode_threads=3).predict(blobs)
    assert [p.to_dict() for p in parallel] == [p.to_dict() for p in serial]
    assert len({p.label for p in serial}) > 1, "different photos, different counts"


def test_a_bad_photo_fails_a_parallel_batch_like_a_serial_one(checkpoint: Path, abid_root: Path) -> None:
    good = sorted((abid_root / "bin-images").glob("*.jpg"))[0].read_bytes()
    predictor = Predictor(checkpoint, device="cpu", decode_threads=2)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        predictor.predict([good, good[: len(good) // 3], good])
    with pytest.raises(ValueError, match="decode_threads must be at least 1"):
        Predictor(checkpoint, device="cpu", decode_threads=0)
