"""Pictures of heatmaps: one overlay figure per image and one grid sheet per run.

Matplotlib is imported inside the functions and used through :class:`matplotlib.figure.Figure`
(no pyplot state); the grid is a Pillow contact sheet (:mod:`dlpipe.reports.sheets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.explain.evidence import Box, peak
from dlpipe.reports.figures import save_png
from dlpipe.reports.sheets import RIGHT, WRONG, Tile, contact_sheet

COLOUR_MAP = "jet"
_ALPHA = 0.45
_PER_ROW = 3  # images per grid row, each with its overlays beside it
# What each method's colour bar measures.
_SCALE_LABELS = {"occlusion": "drop in probability", "gradcam": "Grad-CAM (max = 1)"}


@dataclass(frozen=True)
class Explained:
    """One image with its maps and what the model said about it."""

    image: np.ndarray  # (size, size, 3) float32 in [0, 255]
    name: str  # path as shown in captions
    true_label: str  # "?" when unknown
    predicted: str
    probability: float  # of the predicted class
    target: str  # the class the maps explain
    maps: dict[str, np.ndarray]  # method -> (size, size)
    box: Box | None = None

    @property
    def right(self) -> bool | None:
        """Whether the prediction is right (None when the true label is unknown)."""
        return None if self.true_label == "?" else self.true_label == self.predicted


def blend(image: np.ndarray, heatmap: np.ndarray, vmin: float = 0.0, vmax: float | None = None) -> np.ndarray:
    """The image with the colour-mapped heatmap laid over it, uint8 (size, size, 3)."""
    from matplotlib import colormaps

    top = float(heatmap.max()) if vmax is None else vmax
    scaled = np.clip((heatmap - vmin) / max(top - vmin, 1e-12), 0.0, 1.0)
    colours = colormaps[COLOUR_MAP](scaled)[..., :3] * 255.0
    return np.clip(np.rint((1 - _ALPHA) * image + _ALPHA * colours), 0, 255).astype(np.uint8)


def write_overlay(item: Explained, png_path: Path) -> None:
    """The image, then each method's map over it with a colour bar; labels and probability in the title.

    The object's box (when known) is drawn dashed and each map's peak is marked with a cross.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    panels = 1 + len(item.maps)
    fig = Figure(figsize=(3.2 * panels + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    fig.suptitle(
        f"{item.name}\ntrue: {item.true_label}   predicted: {item.predicted} ({item.probability:.3f})   maps for: {item.target}",
        fontsize=10,
    )
    pixels = np.clip(np.rint(item.image), 0, 255).astype(np.uint8)
    axes[0].imshow(pixels, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, (method, heatmap) in zip(axes[1:], item.maps.items(), strict=True):
        ax.imshow(pixels, interpolation="nearest")
        vmax = max(float(heatmap.max()), 1e-6)
        shown = ax.imshow(heatmap, cmap=COLOUR_MAP, alpha=_ALPHA, vmin=min(0.0, float(heatmap.min())), vmax=vmax, interpolation="bilinear")
        colorbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        colorbar.set_label(_SCALE_LABELS.get(method, method), fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        y, x = peak(heatmap)
        ax.plot([x], [y], marker="x", color="white", markersize=9, markeredgewidth=2)
        ax.set_title(method, fontsize=9)
    if item.box is not None:
        for ax in axes:
            ax.add_patch(
                Rectangle(
                    (item.box.x_min - 0.5, item.box.y_min - 0.5),
                    item.box.x_max - item.box.x_min,
                    item.box.y_max - item.box.y_min,
                    fill=False,
                    edgecolor="white",
                    linestyle="--",
                    linewidth=1.2,
                )
            )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_png(fig, png_path)


def write_grid(items: Sequence[Explained], methods: Sequence[str], png_path: Path, title: str) -> None:
    """Each image followed by each method's overlay, ``_PER_ROW`` images a row; red borders mark wrong predictions."""
    tiles = []
    for item in items:
        colour = None if item.right is None else (RIGHT if item.right else WRONG)
        caption = f"true: {item.true_label}\npred: {item.predicted} {item.probability:.2f}"
        tiles.append(Tile(np.clip(np.rint(item.image), 0, 255).astype(np.uint8), caption, colour))
        tiles.extend(Tile(blend(item.image, item.maps[method]), f"{method}\nfor {item.target}", colour) for method in methods)
    contact_sheet(tiles, png_path, columns=_PER_ROW * (1 + len(methods)), tile_size=128, title=title)
