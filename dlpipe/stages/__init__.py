"""The DVC stages only: one module per stage, each exposing ``run(project, dataset) -> Result``."""
