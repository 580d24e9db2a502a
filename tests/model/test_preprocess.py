"""Preprocessing on real ABID photos and on awkward inputs."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.preprocess import ImageDecodeError, Preprocessing, load_rgb, normalise, preprocess, resize_square


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_full_size_original_becomes_normalised_square(abid_root: Path) -> None:
    path = next((abid_root / "originals").glob("*.jpg"))
    pre = Preprocessing(image_size=224)
    x = preprocess(path, pre)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert -3 < float(x.mean()) < 3
    # same pixels whether the photo arrives as a path or as bytes
    assert torch.allclose(x, preprocess(path.read_bytes(), pre))


def test_normalise_is_the_per_pixel_arithmetic_bit_for_bit(abid_root: Path) -> None:
    # The lookup table must give exactly (x / 255 - mean) / std in float32, per channel, for every pixel.
    pre = Preprocessing(image_size=96, mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.7))
    photo = np.asarray(resize_square(load_rgb(next((abid_root / "originals").glob("*.jpg")), 96), pre))
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ramps = np.stack([every_value, every_value.T, 255 - every_value], axis=2)  # channels differ
    for pixels in (photo, ramps):
        expected = (
            torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
            - torch.tensor(pre.mean).view(3, 1, 1)
        ) / torch.tensor(pre.std).view(3, 1, 1)
        got = normalise(Image.fromarray(pixels), pre)
        assert got.shape == expected.shape and got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, expected)


def test_draft_mode_decodes_reduced(abid_root: Path) -> None:
    path = max((abid_root / "originals").glob("*.jpg"), key=lambda p: p.stat().st_size)
    full = Image.open(path).size
    assert min(full) >= 4 * 128, f"{path.name} ({full}) is too small to show draft mode"
    img = load_rgb(path, 64)
    assert img.mode == "RGB"
    # Decoded at a fraction of full size (1/2, 1/4 or 1/8: libjpeg's DCT scaling), never below 2x target:
    # without the draft() call the image comes back at its full size and this fails.
    assert img.size[0] <= full[0] // 2 and img.size[1] <= full[1] // 2, (img.size, full)
    assert min(img.size) >= 128


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = jpeg_bytes(img, exif=exif.tobytes())
    assert load_rgb(data, 16).size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    img = Image.new("RGB", (32, 32), (10, 200, 30)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG" if mode not in ("CMYK",) else "JPEG")
    out = load_rgb(buf.getvalue(), 16)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_transparent_pixels_composite_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    arr = np.asarray(load_rgb(buf.getvalue(), 8))
    assert (arr == 255).all()


def test_bad_inputs_raise_clear_errors(abid_root: Path) -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        load_rgb(b"", 32)
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        load_rgb(b"hello, this is text", 32)
    good = next((abid_root / "bin-images").glob("*.jpg")).read_bytes()
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_rgb(good[: len(good) // 2], 32)
    big = Image.new("L", (5000, 5000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        load_rgb(buf.getvalue(), 32, max_pixels=10_000_000)


def test_pad_resize_keeps_aspect() -> None:
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    x = preprocess(jpeg_bytes(img), Preprocessing(image_size=32, resize="pad"))
    # padded rows at the top are the mean colour -> normalise to ~0
    assert x[:, 0, :].abs().max() < 0.05


def test_jpeg_cut_inside_its_header_is_a_decode_error(abid_root: Path) -> None:
    good = next((abid_root / "bin-images").glob("*.jpg")).read_bytes()
    for cut in (4, 20, 100, 300):
        with pytest.raises(ImageDecodeError):
            load_rgb(good[:cut], 32)
