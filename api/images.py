"""Uploaded images: read, classify (image or not), size-check, and turn into model input.

The rules, in order (docs/api.md repeats them):

1. An empty file is 422.
2. The bytes decide what a file is, not its name or declared type: a JPEG sent as ``text/plain`` is
   accepted. Readable formats are JPEG (incl. MPO), PNG, WebP, GIF, BMP and TIFF; the others Pillow
   knows (EPS, which runs Ghostscript, among them) are never opened.
3. Bytes that are not a readable image: 415 when the declared type is clearly something else
   (``text/plain``, ``application/pdf``, ...) and the file name has no image extension; otherwise 422
   (a file that claims to be an image but is corrupt or not one).
4. Width x height above ``max_image_pixels`` is 422, decided from the header before any pixel is
   decoded (decompression bombs); smaller than ``min_image_side`` on either side is 422. A file in a
   format that cannot be decoded at a reduced size (all but JPEG) of more than ``DENSE_CHECK_PIXELS`` with
   more than ``max_pixels_per_byte`` pixels per byte is 422 too: 47 KB of PNG zeros can hold 49 Mpx and
   cost seconds of decoding, while a photo holds at most a few pixels per byte.
5. Truncated or corrupt pixel data is 422.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import torch
from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from api.problems import INVALID_IMAGE, Problem
from model.predictor import Predictor
from model.preprocess import ImageDecodeError
from settings import Settings

log = logging.getLogger("binwatch.api.images")

# Names Pillow opens by. MPO (multi-picture JPEG from some cameras) is not among them: the JPEG opener
# returns MPO files itself, and naming "MPO" here makes Image.open raise KeyError.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo")
# Declared types that say "this may be an image": an unreadable file with one of them is a broken image.
IMAGE_LIKE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
EXTENSION_OF_FORMAT = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}
CONTENT_TYPE_OF_FORMAT = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


# JPEG is decoded at a reduced size (Pillow's draft mode) when the photo is larger than the model's input;
# every other format is decoded whole, so its cost follows its pixels, not its bytes.
REDUCED_DECODING = ("JPEG", "MPO")
DENSE_CHECK_PIXELS = 1_000_000

CONTENT_TYPE_OF_EXTENSION = {EXTENSION_OF_FORMAT[f]: t for f, t in CONTENT_TYPE_OF_FORMAT.items()}


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSION_OF_FORMAT.get(self.format, "img")

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE_OF_FORMAT.get(self.format, "application/octet-stream")


async def read_upload(file: UploadFile) -> Upload:
    """The file's bytes. Its size is already bounded by the body limit middleware."""
    data = await file.read()
    return Upload(
        filename=file.filename or "upload",
        content_type=(file.content_type or "").split(";")[0].strip().lower(),
        data=data,
    )


def _label(upload: Upload, index: int | None) -> str:
    return f"image {index} ({upload.filename!r})" if index is not None else f"image {upload.filename!r}"


def _claims_image(upload: Upload) -> bool:
    if not upload.content_type or upload.content_type.startswith(IMAGE_LIKE_TYPES):
        return True
    return upload.filename.lower().endswith(IMAGE_EXTENSIONS)


def inspect(upload: Upload, settings: Settings, index: int | None = None) -> ImageInfo:
    """Identify the image from its header alone; raises Problem 415/422 (rules 1-4)."""
    what = _label(upload, index)
    if not upload.data:
        raise Problem(422, f"{what}: the file is empty", type=INVALID_IMAGE, title="Invalid image")
    try:
        with warnings.catch_warnings():
            # Pillow warns between its own limit and twice that; our limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data), formats=ACCEPTED_FORMATS) as img:
                info = ImageInfo(str(img.format), *img.size)
    except Image.DecompressionBombError as exc:
        raise Problem(
            422, f"{what}: image has too many pixels ({exc})", type=INVALID_IMAGE, title="Invalid image"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a header parser failing on client bytes is the client's input
        # OSError & co: a header that starts like a known format and then breaks off (truncated).
        if isinstance(exc, UnidentifiedImageError) and not _claims_image(upload):
            raise Problem(
                415,
                f"{what} has content type {upload.content_type or 'unknown'} and is not an image; "
                f"send a photo ({', '.join(ACCEPTED_FORMATS)})",
            ) from exc
        detail = (
            "not a readable image (send JPEG or PNG)"
            if isinstance(exc, UnidentifiedImageError)
            else f"image data is corrupt or truncated ({exc})"
        )
        raise Problem(422, f"{what}: {detail}", type=INVALID_IMAGE, title="Invalid image") from exc
    pixels = info.width * info.height
    if pixels > settings.max_image_pixels:
        raise Problem(
            422,
            f"{what} is {info.width}x{info.height} = {pixels} pixels, more than the limit of "
            f"{settings.max_image_pixels} (BINWATCH_MAX_IMAGE_PIXELS)",
            type=INVALID_IMAGE,
            title="Invalid image",
        )
    dense = pixels / len(upload.data)
    if (
        info.format not in REDUCED_DECODING
        and pixels > DENSE_CHECK_PIXELS
        and dense > settings.max_pixels_per_byte
    ):
        raise Problem(
            422,
            f"{what} is a {info.format} of {info.width}x{info.height} = {pixels} pixels in only "
            f"{len(upload.data)} bytes ({dense:.0f} pixels a byte, more than "
            f"{settings.max_pixels_per_byte:g}, BINWATCH_MAX_PIXELS_PER_BYTE): not a photo, and it would "
            "cost seconds to decode; send the photo as a JPEG, or at its real size",
            type=INVALID_IMAGE,
            title="Invalid image",
        )
    if min(info.width, info.height) < settings.min_image_side:
        raise Problem(
            422,
            f"{what} is {info.width}x{info.height} pixels; at least {settings.min_image_side} pixels on each "
            "side are needed to count anything (BINWATCH_MIN_IMAGE_SIDE)",
            type=INVALID_IMAGE,
            title="Invalid image",
        )
    return info


def to_tensor(upload: Upload, predictor: Predictor, index: int | None = None) -> torch.Tensor:
    """Decode with the model's own preprocessing (rule 5); raises Problem 422."""
    what = _label(upload, index)
    try:
        return predictor.preprocess(upload.data)
    except ImageDecodeError as exc:
        raise Problem(422, f"{what}: {exc}", type=INVALID_IMAGE, title="Invalid image") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure on client bytes is the client's input
        log.info("decoder raised %s for %s", type(exc).__name__, what)
        raise Problem(
            422,
            f"{what}: image data is corrupt or truncated ({type(exc).__name__}: {exc})",
            type=INVALID_IMAGE,
            title="Invalid image",
        ) from exc


def prepare(
    uploads: list[Upload], predictor: Predictor, settings: Settings
) -> tuple[list[torch.Tensor], list[ImageInfo]]:
    """Inspect and decode every upload (run in a worker thread: decoding is CPU-bound)."""
    numbered = len(uploads) > 1
    infos = [inspect(u, settings, i if numbered else None) for i, u in enumerate(uploads)]
    tensors = [to_tensor(u, predictor, i if numbered else None) for i, u in enumerate(uploads)]
    return tensors, infos
