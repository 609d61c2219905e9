"""The DVC stages only: one module per stage, each exposing ``run(project, dataset) -> Result``.

A stage whose work differs for labelled text has a second module, ``<stage>_text``, so each
DVC stage's code deps hold only what it runs (dvc.yaml's ``<stage>_text`` stages).
"""

# Stages with a module of their own for labelled text datasets.
TEXT_VARIANTS = frozenset({"finetune", "embed", "heatmap"})


def stage_module(stage: str, modality: str) -> str:
    """The module that runs ``stage`` on a dataset of ``modality``."""
    return f"dlpipe.stages.{stage}_text" if modality == "text" and stage in TEXT_VARIANTS else f"dlpipe.stages.{stage}"
