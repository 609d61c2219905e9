"""Per-epoch curves as DVCLive metrics, the form ``dvc plots show`` and ``dvc exp show`` read."""

from __future__ import annotations

from pathlib import Path


def write_live_history(folder: Path, history: dict[str, list[float]]) -> None:
    """Log one step per epoch into ``folder``: ``val_<name>`` as ``val/<name>``, every other key as ``train/<name>``.

    Args:
        folder: the DVCLive directory (created; the stage's plots folder holds it as ``live/``).
        history: per-epoch values by Keras name (``loss``, ``accuracy``, ``val_loss``...); all lists
            as long as ``history["loss"]``.
    """
    from dvclive import Live

    with Live(dir=str(folder), save_dvc_exp=False, dvcyaml=None) as live:
        for epoch in range(len(history["loss"])):
            for key, values in history.items():
                split = "val" if key.startswith("val_") else "train"
                live.log_metric(f"{split}/{key.removeprefix('val_')}", values[epoch])
            live.next_step()
