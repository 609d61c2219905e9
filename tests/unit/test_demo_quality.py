"""The shipped params.yaml on the sample images, end to end: the quality figures the demo promises.

One module-scoped run (sample -> ingest -> small_cnn from scratch -> embed -> cluster -> search,
then heatmap) serves every test here; it is the slowest part of the default suite (about 5-6 minutes on 2 cores).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from dlpipe.queries import search as search_query
from dlpipe.stages import cluster, embed, finetune, heatmap, ingest, search
from tests.conftest import MOBILENET_FILE, Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, dict]]:
    """The demo pipeline with the shipped params unchanged; returns the workspace and each stage's metrics."""
    from dlpipe.data.sample import generate_images

    workspace = Workspace(tmp_path_factory.mktemp("demo"))
    workspace.add_dataset("shapes", "image", "shapes")
    project = workspace.load()
    generate_images(workspace.root / "shapes", project.params.sample.images, project.params.base.seed)
    ingest.run(project, "shapes")
    metrics = {"finetune": finetune.run(project, "shapes").metrics}
    embed.run(project, "shapes")
    metrics["cluster"] = cluster.run(project, "shapes").metrics
    metrics["search"] = search.run(project, "shapes").metrics
    return workspace, metrics


def test_small_cnn_reaches_95_percent_test_accuracy(demo: tuple[Workspace, dict]) -> None:
    # Measured 0.989 (87 of 88 test images) with seed 42.
    assert demo[1]["finetune"]["test_accuracy"] >= 0.95


def test_deep_features_cluster_far_better_than_raw_pixels(demo: tuple[Workspace, dict]) -> None:
    metrics = demo[1]["cluster"]
    # Measured: auto picks k=4; NMI 0.982 for the embeddings vs 0.008 for 16x16 raw pixels.
    assert metrics["k"] == 4
    assert metrics["nmi"] >= 0.9 and metrics["purity"] >= 0.95
    assert metrics["nmi"] >= metrics["raw_pixels_nmi"] + 0.5


def test_search_neighbours_share_the_query_label(demo: tuple[Workspace, dict]) -> None:
    metrics = demo[1]["search"]
    # Measured: precision@10 0.992 over the 88 test queries; 600 vectors get an exact index.
    assert (metrics["index"], metrics["recall_at_k"], metrics["queries"]) == ("Flat", 1.0, 88)
    assert metrics["precision_at_k"] >= 0.95


def augmented_copy(source: Path, target: Path) -> Path:
    """Mirrored, 6% cropped from every side, re-encoded as JPEG quality 75."""
    with Image.open(source) as image:
        image = ImageOps.mirror(image.convert("RGB"))
        w, h = image.size
        image.crop((round(0.06 * w), round(0.06 * h), round(0.94 * w), round(0.94 * h))).save(target, quality=75)
    return target


def test_augmented_copies_find_their_originals_with_imagenet_features(
    demo: tuple[Workspace, dict], shared_weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near-duplicate search needs instance-level features: the pretrained backbone's, not the
    fine-tuned classifier's (it maps every circle close to every other circle)."""
    workspace = Workspace(tmp_path / "copy")
    shutil.copytree(demo[0].root, workspace.root)
    workspace.params = demo[0].params
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    shutil.copy(shared_weights_dir / MOBILENET_FILE, home / "models" / MOBILENET_FILE)
    monkeypatch.setenv("KERAS_HOME", str(home))
    project = workspace.load("embed.source=backbone")
    embed.run(project, "shapes")
    search.run(project, "shapes")
    with open(workspace.root / "data/shapes/ingest/manifest.csv", newline="") as handle:
        test_rows = [row for row in csv.DictReader(handle) if row["split"] == "test"][:40]
    copies = [augmented_copy(workspace.root / "shapes" / row["path"], tmp_path / f"copy_{i}.jpg") for i, row in enumerate(test_rows)]
    answers = search_query.run(project, "shapes", copies, [], 5).answers
    hits = [row["path"] in [n.path for n in answer.neighbours] for row, answer in zip(test_rows, answers, strict=True)]
    # Measured: 30 of 40 copies have their original in the top 5 (23 at rank 1).
    assert sum(hits) >= 24, f"{sum(hits)} of {len(hits)} copies found their original"


@pytest.fixture(scope="module")
def demo_heatmaps(demo: tuple[Workspace, dict]) -> dict:
    """heatmap with the shipped params on the demo model: 10 test images per class plus 4 top losses."""
    return heatmap.run(demo[0].load(), "shapes").metrics


def test_occlusion_points_at_the_shape(demo_heatmaps: dict) -> None:
    # Measured with seed 42 (fill blur): occlusion 0.932 (41 of 44), Grad-CAM 0.955, a random point 0.395.
    assert demo_heatmaps["pointing_images"] == 44
    assert demo_heatmaps["occlusion_pointing_game"] >= 0.8
    assert demo_heatmaps["gradcam_pointing_game"] >= demo_heatmaps["random_pointing_game"] + 0.3


def test_both_methods_beat_a_random_map_on_deletion(demo_heatmaps: dict) -> None:
    # Measured with seed 42 (blur fills): occlusion 0.445, Grad-CAM 0.467, random maps 0.642 (lower is better).
    for method in ("occlusion", "gradcam"):
        assert demo_heatmaps[f"{method}_deletion_auc"] <= demo_heatmaps["random_deletion_auc"] - 0.05, method
