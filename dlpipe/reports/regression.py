"""Regression reports: MAE, RMSE and R² against a constant predictor, a predicted-vs-true scatter, residuals.

Values are in the units of the targets CSV. The constant predictor (the training split's mean) is
the baseline every figure is read against: a model that does not beat it has learnt nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.artifacts import write_csv
from dlpipe.reports.figures import save_png

_ROUND = 6


def regression_metrics(predicted: np.ndarray, true: np.ndarray, constant: np.ndarray, columns: Sequence[str]) -> dict[str, Any]:
    """MAE, RMSE and R² over every column (means of the per-column figures) and per column.

    Args:
        predicted, true: (n, columns) arrays in the targets' units.
        constant: the baseline prediction per column (the training mean).
        columns: the column names.

    Returns:
        ``{"mae", "rmse", "r2", "constant_mae", "target_std", "n", "per_column": {name: {...}}}``; R² is 1 - SSE/SST
        over the test split (0 when the test targets do not vary).
    """
    per_column = {}
    for index, name in enumerate(columns):
        p, t = predicted[:, index].astype(np.float64), true[:, index].astype(np.float64)
        residual = p - t
        spread = float(((t - t.mean()) ** 2).sum())
        per_column[name] = {
            "mae": round(float(np.abs(residual).mean()), _ROUND),
            "rmse": round(float(np.sqrt((residual**2).mean())), _ROUND),
            "r2": round(1.0 - float((residual**2).sum()) / spread, _ROUND) if spread > 0 else 0.0,
            "constant_mae": round(float(np.abs(t - constant[index]).mean()), _ROUND),
            "target_std": round(float(t.std()), _ROUND),
        }
    figures = {key: round(float(np.mean([c[key] for c in per_column.values()])), _ROUND) for key in next(iter(per_column.values()))}
    return {**figures, "n": int(len(true)), "per_column": per_column}


def write_regression_figures(predicted: np.ndarray, true: np.ndarray, columns: Sequence[str], folder: Path) -> None:
    """``scatter.png`` (predicted against true, the diagonal drawn), ``residuals.png`` (histograms), and
    ``predictions.csv`` (true and predicted per test item, for ``dvc plots`` scatter templates)."""
    from matplotlib.figure import Figure

    count = len(columns)
    fig = Figure(figsize=(4.6 * count, 4.4), layout="constrained")
    fig.suptitle("test split: predicted vs true", fontsize=13)
    for ax, index in zip(np.atleast_1d(fig.subplots(1, count)), range(count), strict=True):
        t, p = true[:, index], predicted[:, index]
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], color="#888888", linestyle="--", linewidth=1.2, label="perfect")
        ax.scatter(t, p, s=14, alpha=0.7, color="C0", label="test item")
        ax.set_xlabel(f"true {columns[index]}")
        ax.set_ylabel(f"predicted {columns[index]}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    save_png(fig, folder / "scatter.png")

    fig = Figure(figsize=(4.6 * count, 4.0), layout="constrained")
    fig.suptitle("test split: residuals (predicted - true)", fontsize=13)
    for ax, index in zip(np.atleast_1d(fig.subplots(1, count)), range(count), strict=True):
        residual = predicted[:, index] - true[:, index]
        ax.hist(residual, bins=min(30, max(5, len(residual) // 3)), color="C1", alpha=0.85)
        ax.axvline(0.0, color="#555555", linestyle="--", linewidth=1.2)
        ax.set_xlabel(f"residual of {columns[index]}")
        ax.set_ylabel("test items")
        ax.grid(True, alpha=0.3)
    save_png(fig, folder / "residuals.png")

    header = [f"{kind}_{name}" for name in columns for kind in ("true", "predicted")]
    rows = (
        {h: round(float(v), _ROUND) for h, v in zip(header, np.column_stack([true, predicted])[:, _interleave(count)][i], strict=True)}
        for i in range(len(true))
    )
    write_csv(folder / "predictions.csv", header, rows)


def _interleave(count: int) -> list[int]:
    """Column order true_0, predicted_0, true_1, ... of ``column_stack([true, predicted])``."""
    return [index for column in range(count) for index in (column, count + column)]
