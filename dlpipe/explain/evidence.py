"""Is a heatmap right? The deletion metric and the pointing game.

- Deletion (Petsiuk et al., 2018): remove the cells the map ranks most important first (replace
  them with the fill) and track the target class's probability; a map that finds what matters
  makes the probability fall fast, so a *lower* area under the curve is better.
- Pointing game (Zhang et al., 2016): a hit when the map's maximum lies inside the object's
  bounding box; the score is the share of hits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlpipe.explain.occlusion import Probe, patch_starts


@dataclass(frozen=True)
class Box:
    """An object's box in model-input pixels; max exclusive."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def contains(self, y: int, x: int) -> bool:
        """True when pixel (y, x) (its centre) lies inside the box."""
        return self.x_min <= x + 0.5 <= self.x_max and self.y_min <= y + 0.5 <= self.y_max

    def area_fraction(self, size: int) -> float:
        """Share of a ``size`` x ``size`` image the box covers: a random point's chance to hit it."""
        width = min(self.x_max, size) - max(self.x_min, 0)
        height = min(self.y_max, size) - max(self.y_min, 0)
        return max(0.0, width) * max(0.0, height) / (size * size)


def scale_box(box: tuple[float, float, float, float], source_size: tuple[int, int], size: int) -> Box:
    """A box (x_min, y_min, x_max, y_max) in source-image pixels of (width, height), scaled to the model input."""
    width, height = source_size
    x_min, y_min, x_max, y_max = box
    return Box(x_min * size / width, y_min * size / height, x_max * size / width, y_max * size / height)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(y, x) of the map's maximum; ties go to the one nearest the centre of the tied pixels."""
    tied = np.argwhere(heatmap >= heatmap.max() - 1e-7 * max(abs(float(heatmap.max())), 1.0))
    # Occlusion maps have plateaus the size of a patch: the first pixel of the plateau would sit on its corner.
    centre = tied.mean(axis=0)
    y, x = tied[np.argmin(((tied - centre) ** 2).sum(axis=1))]
    return int(y), int(x)


def pointing_hit(heatmap: np.ndarray, box: Box) -> bool:
    """True when the map's peak lies inside ``box``."""
    return box.contains(*peak(heatmap))


def cell_masks(size: int, cell: int) -> np.ndarray:
    """Non-overlapping cells covering the image (the last row/column flush with the edge), (C, size, size) bool."""
    starts = patch_starts(size, cell, cell)
    masks = np.zeros((len(starts) ** 2, size, size), dtype=bool)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        masks[k, y : y + cell, x : x + cell] = True
    return masks


def deletion_masks(heatmap: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Cumulative masks removing the most important cells first: (C + 1, size, size, 1) float32, step 0 removes nothing."""
    importance = np.array([heatmap[cell].mean() for cell in cells])
    order = np.argsort(-importance, kind="stable")
    steps = np.zeros((len(cells) + 1, *heatmap.shape), dtype=bool)
    for step, index in enumerate(order, start=1):
        steps[step] = steps[step - 1] | cells[index]
    return steps[..., None].astype(np.float32)


def deletion_curve(
    probe: Probe, image: np.ndarray, fill: np.ndarray, target: int, heatmap: np.ndarray, cells: np.ndarray,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """The target's probability (the probe's score) after removing 0, 1, ..., C cells in the map's order, (C + 1,)."""
    return probe(image, fill, deletion_masks(heatmap, cells), target, reference)


def area_under(curve: np.ndarray) -> float:
    """Trapezoidal area under a curve sampled evenly on [0, 1] (removed fraction)."""
    return float(((curve[:-1] + curve[1:]) / 2).mean())
