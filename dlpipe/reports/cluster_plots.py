"""Pictures of a clustering: the UMAP map coloured by label and by cluster, and the silhouette curve.

Matplotlib is imported inside the functions (through :class:`matplotlib.figure.Figure`,
no pyplot state), so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlpipe.reports.figures import save_png

# Beyond this many groups a legend stops being readable; the colour bar-free scatter still shows structure.
_MAX_LEGEND = 20


def write_umap_png(
    coords: np.ndarray,
    labels: Sequence[str] | None,
    clusters: np.ndarray,
    png_path: Path,
    title: str,
) -> None:
    """Two side-by-side scatter plots of the 2-D projection: coloured by true label, then by cluster.

    Args:
        coords: (N, 2) UMAP coordinates.
        labels: the manifest label of each point; None (a dataset without labels) draws the cluster panel only.
        clusters: the k-means cluster of each point.
        png_path: where to write the PNG (atomically).
        title: figure title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6) if labels is not None else (7, 6), layout="constrained")
    fig.suptitle(title, fontsize=13)
    cluster_names = [f"cluster {c}" for c in clusters]
    panels = [(cluster_names, "by cluster (no labels)")]
    if labels is not None:
        panels = [(list(labels), "by label"), (cluster_names, "by cluster")]
    for ax, (groups, heading) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels, strict=True):
        _scatter_groups(ax, coords, groups)
        ax.set_title(heading)
        ax.set_xticks([])
        ax.set_yticks([])
    save_png(fig, png_path)


def _scatter_groups(ax, coords: np.ndarray, groups: list[str]) -> None:
    names = sorted(set(groups), key=_natural_key)
    palette = _palette(len(names))
    members = np.asarray(groups)
    # Small markers for large collections so dense regions stay readable.
    size = float(np.clip(3000 / max(len(groups), 1), 2, 30))
    for color, name in zip(palette, names, strict=True):
        mask = members == name
        ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=color, label=f"{name} ({int(mask.sum())})", alpha=0.8, linewidths=0)
    if len(names) <= _MAX_LEGEND:
        ax.legend(loc="best", fontsize=8, markerscale=max(1.0, 20 / size) ** 0.5, frameon=True, framealpha=0.85)


def _palette(count: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "turbo"
    cmap = colormaps[name]
    if name == "turbo":
        return [cmap(i / max(count - 1, 1)) for i in range(count)]
    return [cmap(i) for i in range(count)]


def _natural_key(name: str) -> tuple:
    """'cluster 10' after 'cluster 9'."""
    head, _, tail = name.rpartition(" ")
    return (head, int(tail)) if tail.isdigit() else (name, -1)


def write_silhouette_plot(scores: dict[int, float], chosen: int, png_path: Path, title: str) -> None:
    """The mean silhouette score for each k tried, with the chosen k marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    ks = sorted(scores)
    ax.plot(ks, [scores[k] for k in ks], marker="o", color="C0")
    ax.axvline(chosen, color="C3", linestyle="--", label=f"chosen k = {chosen}")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("mean silhouette score")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    save_png(fig, png_path)
