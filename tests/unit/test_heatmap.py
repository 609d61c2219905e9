"""heatmap on tiny data: occlusion and Grad-CAM maps, the evidence metrics, the stage's outputs and bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.core.artifacts import atomic_write_json, numbers_only, sha256_file
from dlpipe.core.errors import ConfigError, InputDataError
from dlpipe.explain import evidence, gradcam, occlusion
from dlpipe.models.store import load_trained_model
from dlpipe.stages import finetune, heatmap
from tests.conftest import REPO, Workspace, tree_digest
from tests.unit.test_image_models import TINY, tiny_shapes

# The tiny model sees 32 px: patches of 8 every 4 px give 7 x 7 = 49 occluded copies per image.
HEATMAP = ("heatmap.per_class=2", "heatmap.top_losses=2")


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, heatmap.Result]:
    """A tiny fine-tuned project and one heatmap run on it (read-only for the tests below)."""
    workspace = Workspace(tmp_path_factory.mktemp("heatmap"))
    workspace.params["heatmap"].update(patch_size=8, stride=4)  # 7 x 7 copies of the 32 px input (auto would make 15 x 15)
    tiny_shapes(workspace)
    finetune.run(workspace.load(*TINY), "shapes")
    return workspace, heatmap.run(workspace.load(*TINY, *HEATMAP), "shapes")


def quadrant_model(size: int = 8) -> keras.Model:
    """p(class 0) rises with the brightness of the top-left quadrant and ignores every other pixel."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Cropping2D(((0, size // 2), (0, size // 2)))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("predictions").set_weights([np.array([[0.002, -0.002]] * 3, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def test_patch_positions_cover_the_image_to_its_edge() -> None:
    assert occlusion.patch_starts(10, 4, 3) == [0, 3, 6]
    assert occlusion.patch_starts(11, 4, 3) == [0, 3, 6, 7]
    masks = occlusion.patch_masks(11, 4, 3)
    assert masks.shape == (16, 11, 11, 1) and masks.sum(axis=0).min() >= 1
    with pytest.raises(ValueError):
        occlusion.patch_starts(8, 9, 1)
    assert occlusion.batch_for(64, 1) == 21  # 1 MiB of 64 x 64 x 3 float32 copies


def test_occlusion_finds_the_only_region_that_matters_and_batching_changes_nothing() -> None:
    model = quadrant_model()
    image = np.full((8, 8, 3), 200.0, np.float32)
    fill = np.zeros_like(image)
    masks = occlusion.patch_masks(8, 2, 2)
    base = float(model(image[None])[0, 0])
    batched = occlusion.occlusion_map(occlusion.make_probe(model, 8, batch=16), image, fill, 0, masks, base)
    one_by_one = occlusion.occlusion_map(occlusion.make_probe(model, 8, batch=1), image, fill, 0, masks, base)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)
    assert (batched[:4, :4] > 1e-3).all()
    assert np.abs(batched[4:, :]).max() < 1e-6 and np.abs(batched[:, 4:]).max() < 1e-6
    assert evidence.peak(batched) in {(1, 1), (1, 2), (2, 1), (2, 2)}  # the plateau's centre, not its corner


def test_deletion_ranks_a_right_map_below_a_wrong_one() -> None:
    model = quadrant_model()
    image = np.full((8, 8, 3), 200.0, np.float32)
    probe = occlusion.make_probe(model, 8, batch=64)
    cells = evidence.cell_masks(8, 2)
    right = np.zeros((8, 8), np.float32)
    right[:4, :4] = 1.0
    curve = evidence.deletion_curve(probe, image, np.zeros_like(image), 0, right, cells)
    wrong = evidence.deletion_curve(probe, image, np.zeros_like(image), 0, 1.0 - right, cells)
    assert curve.shape == (17,) and curve[0] == pytest.approx(wrong[0]) and curve[-1] == pytest.approx(wrong[-1])
    assert evidence.area_under(curve) < evidence.area_under(wrong) - 0.05
    assert evidence.area_under(np.array([1.0, 0.0])) == 0.5


def test_pointing_game_scales_boxes_to_the_model_input() -> None:
    box = evidence.scale_box((48, 0, 96, 48), (96, 96), 64)
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (32, 0, 64, 32)
    heatmap_top_right = np.zeros((64, 64), np.float32)
    heatmap_top_right[10, 50] = 1.0
    assert evidence.pointing_hit(heatmap_top_right, box)
    assert not evidence.pointing_hit(heatmap_top_right.T, box)
    assert box.area_fraction(64) == 0.25


def test_gradcam_finds_the_nested_backbone_and_matches_the_model(explained: tuple[Workspace, heatmap.Result]) -> None:
    model = load_trained_model(explained[0].root / "data/shapes/model").model
    container, layer = gradcam.find_target_layer(model)
    assert container is not model and layer.name == "block4_relu2"
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    # The layer-by-layer walk that exposes the inner feature map computes the model's own output.
    inner = keras.Model(container.inputs, [layer.output, container.outputs[0]])
    features, logits = gradcam.features_and_logits(model, images, container, layer, inner)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), model.predict(images, verbose=0), atol=1e-5)
    assert features.shape == (3, 4, 4, 128)
    maps = gradcam.gradcam_maps(model, images, np.array([0, 1, 2]))
    peaks = maps.max(axis=(1, 2))
    # each map is scaled to its own peak (an all-zero map stays zero)
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and np.all(np.isclose(peaks, 1) | (peaks == 0))
    assert gradcam.find_target_layer(model, "block3_relu2")[1].name == "block3_relu2"
    with pytest.raises(ConfigError, match="block4_relu2"):
        gradcam.find_target_layer(model, "no_such_layer")


def test_gradcam_on_a_keras_applications_backbone() -> None:
    from dlpipe.core.config import load_project
    from dlpipe.models.heads.registry import head_class
    from dlpipe.models.network import build_network

    mobilenet = ("finetune.backbone.name=mobilenet", "finetune.backbone.alpha=0.25", "finetune.backbone.image_size=32")
    cfg = load_project(REPO / "params.yaml", mobilenet).params.finetune  # weights: none, so nothing is downloaded
    model, base = build_network(cfg, head_class("classification")(), 3, seed=0)
    container, layer = gradcam.find_target_layer(model)
    assert (container, layer.name) == (base, "conv_pw_13_relu")
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    maps = gradcam.gradcam_maps(model, images, np.array([0, 2]))
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_stage_writes_overlays_grid_maps_and_evidence(explained: tuple[Workspace, heatmap.Result]) -> None:
    workspace, result = explained
    folder = workspace.root / "data/shapes/heatmap"
    # The tiny test split holds one image per class: all are picked before any top loss.
    assert result.images == 4
    with open(folder / "images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["label"] for row in rows) == ["circle", "square", "star", "triangle"]
    assert all((folder / row["overlay"]).is_file() for row in rows)
    assert all(row["target"] == row["predicted"] for row in rows)
    assert (folder / "grid.png").is_file() and (folder / "deletion.csv").is_file()
    for method in ("occlusion", "gradcam"):
        maps = np.load(folder / "maps" / f"{method}.npy")
        assert maps.shape == (4, 32, 32) and maps.dtype == np.float32 and np.isfinite(maps).all()
    metrics = json.loads((workspace.root / "data/shapes/metrics/heatmap.json").read_text())
    assert metrics == numbers_only(result.metrics) and metrics["pointing_images"] == 4
    assert metrics["occluded_copies_per_image"] == 49
    # (tests/unit/test_demo_quality.py holds the maps to real thresholds on the demo model)
    assert {f"{key}_{score}" for key in ("occlusion", "gradcam", "random") for score in ("deletion_auc", "pointing_game")} <= set(metrics)
    sidecar = json.loads((folder / "heatmap.json").read_text())
    assert sidecar["maps"] == {"occlusion": "maps/occlusion.npy", "gradcam": "maps/gradcam.npy"}


@pytest.fixture
def copy(explained: tuple[Workspace, heatmap.Result], tmp_path: Path) -> Workspace:
    """A writable copy of the explained project."""
    workspace = Workspace(tmp_path / "copy")
    shutil.copytree(explained[0].root, workspace.root)
    workspace.params = explained[0].params
    return workspace


def artifacts(workspace: Workspace) -> dict[str, dict]:
    """Digests of the earlier outputs a failed run must leave alone (the lock file is not one)."""
    data = workspace.root / "data/shapes"
    return {name: tree_digest(data / name) for name in ("ingest", "model", "heatmap", "metrics")}


def invoke(workspace: Workspace, *argv: str) -> tuple[int, str]:
    params = str(workspace.write_params())
    sets = [item for override in (*TINY, *HEATMAP) for item in ("--set", override)]
    result = CliRunner().invoke(app, ["heatmap", *argv, "--params", params, *sets])
    return result.exit_code, result.output


def test_given_paths_and_a_named_class(copy: Workspace) -> None:
    image = min((copy.root / "shapes/circle").iterdir())
    code, output = invoke(copy, str(image), "--class", "star", "--dataset", "shapes", "--json")
    assert code == 0, output
    with open(copy.root / "data/shapes/heatmap/images.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["label"], row["target"]) for row in rows] == [("circle", "star")]


@pytest.mark.parametrize(
    ("argv", "error", "words"),
    [
        (("--set", "heatmap.patch_size=40"), ConfigError, "heatmap.patch_size: 40 is larger"),
        (("--set", "heatmap.stride=0"), ConfigError, "heatmap.stride"),
        (("--class", "hexagon"), ConfigError, "circle, square, star, triangle"),
        (("--set", "heatmap.gradcam_layer=nope"), ConfigError, "no layer named 'nope'"),
        (("BROKEN",), InputDataError, "cannot explain"),
    ],
)
def test_bad_inputs_fail_with_their_exit_code_and_touch_nothing(copy: Workspace, argv: tuple[str, ...], error: type, words: str) -> None:
    broken = copy.root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    before = artifacts(copy)
    code, output = invoke(copy, *(str(broken) if arg == "BROKEN" else arg for arg in argv), "--dataset", "shapes")
    assert code == error.exit_code, output
    assert words in " ".join(output.split())
    assert artifacts(copy) == before


def test_gradcam_on_a_model_without_convolutions_names_occlusion(copy: Workspace) -> None:
    model_dir = copy.root / "data/shapes/model"
    inputs = keras.Input((32, 32, 3), name="image")
    dense = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="predictions")(keras.layers.Flatten()(inputs)))
    dense.save(model_dir / "model.keras")
    sidecar = json.loads((model_dir / "model.json").read_text())
    atomic_write_json(model_dir / "model.json", sidecar | {"model_sha256": sha256_file(model_dir / "model.keras")})
    before = artifacts(copy)
    code, output = invoke(copy, "--dataset", "shapes")
    assert code == ConfigError.exit_code, output
    assert "no convolutional layer" in output and "list only occlusion in heatmap.methods" in " ".join(output.split())
    assert artifacts(copy) == before
    # Occlusion needs no feature map: it explains the same model.
    code, output = invoke(copy, "--dataset", "shapes", "--set", "heatmap.methods=[occlusion]")
    assert code == 0, output
    assert np.load(copy.root / "data/shapes/heatmap/maps/occlusion.npy").shape == (4, 32, 32)
