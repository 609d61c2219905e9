"""``dlpipe doctor``: what this machine and project have, and each problem with what to do about it.

Checks, in order: library versions; whether TensorFlow and FAISS see a GPU (and which FAISS build is
installed); the pretrained weights the params need, against Keras' cache or the files named; free
space under ``base.data_dir`` against the largest output the datasets will need; whether the DVC
pipeline is up to date; stage locks held by a running process; staging folders a killed run left.
A finding is a problem when a command would fail or be refused because of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.artifacts import free_bytes, library_versions
from dlpipe.core.config import BackboneConfig, Project
from dlpipe.core.errors import ConfigError

LIBRARIES = ("tensorflow", "keras", "faiss-cpu", "faiss-gpu", "gensim", "librosa", "umap-learn", "scikit-learn", "ray", "dvc", "numpy")
# The widest embedding of the registry's backbones, float32: embeddings.npy plus an exact index of them.
_BYTES_PER_ITEM = 2 * 2048 * 4
# How long `dvc status` may take before the check is given up.
_DVC_SECONDS = 120


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``ok`` False is a problem, and ``hint`` says what to do."""

    check: str
    ok: bool
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class Report:
    """Every finding, and the versions of the key libraries."""

    versions: dict[str, str]
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        """The findings that are problems."""
        return [finding for finding in self.findings if not finding.ok]

    def as_json(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return {"versions": self.versions, "findings": [asdict(f) for f in self.findings], "problems": len(self.problems)}


def run(project: Project) -> Report:
    """Examine this machine and ``project``; never raises for what it finds (that is the report)."""
    versions = {"python": sys.version.split()[0], **library_versions(*LIBRARIES)}
    findings = [*_gpus(versions), *_weights(project), _space(project), _pipeline(project.root), *_leftovers(project)]
    if project.params.embed.engine == "ray" and versions["ray"] == "not installed":
        findings.append(Finding("ray", False, "embed.engine is ray, and Ray is not installed", "pip install -e '.[ray]'"))
    return Report(versions, findings)


def _gpus(versions: dict[str, str]) -> list[Finding]:
    import faiss
    import tensorflow as tf

    tf_gpus = len(tf.config.list_physical_devices("GPU"))
    faiss_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    build = "faiss-gpu" if versions["faiss-gpu"] != "not installed" else "faiss-cpu"
    return [
        Finding("gpu", True, f"TensorFlow sees {tf_gpus} GPU(s); FAISS ({build} {versions[build]}) sees {faiss_gpus}"),
    ]


def _weights(project: Project) -> list[Finding]:
    """The weights each backbone in the params needs (per dataset, overrides included), each checked once."""
    from dlpipe.models.backbones import imagenet_weights_file, keras_cache_dir

    needed: dict[tuple[str, str], BackboneConfig] = {}
    for name in project.params.datasets:
        params = project.for_dataset(name).params
        needed[("finetune.backbone", params.finetune.backbone.model_dump_json())] = params.finetune.backbone
        if params.embed.source == "backbone":
            needed[("embed.backbone", params.embed.backbone.model_dump_json())] = params.embed.backbone
    findings = []
    for (key, _), cfg in sorted(needed.items()):
        what = f"{key}: {cfg.name} (weights: {cfg.weights})"
        if cfg.weights == "none":
            findings.append(Finding("weights", True, f"{what}: random initial weights, nothing to load"))
        elif cfg.weights == "imagenet":
            try:
                file = keras_cache_dir() / imagenet_weights_file(cfg, key)
            except ConfigError as error:
                findings.append(Finding("weights", False, f"{what}: {error.message}", error.hint or ""))
                continue
            present = file.is_file()
            hint = (
                ""
                if present
                else f"copy {file.name} into {file.parent} (download it where there is internet), or set {key}.weights to a file"
            )
            findings.append(Finding("weights", present, f"{what}: {file} {'is there' if present else 'is missing'}", hint))
        else:
            path = project.resolve(cfg.weights)
            present = path.is_file()
            findings.append(
                Finding(
                    "weights",
                    present,
                    f"{what}: {path} {'is there' if present else 'is missing'}",
                    "" if present else f"put the weights file at {path}, or fix {key}.weights",
                )
            )
    return findings


def _space(project: Project) -> Finding:
    """Free space under data_dir against the largest output: one dataset's embeddings and exact index at the widest backbone."""
    largest, name = 0, ""
    for dataset in project.params.datasets:
        manifest = project.layout(dataset).ingest_dir / "manifest.csv"
        if manifest.is_file():
            with open(manifest, "rb") as handle:
                items = max(0, sum(1 for _ in handle) - 1)
        else:
            items = _files_under(project.resolve(project.params.datasets[dataset].source))
        if items * _BYTES_PER_ITEM > largest:
            largest, name = items * _BYTES_PER_ITEM, dataset
    free = free_bytes(project.data_dir)
    detail = (
        f"{free / 2**30:,.1f} GiB free under {project.data_dir}; the largest output "
        f"(embeddings and index of '{name}') needs about {largest / 2**20:,.0f} MiB"
    )
    hint = "" if free >= largest else "free space there, or set base.data_dir to a larger disk"
    return Finding("space", free >= largest, detail, hint)


def _files_under(source: Path) -> int:
    if source.is_file():
        return 1
    return sum(len(files) for _, _, files in os.walk(source))


def _pipeline(root: Path) -> Finding:
    """Whether ``dvc status`` finds every stage up to date (information, not a problem: a changed param is normal)."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not (root / "dvc.yaml").is_file():
        return Finding("pipeline", True, f"no dvc.yaml in {root}: commands run without DVC")
    try:
        completed = subprocess.run([dvc, "status", "--json"], cwd=root, capture_output=True, text=True, timeout=_DVC_SECONDS, check=False)
        stale = json.loads(completed.stdout or "{}") if completed.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        stale = None
    if stale is None:
        return Finding("pipeline", True, "`dvc status` could not tell whether the pipeline is up to date", "run `dvc status` to see why")
    if not stale:
        return Finding("pipeline", True, "the DVC pipeline is up to date")
    names = ", ".join(sorted(stale)[:8]) + (" ..." if len(stale) > 8 else "")
    return Finding("pipeline", True, f"{len(stale)} DVC stage(s) out of date: {names}", "dvc repro")


def _leftovers(project: Project) -> list[Finding]:
    """Locks a running process holds, and staging folders of killed runs, under every dataset's folder."""
    findings = []
    for dataset in project.params.datasets:
        folder = project.dataset_dir(dataset)
        if not folder.is_dir():
            continue
        for lock in sorted(folder.glob(".*.lock")):
            stage = lock.name[1 : -len(".lock")]
            if _held(lock):
                findings.append(
                    Finding(
                        "lock",
                        False,
                        f"stage '{stage}' of dataset '{dataset}' is running now (it holds {lock})",
                        f"wait for it, or find it with: fuser {lock}",
                    )
                )
        for leftover in sorted(folder.rglob(".*.partial-*")) + sorted(folder.rglob(".*.old-*")):
            findings.append(
                Finding(
                    "leftover",
                    False,
                    f"{leftover} was left by a run that was killed",
                    "rerun that stage (it removes what a killed run left), or delete the folder",
                )
            )
    return findings


def _held(lock: Path) -> bool:
    try:
        with open(lock, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False
