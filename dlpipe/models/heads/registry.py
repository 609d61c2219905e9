"""The task heads by the name model.json records under ``task`` (see :mod:`dlpipe.models.heads.base`)."""

from __future__ import annotations

from dlpipe.core.errors import ConfigError
from dlpipe.models.heads.base import Head
from dlpipe.models.heads.classification import ClassificationHead

HEADS: dict[str, type[Head]] = {ClassificationHead.name: ClassificationHead}


def get_head(task: str, key: str = "finetune.task") -> Head:
    """The head registered for ``task``.

    Raises:
        ConfigError: no head has that name (``key`` names the param or file that asked).
    """
    if task not in HEADS:
        raise ConfigError(f"{key}: unknown task '{task}'", f"use one of: {', '.join(HEADS)}")
    return HEADS[task]()
