"""Image decoding with one deterministic normalisation to 8-bit RGB.

Every stage that reads pixels goes through :func:`to_rgb`, so ingest validates
exactly what training and embedding will later see: EXIF orientation applied,
transparency composited over white, CMYK and 16-bit grey converted to RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dlpipe.data.media import Rejected

_EXIF_ORIENTATION = 0x0112
_BACKGROUND = (255, 255, 255)
# Pillow's own decompression-bomb guard fires before ours can look at the size.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError)


@dataclass(frozen=True, slots=True)  # slots: ingest holds one per accepted file
class ImageInfo:
    """What ingest records about an accepted image (size after orientation)."""

    width: int
    height: int
    format: str
    mode: str
    conversion: str


def inspect_image(data: bytes, min_side: int, max_pixels: int) -> ImageInfo:
    """Decode an encoded image fully and validate it.

    Args:
        data: the file's bytes.
        min_side: reject when the shorter side (after orientation) is below this.
        max_pixels: reject when width × height exceeds this (checked before decoding pixels).

    Raises:
        Rejected: ``empty_file``, ``not_an_image``, ``too_many_pixels``, ``truncated_or_corrupt``, ``too_small``.
    """
    original = _open_fully(data, max_pixels)
    image, conversion = _normalise(original)
    if min(image.size) < min_side:
        raise Rejected("too_small", f"{image.width}x{image.height} px, shorter side below ingest.image.min_side={min_side}")
    return ImageInfo(image.width, image.height, original.format or "", original.mode, conversion)


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as viewers show it (EXIF orientation applied), from its header only.

    Raises:
        Rejected: ``not_an_image`` or ``truncated_or_corrupt`` when the header cannot be read.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "Pillow cannot identify an image format in this file") from None
    except _PILLOW_ERRORS as exc:
        raise Rejected("truncated_or_corrupt", f"header unreadable: {exc}") from None
    # Orientations 5 to 8 turn the picture by 90 degrees: its sides swap.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def load_rgb(path: Path, max_pixels: int) -> Image.Image:
    """Read an image file as oriented 8-bit RGB, exactly as ingest validated it."""
    image, _ = _normalise(_open_fully(Path(path).read_bytes(), max_pixels))
    return image


def _open_fully(data: bytes, max_pixels: int) -> Image.Image:
    """Open and decode every pixel, turning each kind of failure into a rejection."""
    if not data:
        raise Rejected("empty_file", "the file has zero bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Rejected("not_an_image", "Pillow cannot identify an image format in this file") from None
        except Image.DecompressionBombError as exc:
            raise Rejected("too_many_pixels", str(exc)) from None
        except _PILLOW_ERRORS as exc:
            raise Rejected("truncated_or_corrupt", f"header unreadable: {exc}") from None
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise Rejected(
                "too_many_pixels", f"{image.width}x{image.height} = {pixels:,} px exceeds ingest.image.max_pixels={max_pixels:,}"
            )
        try:
            image.load()
        except _PILLOW_ERRORS as exc:
            raise Rejected("truncated_or_corrupt", f"pixel data unreadable: {exc}") from None
    return image


def _normalise(image: Image.Image) -> tuple[Image.Image, str]:
    """Apply EXIF orientation and convert to RGB; return the image and the steps taken."""
    steps = []
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
        steps.append(f"exif_orientation_{orientation}")
    mode = image.mode
    if mode == "P":
        # A palette with a transparent index must be composited, not just dropped.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        steps.append(f"P->{image.mode}")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        steps.append(f"{mode}->RGB over white")
    elif mode.startswith("I") or mode == "F":
        # 16-bit (and wider) grey: map the full 0..65535 range onto 0..255.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey).convert("RGB")
        steps.append(f"{mode}->RGB (16-bit range / 257)")
    elif mode != "RGB":
        image = image.convert("RGB")
        steps.append(f"{mode}->RGB")
    return image, ";".join(steps)

