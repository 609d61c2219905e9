"""embed's engines: local and Ray Data give the same embeddings, survive a killed worker, report errors.

Ray runs here as a local cluster of this machine's CPUs with one actor of one CPU, so Ray Data keeps
a CPU for its own operators (an actor pool that reserves every CPU can stall it on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.errors import ArtifactError, ConfigError, DependencyError
from dlpipe.data.manifest import load_image_manifest
from dlpipe.models.engines.base import InferenceJob
from dlpipe.models.engines.local import LocalEngine
from dlpipe.models.extractor import EmbedderRecipe, ManifestImages, configured_extractor, write_blocks
from dlpipe.stages import embed, finetune
from tests.conftest import Workspace
from tests.unit.test_image_models import TINY, tiny_shapes

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
psutil = pytest.importorskip("psutil")
# Ray workers cannot import this test module by name: the recipes below travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# 40 images in batches of 4, one batch per shard: ten shards, so a worker dies with work left to retry.
RAY = ("embed.engine=ray", "embed.ray.actors=1", "embed.ray.cpus_per_actor=1", "embed.ray.shard_batches=1", "embed.batch_size=4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Tiny shapes with a fine-tuned model, embedded once by the local engine."""
    workspace = Workspace(tmp_path_factory.mktemp("engines"))
    tiny_shapes(workspace, per_class=10)
    project = workspace.load(*TINY, "finetune.head_epochs=1", "embed.batch_size=4")
    finetune.run(project, "shapes")
    embed.run(project, "shapes")
    return workspace


def read_embeddings(workspace: Workspace) -> tuple[np.ndarray, dict]:
    folder = workspace.root / "data/shapes/embed"
    return np.load(folder / "embeddings.npy"), json.loads((folder / "embeddings.json").read_text())


def embed_job(workspace: Workspace, recipe_class: type[EmbedderRecipe] = EmbedderRecipe) -> InferenceJob:
    """The job embed.run would hand its engine, with the recipe made by ``recipe_class``."""
    project = workspace.load(*TINY, "embed.batch_size=4")
    manifest = load_image_manifest(project, "shapes")
    model_dir = project.layout("shapes").model_dir
    extractor = configured_extractor(project.params.embed, model_dir, manifest)
    recipe = recipe_class(**vars(EmbedderRecipe.of(extractor, model_dir, "shapes", 4)))
    return InferenceJob(recipe, ManifestImages(manifest), 4)


def test_ray_engine_writes_the_local_engines_embeddings_bit_for_bit(trained: Workspace, tmp_path: Path) -> None:
    local_vectors, local_sidecar = read_embeddings(trained)
    result = embed.run(trained.load(*TINY, *RAY), "shapes")
    ray_vectors, ray_sidecar = read_embeddings(trained)
    assert result.count == 40 and ray_vectors.shape == local_vectors.shape == (40, result.dimension)
    # Same batches from the same first rows through the same graph: the maths is identical, so are the bits.
    assert np.array_equal(ray_vectors, local_vectors)
    assert local_sidecar["engine"] == {"name": "local"}
    assert ray_sidecar["engine"] == {
        "name": "ray", "cluster": "local", "actors": 1, "cpus_per_actor": 1.0, "gpus_per_actor": 0.0, "shard_batches": 1
    }
    ignored = ("engine",)
    assert {k: v for k, v in ray_sidecar.items() if k not in ignored} == {k: v for k, v in local_sidecar.items() if k not in ignored}


class SlowRecipe(EmbedderRecipe):
    """Sleeps on every shard, so the test can kill the worker while shards remain."""

    def build(self):
        embedder = super().build()
        original = embedder.run

        def slow(items):
            time.sleep(0.4)
            yield from original(items)

        embedder.run = slow
        return embedder


class BrokenRecipe(EmbedderRecipe):
    """A worker that finds the model changed after the driver checked it."""

    def build(self):
        raise ArtifactError("the model in data/shapes/model changed after the embeddings were computed", "rerun embed")


def worker_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if "MapShards" in " ".join(p.info["cmdline"] or [])]


def test_a_killed_ray_worker_loses_and_duplicates_no_row(trained: Workspace, tmp_path: Path) -> None:
    from dlpipe.models.engines.ray_data import RayEngine

    local_vectors, _ = read_embeddings(trained)
    job = embed_job(trained, SlowRecipe)
    manifest = load_image_manifest(trained.load(*TINY), "shapes")
    project = trained.load(*TINY, *RAY)
    killed: list[int] = []
    arrived: list[int] = []

    def kill_after_first(blocks):
        for first, vectors in blocks:
            arrived.extend(range(first, first + len(vectors)))
            if not killed:
                pids = worker_pids()
                assert pids, "no Ray worker process running MapShards was found"
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            yield first, vectors

    with RayEngine(project.params.embed.ray) as engine:
        write_blocks(tmp_path / "e.npy", kill_after_first(engine.map(job)), manifest, local_vectors.shape[1], True, "images")
    assert killed and not psutil.pid_exists(killed[0])
    assert len(arrived) < 40 + 4 * 10  # at most a resend of some shards, never everything twice
    assert np.array_equal(np.load(tmp_path / "e.npy"), local_vectors)


def test_a_dlpipe_error_on_a_worker_comes_back_as_itself(trained: Workspace, tmp_path: Path) -> None:
    from dlpipe.models.engines.ray_data import RayEngine

    job = embed_job(trained, BrokenRecipe)
    manifest = load_image_manifest(trained.load(*TINY), "shapes")
    engine = RayEngine(trained.load(*RAY).params.embed.ray)
    with pytest.raises(ArtifactError, match="changed after the embeddings") as caught, engine:
        write_blocks(tmp_path / "e.npy", engine.map(job), manifest, 8, True, "images")
    assert caught.value.hint == "rerun embed" and caught.value.exit_code == 5


def test_ray_missing_is_a_dependency_error_and_keeps_earlier_embeddings(
    trained: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (trained.root / "data/shapes/embed/embeddings.npy").read_bytes()
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(DependencyError, match="pip install") as caught:
        embed.run(trained.load(*TINY, *RAY), "shapes")
    assert caught.value.exit_code == 6
    assert (trained.root / "data/shapes/embed/embeddings.npy").read_bytes() == before


def test_blocks_missing_a_row_fail_instead_of_leaving_a_gap(trained: Workspace, tmp_path: Path) -> None:
    job = embed_job(trained)
    manifest = load_image_manifest(trained.load(*TINY), "shapes")
    with LocalEngine() as engine:
        blocks = [block for block in engine.map(job)]
    resent = [*blocks, blocks[3]]  # a retried shard delivered twice is written once
    write_blocks(tmp_path / "twice.npy", iter(resent), manifest, blocks[0][1].shape[1], True, "images")
    assert np.array_equal(np.load(tmp_path / "twice.npy"), read_embeddings(trained)[0])
    with pytest.raises(ArtifactError, match="4 of 40 embeddings never arrived"):
        write_blocks(tmp_path / "gap.npy", iter(blocks[:3] + blocks[4:]), manifest, blocks[0][1].shape[1], True, "images")


def test_a_random_backbone_is_refused_since_no_worker_or_query_could_rebuild_it(trained: Workspace) -> None:
    project = trained.load(*TINY, "embed.source=backbone", "embed.backbone.name=small_cnn", "embed.backbone.weights=none")
    with pytest.raises(ConfigError, match="embed.backbone.weights: none gives random features"):
        embed.run(project, "shapes")


def test_predict_on_a_folder_gives_the_same_answers_on_both_engines(trained: Workspace, tmp_path: Path) -> None:
    from dlpipe.core.errors import InputDataError
    from dlpipe.queries import predict

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((trained.root / "shapes").rglob("*.png"))[:9]
    for number, source in enumerate(sources):
        (folder / f"{number}_{source.name}").write_bytes(source.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    model = trained.root / "data/shapes/model"
    local = predict.run(model, [str(folder)], 2, tmp_path / "local.csv")
    on_ray = predict.run(model, [str(folder)], 2, tmp_path / "ray.csv", engine_cfg=trained.load(*RAY).params.embed)
    assert [p.as_json() for p in on_ray.predictions] == [p.as_json() for p in local.predictions]
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert [p.path for p in on_ray.predictions if p.error] == [str(folder / "broken.png")]
    assert len(on_ray.predictions) == 10
    # A file named on the command line that cannot be read stops the run on a worker too (exit 4).
    (tmp_path / "named.png").write_bytes(b"not an image either")
    with pytest.raises(InputDataError, match="cannot predict .*named.png") as caught:
        predict.run(model, [str(folder), str(tmp_path / "named.png")], 2, None, engine_cfg=trained.load(*RAY).params.embed)
    assert caught.value.exit_code == 4


def test_embed_joins_a_running_cluster_and_leaves_it_running(trained: Workspace) -> None:
    """Through the CLI, in a process of its own as a user runs it (a pytest worker has held local Rays before)."""
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A cluster of its own, without Ray's token authentication (the driver would need the cluster's token).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": f"127.0.0.1:{port}"}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
    )
    try:
        status = [ray_cli, "status", "--address", env["RAY_ADDRESS"]]
        for _ in range(60):
            if subprocess.run(status, capture_output=True, env=env).returncode == 0:
                break
            time.sleep(1)
        local_vectors, _ = read_embeddings(trained)
        trained.load()  # writes params.yaml
        overrides = [part for override in (*TINY, *RAY) for part in ("--set", override)]
        dlpipe = str(Path(sys.executable).with_name("dlpipe"))
        run = subprocess.run(
            [dlpipe, "embed", "--params", str(trained.params_path), "--dataset", "shapes", *overrides],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        vectors, sidecar = read_embeddings(trained)
        assert sidecar["engine"]["cluster"] == "joined" and np.array_equal(vectors, local_vectors)
        # dlpipe only disconnected: the cluster it joined still answers
        assert subprocess.run(status, capture_output=True, env=env).returncode == 0
    finally:
        head.terminate()  # --block: the head stops the Ray processes it started
        head.wait(timeout=60)
