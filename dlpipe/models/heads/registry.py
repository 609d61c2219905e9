"""The task heads by the name model.json records under ``task`` (see :mod:`dlpipe.models.heads.base`)."""

from __future__ import annotations

from typing import Any

from dlpipe.core.errors import ConfigError
from dlpipe.models.heads.base import Head
from dlpipe.models.heads.bbox import BoxHead
from dlpipe.models.heads.classification import ClassificationHead
from dlpipe.models.heads.keypoints import KeypointsHead
from dlpipe.models.heads.regions import RegionsHead
from dlpipe.models.heads.regression import RegressionHead

HEADS: dict[str, type[Head]] = {head.name: head for head in (ClassificationHead, RegressionHead, BoxHead, RegionsHead, KeypointsHead)}


def head_class(task: str, key: str = "datasets.<name>.task") -> type[Head]:
    """The head registered for ``task``.

    Raises:
        ConfigError: no head has that name (``key`` names the param or file that asked).
    """
    if task not in HEADS:
        raise ConfigError(f"{key}: unknown task '{task}'", f"use one of: {', '.join(HEADS)}")
    return HEADS[task]


def head_from_record(task: str, record: dict[str, Any]) -> Head:
    """The head of a saved model: its task and model.json's ``targets`` record."""
    return head_class(task).from_record(record)
