"""Image decoding and preprocessing shared by training and serving, so both see the same pixels."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageInput = bytes | bytearray | str | Path | Image.Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Never let PIL silently fill in a truncated file with grey: a half image gives a wrong count.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    """The input is not an image binwatch can read (corrupt, truncated, not an image, too many pixels)."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a tensor. Stored in every checkpoint so serving repeats training exactly."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # "squash" resizes to a square ignoring aspect ratio, as the ABID challenge baseline does;
    # "pad" keeps the aspect ratio and pads with the mean colour.
    resize: str = "squash"
    max_pixels: int = field(default=50_000_000, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocessing:
        return cls(
            image_size=int(data["image_size"]),  # type: ignore[arg-type]
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            resize=str(data.get("resize", "squash")),
        )


def open_image(source: ImageInput, max_pixels: int = 50_000_000) -> Image.Image:
    """Open an image without decoding its pixels yet, checking its size against ``max_pixels``."""
    if isinstance(source, Image.Image):
        return source
    try:
        if isinstance(source, (bytes, bytearray)):
            if len(source) == 0:
                raise ImageDecodeError("the file is empty")
            img = Image.open(io.BytesIO(bytes(source)))
        else:
            img = Image.open(Path(source))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format (send a JPEG or PNG photo)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image has too many pixels ({exc})") from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        # e.g. a JPEG cut off inside its header: Pillow fails while reading it, before any pixel.
        raise ImageDecodeError(f"image data is corrupt or truncated ({exc})") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}"
        )
    return img


def load_rgb(source: ImageInput, size: int, max_pixels: int = 50_000_000) -> Image.Image:
    """Decode to an upright RGB image, cheaply reduced towards ``size`` while decoding.

    JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, which makes full-size photos several times
    faster to read than decoding every pixel and then throwing most away.
    """
    img = open_image(source, max_pixels)
    try:
        if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # Ask for at least 2x the target so the final resize still antialiases.
            img.draft("RGB" if img.mode != "L" else "L", (size * 2, size * 2))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency on white rather than letting it turn black.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba).convert("RGB")
        elif img.mode != "RGB":
            img = img.convert("RGB")
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated ({exc})") from exc
    if min(img.size) < 1:
        raise ImageDecodeError("image has no pixels")
    return img


def resize_square(img: Image.Image, pre: Preprocessing) -> Image.Image:
    size = pre.image_size
    if pre.resize == "squash":
        return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if pre.resize == "pad":
        fill = tuple(int(round(m * 255)) for m in pre.mean)
        return ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=fill)
    raise ValueError(f"unknown resize mode {pre.resize!r} (use 'squash' or 'pad')")


def normalise(img: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """PIL RGB image -> float tensor CxHxW, normalised with the checkpoint's mean and std."""
    # A lookup of every uint8 value's normalised float, computed with the float32 operations and order of
    # (x / 255 - mean) / std, so the result is bit-identical to doing that arithmetic per pixel; it is 2x
    # faster, and it runs in numpy: torch ops here would start torch's intra-op (OpenMP) threads from every
    # decoding thread, oversubscribing the cores the forward pass runs on (15% of a loaded server's
    # samples were this function when it used torch).
    table = _normalise_table(pre.mean, pre.std)
    arr = np.asarray(img, dtype=np.uint8)
    out = np.empty((3, *arr.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], arr[:, :, channel], out=out[channel])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _normalise_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    table = np.arange(256, dtype=np.float32)[None, :].repeat(3, axis=0)
    table /= np.float32(255.0)
    table -= np.asarray(mean, dtype=np.float32)[:, None]
    table /= np.asarray(std, dtype=np.float32)[:, None]
    table.flags.writeable = False
    return table


def preprocess(source: ImageInput, pre: Preprocessing) -> torch.Tensor:
    """The serving path: any supported input -> normalised tensor the model expects."""
    img = load_rgb(source, pre.image_size, pre.max_pixels)
    return normalise(resize_square(img, pre), pre)
