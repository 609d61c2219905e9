"""``embed.engine`` -> the engine that runs it; Ray is imported only when ``ray`` is chosen."""

from __future__ import annotations

from dlpipe.core.config import EmbedConfig
from dlpipe.models.engines.base import Engine


def open_engine(cfg: EmbedConfig) -> Engine:
    """The engine ``cfg.engine`` names, not yet entered (use it as a context manager)."""
    if cfg.engine == "ray":
        from dlpipe.models.engines.ray_data import RayEngine

        return RayEngine(cfg.ray)
    from dlpipe.models.engines.local import LocalEngine

    return LocalEngine()
