"""Image checks at upload time and thumbnail making in the task, with Pillow.

``inspect_image`` reads only what it must (header, chunk checksums) so the upload answers
at once; the full decode happens in the thumbnail task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from app.storage import save_bytes

THUMBNAIL_SIZES = (150, 300, 600)
DEFAULT_THUMBNAIL_SIZE = 300
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
JPEG_QUALITY = 85
HASH_CHUNK_BYTES = 1024 * 1024
REDUCING_GAP = 3  # cut down cheaply to 3x the largest thumbnail, then resample with LANCZOS


class ImageRejected(ValueError):
    """The upload is not an image the app accepts; the message says why, for the client."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def inspect_image(source: BinaryIO, max_pixels: int) -> ImageInfo:
    """Identify the image in ``source``; ``ImageRejected`` if it is not one, is damaged, or is a bomb."""
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow itself refuses anything past twice this
    source.seek(0)
    try:
        with Image.open(source) as image:
            info = ImageInfo(image.format or "", image.width, image.height)
            _refuse_bomb(info, max_pixels)
            if info.format not in ACCEPTED_FORMATS:
                raise ImageRejected(f"{info.format} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}")
            image.verify()  # walks the chunks and their checksums (PNG), without decoding pixels
        if info.format == "JPEG":
            _decode_reduced(source)
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected(
            f"the image has too many pixels (over {max_pixels}): refused as a decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("the file is not an image (Pillow cannot identify its format)") from None
    except Exception as exc:  # Pillow raises a zoo of types (OSError, SyntaxError, struct.error...) on bad data
        raise ImageRejected(f"the image is damaged or truncated ({type(exc).__name__}: {exc})") from None
    finally:
        source.seek(0)
    return info


def _refuse_bomb(info: ImageInfo, max_pixels: int) -> None:
    if info.width * info.height > max_pixels:
        raise ImageRejected(
            f"the image is {info.width}x{info.height} pixels, over the {max_pixels}-pixel limit "
            "(APP_MAX_IMAGE_PIXELS): refused as a decompression bomb"
        )


def _decode_reduced(source: BinaryIO) -> None:
    """Decode a JPEG at 1/8 scale: cheap, and it fails on a stream that is not really JPEG data."""
    source.seek(0)
    with Image.open(source) as image:
        image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
        image.load()


def make_thumbnails(original: Path, destination_for: dict[int, Path], max_pixels: int) -> dict[int, tuple[int, int]]:
    """Write a JPEG per size (max side in px, never upscaled) to ``destination_for[size]``; return their sizes.

    Memory: a JPEG is decoded at a reduced scale (libjpeg's draft mode); any other image is
    decoded once and shrunk in place to the largest size before anything is copied or
    converted, so the peak is about one decoded original (at most ``max_pixels`` pixels).
    """
    Image.MAX_IMAGE_PIXELS = max_pixels  # the same limit the upload was checked against
    written: dict[int, tuple[int, int]] = {}
    largest = max(destination_for)
    with Image.open(original) as image:
        _refuse_bomb(ImageInfo(image.format or "", image.width, image.height), max_pixels)
        if image.format == "JPEG":
            image.draft("RGB", (largest, largest))  # let libjpeg scale down while decoding
        reduced = _reduced(image, largest)
        reduced.thumbnail((largest, largest), Image.Resampling.LANCZOS)
        reduced.info.setdefault("exif", image.info.get("exif", b""))
        current = _flatten_to_rgb(ImageOps.exif_transpose(reduced))
    for size in sorted(destination_for, reverse=True):
        if max(current.size) > size:
            current = current.copy()
            current.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        current.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
        save_bytes(buffer.getvalue(), destination_for[size])
        written[size] = current.size
    return written


def _reduced(image: Image.Image, largest: int) -> Image.Image:
    """The decoded image cut down by a whole factor to about ``REDUCING_GAP`` x ``largest`` px, cheaply.

    ``reduce`` averages blocks without a full-size copy, but for images with alpha Pillow first
    premultiplies into one (as ``resize`` does): those, and palette and 1-bit images (which Pillow
    only resizes with NEAREST), are sampled down instead, 3x oversampled for the final LANCZOS pass,
    before they are widened to a mode that pass can filter.
    """
    factor = max(image.width, image.height) // (largest * REDUCING_GAP)
    widened = {"1": "L", "P": "RGBA" if "transparency" in image.info else "RGB"}.get(image.mode)
    if factor >= 2:
        if widened is not None or image.mode in ("RGBA", "LA", "PA"):
            size = (max(1, image.width // factor), max(1, image.height // factor))
            image = image.resize(size, Image.Resampling.NEAREST)
        else:
            image = image.reduce(factor)
    return image.convert(widened) if widened is not None else image


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: put transparent images on white instead of black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float scans: stretch into 8 bits
        image = ImageOps.autocontrast(image.convert("L"))
    return image.convert("RGB")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
