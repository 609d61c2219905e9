"""Localisation reports: box IoU, keypoint error and PCK, and test images with true and predicted geometry drawn.

Boxes are ``(x_min, y_min, x_max, y_max)`` and points ``(x, y)``, in pixels of the original image
(or as fractions of its sides: IoU does not care, errors are converted with the image size).
On every sheet the truth is dashed white-on-black and the prediction solid colour, so either is
readable on any background.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dlpipe.reports.sheets import RIGHT, WRONG, Tile, contact_sheet

_ROUND = 6
_DASH = 5  # pixels per dash of a true box's outline
_PREDICTED = (255, 64, 160)
_CELL = (255, 210, 0)
_ANNOTATION_MAX_SIDE = 1024


def annotation_side(image: Image.Image) -> int:
    """The longer side ``predict --out`` draws an image at: its own, up to 1024 px (lines stay visible on large photos)."""
    return min(_ANNOTATION_MAX_SIDE, max(image.size))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of paired boxes (n, 4); corners in either order are sorted first."""
    a, b = ordered_boxes(a), ordered_boxes(b)
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def ordered_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes with x_min <= x_max and y_min <= y_max (a network's corners may cross)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack(
        [
            np.minimum(boxes[:, 0], boxes[:, 2]),
            np.minimum(boxes[:, 1], boxes[:, 3]),
            np.maximum(boxes[:, 0], boxes[:, 2]),
            np.maximum(boxes[:, 1], boxes[:, 3]),
        ]
    )


def box_metrics(iou: np.ndarray) -> dict[str, Any]:
    """Mean IoU and the shares of items with IoU >= 0.5 and >= 0.75."""
    return {
        "mean_iou": round(float(iou.mean()), _ROUND) if len(iou) else 0.0,
        "iou_50": round(float((iou >= 0.5).mean()), _ROUND) if len(iou) else 0.0,
        "iou_75": round(float((iou >= 0.75).mean()), _ROUND) if len(iou) else 0.0,
        "n": int(len(iou)),
    }


def keypoint_errors(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean error per item and point, (n, points), of (n, points, 2) arrays in pixels."""
    return np.sqrt(((predicted - true) ** 2).sum(axis=-1))


def keypoint_metrics(errors: np.ndarray, sides: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Mean error in pixels and PCK: the share of points within 5% and 10% of the image's longer side.

    Args:
        errors: (n, points) pixel errors.
        sides: (n,) the longer side of each image in pixels.
        names: the point names, for the per-point figures.
    """
    relative = errors / sides[:, None]
    per_point = {
        name: {"mean_error_px": round(float(errors[:, i].mean()), _ROUND), "pck_10": round(float((relative[:, i] <= 0.10).mean()), _ROUND)}
        for i, name in enumerate(names)
    }
    return {
        "mean_error_px": round(float(errors.mean()), _ROUND),
        "pck_05": round(float((relative <= 0.05).mean()), _ROUND),
        "pck_10": round(float((relative <= 0.10).mean()), _ROUND),
        "n": int(len(errors)),
        "per_point": per_point,
    }


def _dashed_line(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], width: int) -> None:
    length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
    steps = max(1, int(length // _DASH))
    for step in range(0, steps, 2):
        t0, t1 = step / steps, min(1.0, (step + 1) / steps)
        a = (start[0] + (end[0] - start[0]) * t0, start[1] + (end[1] - start[1]) * t0)
        b = (start[0] + (end[0] - start[0]) * t1, start[1] + (end[1] - start[1]) * t1)
        draw.line([a, b], fill=(0, 0, 0), width=width + 2)
        draw.line([a, b], fill=(255, 255, 255), width=width)


def draw_geometry(
    image: Image.Image,
    *,
    true_box: Sequence[float] | None = None,
    predicted_box: Sequence[float] | None = None,
    true_points: np.ndarray | None = None,
    predicted_points: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    display: int = 256,
) -> Image.Image:
    """A copy of ``image`` scaled to ``display`` px on its longer side, with boxes (pixels of ``image``) drawn.

    Args:
        true_box, predicted_box: (x_min, y_min, x_max, y_max); the true one dashed.
        true_points, predicted_points: (points, 2) x, y; true ones as white rings, predicted as filled dots,
            joined by a thin line (when both are given) so each error is visible.
        cells: for a regions model, its (S, S) cell probabilities: cells above 0.5 are shaded and the grid drawn.
    """
    scale = display / max(image.size)
    canvas = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(canvas, "RGBA")
    line = max(2, display // 128)
    if cells is not None:
        grid = cells.shape[0]
        cw, ch = canvas.width / grid, canvas.height / grid
        for row, col in zip(*np.nonzero(cells >= 0.5), strict=True):
            draw.rectangle((col * cw, row * ch, (col + 1) * cw, (row + 1) * ch), fill=(*_CELL, 70))
        for i in range(1, grid):
            draw.line([(i * cw, 0), (i * cw, canvas.height)], fill=(255, 255, 255, 90), width=1)
            draw.line([(0, i * ch), (canvas.width, i * ch)], fill=(255, 255, 255, 90), width=1)
    if predicted_box is not None:
        x0, y0, x1, y1 = ordered_boxes(np.asarray(predicted_box))[0] * scale
        draw.rectangle((x0, y0, x1, y1), outline=_PREDICTED, width=line)
    if true_box is not None:
        x0, y0, x1, y1 = (float(v) * scale for v in true_box)
        for start, end in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
            _dashed_line(draw, start, end, line)
    radius = max(3, display // 64)
    if true_points is not None:
        for index, (tx, ty) in enumerate(true_points * scale):
            if predicted_points is not None:
                px, py = predicted_points[index] * scale
                draw.line([(tx, ty), (px, py)], fill=(255, 255, 255, 160), width=1)
            draw.ellipse((tx - radius, ty - radius, tx + radius, ty + radius), outline=(0, 0, 0), width=line + 1)
            draw.ellipse((tx - radius, ty - radius, tx + radius, ty + radius), outline=(255, 255, 255), width=line)
    if predicted_points is not None:
        for px, py in predicted_points * scale:
            draw.ellipse((px - radius + 1, py - radius + 1, px + radius - 1, py + radius - 1), fill=_PREDICTED)
    return canvas


def draw_caption(image: Image.Image, text: str, display: int = 256) -> Image.Image:
    """A copy of ``image`` scaled to ``display`` px on its longer side with ``text`` on a dark band at the top."""
    from dlpipe.reports.sheets import caption_font

    scale = display / max(image.size)
    canvas = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(canvas, "RGBA")
    size = max(10, display // 20)
    font = caption_font(size)
    band = size + 8
    draw.rectangle((0, 0, canvas.width, band), fill=(0, 0, 0, 170))
    draw.text((4, 4), text, font=font, fill=(255, 255, 255))
    return canvas


def geometry_sheet(images: Sequence[Image.Image], captions: Sequence[str], good: Sequence[bool], path: Path, title: str) -> None:
    """A contact sheet of drawn test images (see :func:`draw_geometry`), green-bordered when ``good``."""
    tiles = [Tile(image, caption, RIGHT if ok else WRONG) for image, caption, ok in zip(images, captions, good, strict=True)]
    contact_sheet(tiles, path, columns=6, tile_size=192, title=title)
