"""Contact sheets: grids of thumbnails with captions, rendered with Pillow only.

Layout (all sizes in pixels, ``T`` = ``tile_size``)::

    pad      = max(4, T // 16)
    border   = max(2, T // 32)           (drawn inside the padding around the image slot)
    font     = max(10, min(16, T // 10)) (caption font size), line = round(font * 1.25)
    lines    = the most caption lines of any tile (at least 1)
    cell     = (T + 2*pad) wide, (pad + T + pad + lines*line + pad // 2) high
    cols     = min(columns, number of tiles); rows = ceil(tiles / cols)
    title    = round((font + 4) * 1.25) + 2*pad high when a title is given, else 0
    sheet    = cols*cell_w wide, title + rows*cell_h high; when the title text is wider
               than the grid the sheet widens to fit it (up to 1200 px; longer titles
               are shortened with '...') and the grid is centred

The same tiles give the same bytes (no timestamps, fixed font and geometry).
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dlpipe.core.artifacts import atomic_write_bytes

SHEET_BACKGROUND = (246, 246, 246)
SLOT_BACKGROUND = (218, 218, 218)
TITLE_BACKGROUND = (48, 48, 48)
TITLE_TEXT = (250, 250, 250)
CAPTION_TEXT = (30, 30, 30)
WRONG = (214, 39, 40)
RIGHT = (44, 160, 44)

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont
_TITLE_MAX_W = 1200


@dataclass(frozen=True)
class Tile:
    """One thumbnail of a contact sheet.

    Attributes:
        image: RGB uint8 array (H, W, 3) or a PIL image (grayscale, RGBA and float
            arrays in [0, 1] are converted too).
        caption: text under the image; ``'\\n'`` separates lines.
        color: optional colour of the border and caption (e.g. red for a wrong
            prediction, green for a right one).
    """

    image: Image.Image | np.ndarray  # a str/Path to an image file is accepted too
    caption: str
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class _Geometry:
    pad: int
    border: int
    font_size: int
    line_h: int
    lines: int
    cell_w: int
    cell_h: int
    title_font_size: int
    title_h: int


def _geometry(tile_size: int, lines: int, title: bool) -> _Geometry:
    pad = max(4, tile_size // 16)
    border = max(2, tile_size // 32)
    font_size = max(10, min(16, tile_size // 10))
    line_h = round(font_size * 1.25)
    title_font_size = font_size + 4
    title_h = round(title_font_size * 1.25) + 2 * pad if title else 0
    cell_w = tile_size + 2 * pad
    cell_h = pad + tile_size + pad + lines * line_h + pad // 2
    return _Geometry(pad, border, font_size, line_h, lines, cell_w, cell_h, title_font_size, title_h)


def caption_font(size: int) -> FontType:
    """The font of every caption dlpipe draws, at ``size`` pixels."""
    return _font(size)


@lru_cache(maxsize=16)
def _font(size: int) -> FontType:
    """Pillow's bundled default font at ``size`` (the fixed bitmap font where FreeType is unavailable)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 takes no size
        return ImageFont.load_default()


def _to_rgb(image: Any) -> Image.Image:
    """Convert an array, PIL image or path to an RGB PIL image."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
        if array.dtype != np.uint8:
            array = np.asarray(array, dtype=np.float64)
            array = np.nan_to_num(array)
            if array.size and array.max() <= 1.0:
                array = array * 255.0
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(array))
    if not isinstance(image, Image.Image):
        raise TypeError(f"a tile image must be a PIL image, a numpy array or a path, not {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*SLOT_BACKGROUND, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _thumbnail(image: Any, tile_size: int) -> Image.Image:
    rgb = _to_rgb(image)
    width, height = rgb.size
    if width == 0 or height == 0:
        return Image.new("RGB", (1, 1), SLOT_BACKGROUND)
    scale = tile_size / max(width, height)
    size = (max(1, min(tile_size, round(width * scale))), max(1, min(tile_size, round(height * scale))))
    if size == rgb.size:
        return rgb
    return rgb.resize(size, Image.Resampling.LANCZOS)


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: FontType) -> float:
    return draw.textlength(text, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: FontType, width: int) -> str:
    """Shorten ``text`` with '...' until it fits ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "...", font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def _readable(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Darken a colour until it reads well as text on the light sheet background."""
    r, g, b = (max(0, min(255, int(c))) for c in color)
    for _ in range(20):
        luminance = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
        if luminance <= 0.42:
            break
        r, g, b = int(r * 0.85), int(g * 0.85), int(b * 0.85)
    return (r, g, b)


# Pillow's bundled font covers ASCII only: fold other text to ASCII so that it never shows as
# boxes ("café" -> "cafe", "—" -> "-"); characters without an ASCII form become "?".
_ASCII = str.maketrans({"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2026": "...", "\u2018": "'", "\u2019": "'",
                        "\u201c": '"', "\u201d": '"', "\u00d7": "x", "\u2192": "->", "\u00a0": " ",
                        "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u00f8": "o", "\u00d8": "O", "\u0142": "l"})


def _plain(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII))
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return folded.encode("ascii", "replace").decode("ascii")


def _encode(sheet: Image.Image) -> bytes:
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _draw_title(draw: ImageDraw.ImageDraw, title: str, geo: _Geometry, width: int) -> None:
    draw.rectangle((0, 0, width - 1, geo.title_h - 1), fill=TITLE_BACKGROUND)
    font = _font(geo.title_font_size)
    text = _fit(draw, _plain(title), font, width - 2 * geo.pad)
    draw.text((geo.pad, geo.title_h // 2), text, font=font, fill=TITLE_TEXT, anchor="lm")


def contact_sheet(
    tiles: Sequence[Tile],
    path: Path,
    *,
    columns: int = 8,
    tile_size: int = 128,
    title: str | None = None,
) -> Path:
    """Render ``tiles`` as a grid of thumbnails with captions and write it as a PNG (atomically).

    Each image is resized to fit ``tile_size`` x ``tile_size`` keeping its aspect
    ratio (LANCZOS) and centred on a neutral slot; its caption lines are centred
    under it (shortened with '...' when too wide); a tile with a ``color`` gets a
    border and caption in that colour. With no tiles, a small sheet saying
    "(no images)" is written, so a stage always has the file it declares. See
    the module docstring for the exact geometry.

    Returns:
        ``path``.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if tile_size < 16:
        raise ValueError(f"tile_size must be at least 16 pixels, got {tile_size}")
    path = Path(path)
    lines = max((len(tile.caption.split("\n")) for tile in tiles), default=1)
    geo = _geometry(tile_size, max(1, lines), bool(title))
    title_w = 0
    if title:
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        title_w = min(_TITLE_MAX_W, math.ceil(_text_width(measure, _plain(title), _font(geo.title_font_size))) + 2 * geo.pad)

    if not tiles:
        width = max(geo.cell_w * 2, 240, title_w)
        height = geo.title_h + geo.cell_h
        sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        if title:
            _draw_title(draw, title, geo, width)
        draw.text(
            (width // 2, geo.title_h + geo.cell_h // 2),
            "(no images)",
            font=_font(geo.font_size + 2),
            fill=(110, 110, 110),
            anchor="mm",
        )
        atomic_write_bytes(path, _encode(sheet))
        return path

    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    grid_w = cols * geo.cell_w
    width = max(grid_w, title_w)
    left = (width - grid_w) // 2
    height = geo.title_h + rows * geo.cell_h
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        _draw_title(draw, title, geo, width)
    font = _font(geo.font_size)

    for index, tile in enumerate(tiles):
        row, col = divmod(index, cols)
        x0 = left + col * geo.cell_w
        y0 = geo.title_h + row * geo.cell_h
        slot = (x0 + geo.pad, y0 + geo.pad, x0 + geo.pad + tile_size - 1, y0 + geo.pad + tile_size - 1)
        draw.rectangle(slot, fill=SLOT_BACKGROUND)
        thumb = _thumbnail(tile.image, tile_size)
        offset = (slot[0] + (tile_size - thumb.width) // 2, slot[1] + (tile_size - thumb.height) // 2)
        sheet.paste(thumb, offset)
        text_color = CAPTION_TEXT
        if tile.color is not None:
            red, green, blue = (max(0, min(255, int(c))) for c in tile.color)
            color = (red, green, blue)
            b = geo.border
            draw.rectangle((slot[0] - b, slot[1] - b, slot[2] + b, slot[3] + b), outline=color, width=b)
            text_color = _readable(color)
        text_y = y0 + geo.pad + tile_size + geo.pad
        for number, line in enumerate(tile.caption.split("\n")):
            text = _fit(draw, _plain(line), font, geo.cell_w - 4)
            draw.text(
                (x0 + geo.cell_w // 2, text_y + number * geo.line_h),
                text,
                font=font,
                fill=text_color,
                anchor="ma",
            )

    atomic_write_bytes(path, _encode(sheet))
    return path


def top_losses_tiles(
    images: Sequence[Any],
    true_labels: Sequence[str],
    pred_labels: Sequence[str],
    pred_probs: Sequence[float],
    losses: Sequence[float],
    k: int,
) -> list[Tile]:
    """Tiles of the ``k`` highest-loss items, highest first (ties: lower index first).

    Captions read ``"true: circle\\npred: star 0.93"`` (a NaN probability, as a regression gives, is
    left out); the border is red when the prediction is wrong and green when it is right. A NaN
    loss sorts last.
    """
    n = len(images)
    for name, seq in (("true_labels", true_labels), ("pred_labels", pred_labels), ("pred_probs", pred_probs), ("losses", losses)):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries but there are {n} images")
    if k <= 0 or n == 0:
        return []

    def key(i: int) -> tuple[float, int]:
        loss = float(losses[i])
        return (math.inf if math.isnan(loss) else -loss, i)

    chosen = sorted(range(n), key=key)[:k]
    tiles = []
    for i in chosen:
        true, pred = str(true_labels[i]), str(pred_labels[i])
        sure = float(pred_probs[i])
        caption = f"true: {true}\npred: {pred}" + ("" if math.isnan(sure) else f" {sure:.2f}")
        tiles.append(Tile(images[i], caption, RIGHT if true == pred else WRONG))
    return tiles
