"""Read ``embed``'s output back, checked against its sidecar and the current manifest.

``cluster`` and ``search`` both start here, so a stale, truncated or corrupt
``embeddings.npy`` is refused the same way everywhere, before any work. The vectors stay a
memory map; :mod:`dlpipe.core.arrays` reads them in blocks through the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.arrays import first_non_finite_row, load_npy
from dlpipe.core.artifacts import malformed_is_damage, read_json, sha256_file
from dlpipe.core.config import Project
from dlpipe.core.errors import ArtifactError
from dlpipe.core.layout import EMBEDDINGS_FILE, EMBEDDINGS_SIDECAR
from dlpipe.data.manifest import Manifest, load_model_manifest


@dataclass(frozen=True)
class Embeddings:
    """One dataset's embeddings (memory-mapped, manifest order), their sidecar and the manifest."""

    vectors: np.ndarray
    sidecar: dict[str, Any]
    manifest: Manifest
    path: Path

    @property
    def normalized(self) -> bool:
        """True when rows are L2-normalised (inner product is cosine similarity)."""
        return bool(self.sidecar["normalized"])


def load_embeddings(project: Project, dataset: str) -> Embeddings:
    """Open ``<data_dir>/<dataset>/embed/embeddings.npy`` after checking it is whole and current.

    Raises:
        ArtifactError: the file or sidecar is missing or corrupt, its sha256 or shape disagrees with the
            sidecar, the manifest changed since embedding, it holds no rows, or a row is NaN/inf.
    """
    with malformed_is_damage(project.layout(dataset).embed_dir, "the embeddings", f"rerun `dlpipe embed --dataset {dataset}`"):
        manifest = load_model_manifest(project, dataset)
        folder = project.layout(dataset).embed_dir
        path = folder / EMBEDDINGS_FILE
        sidecar = read_json(folder / EMBEDDINGS_SIDECAR, "embeddings sidecar")
        rerun = f"rerun `dlpipe embed --dataset {dataset}` (or `dvc repro`)"
        if not path.is_file():
            raise ArtifactError(f"embeddings not found: {path}", rerun)
        if sha256_file(path) != sidecar.get("embeddings_sha256"):
            raise ArtifactError(f"{path} does not match the sha256 in {EMBEDDINGS_SIDECAR} (truncated or replaced?)", rerun)
        if sidecar.get("manifest_sha256") != manifest.sha256:
            raise ArtifactError(f"dataset '{dataset}' was re-ingested after {path} was written (manifest sha256 differs)", rerun)
        vectors = load_npy(path, "the embeddings", mmap_mode="r")
        expected = (sidecar.get("count"), sidecar.get("dimension"))
        if vectors.ndim != 2 or vectors.shape != expected or vectors.shape[0] != len(manifest.rows):
            raise ArtifactError(
                f"{path} has shape {vectors.shape}, but the sidecar says {expected} and the manifest has {len(manifest.rows)} rows",
                rerun,
            )
        if vectors.shape[0] == 0:
            raise ArtifactError(f"{path} holds no embeddings", "ingest a dataset with at least one image, then " + rerun)
        row = first_non_finite_row(vectors)
        if row is not None:
            raise ArtifactError(f"{path} row {row} ({manifest.rows[row]['path']}) holds NaN or inf", rerun)
        return Embeddings(vectors, sidecar, manifest, path)
