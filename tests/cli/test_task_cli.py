"""Regression and box models through the command line: predict (values, pixels, drawings), embed, cluster,
search and heatmap, and each wrong pairing of model and consumer refused with its exit code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.core.config import SampleImagesConfig, SampleSceneConfig
from dlpipe.data.sample import generate_images
from dlpipe.data.sample_scenes import generate_road
from dlpipe.stages import finetune, ingest
from tests.conftest import Workspace, tree_digest

TINY = {"image_size": 32, "head_epochs": 6}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A road (regression, no labels) and a shapes (bbox, labelled) dataset, each with a briefly trained model."""
    root = tmp_path_factory.mktemp("task_cli")
    generate_road(root / "src" / "road", SampleSceneConfig(count=60, size=48), seed=3)
    generate_images(root / "src" / "shapes", SampleImagesConfig(per_class=15, size=48, jpeg_fraction=0.5), seed=3)
    workspace = Workspace(root)
    workspace.params["datasets"] = {
        "road": {
            "modality": "image",
            "task": "regression",
            "source": "src/road/steering.csv",
            "targets": {"columns": ["steering"], "flip_negate": ["steering"]},
        },
        "boxes": {"modality": "image", "task": "bbox", "source": "src/shapes/boxes.csv"},
        "shapes": {"modality": "image", "source": "src/shapes"},
    }
    finetune_params = workspace.params["finetune"]
    finetune_params["backbone"]["image_size"] = TINY["image_size"]
    finetune_params["head_epochs"] = TINY["head_epochs"]
    finetune_params["augment"]["rotation"] = 0.0
    workspace.params.update({"cluster": {**workspace.params["cluster"], "k": 2}})
    workspace.params["heatmap"].update({"per_class": 1, "top_losses": 2})
    workspace.params["search"].update({"k": 3, "examples": 2})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        loaded = workspace.load()
        for name in ("road", "boxes", "shapes"):
            ingest.run(loaded, name)
        for name in ("road", "boxes"):
            finetune.run(loaded, name)
    return workspace


def invoke(project: Workspace, *argv: str):
    return CliRunner().invoke(app, [*argv, "--params", str(project.params_path)])


def test_predict_states_values_and_boxes_in_pixels_and_draws_them(project: Workspace, tmp_path: Path) -> None:
    road = project.root / "src" / "road"
    result = invoke(project, "predict", str(road / "road_0001.png"), "-d", "road", "--json")
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    assert set(answer["values"]) == {"steering"} and isinstance(answer["values"]["steering"], float)

    shapes = project.root / "src" / "shapes" / "circle"
    drawn = tmp_path / "drawn"
    result = invoke(project, "predict", str(shapes), "-d", "boxes", "--out", str(drawn))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((drawn / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == 15 and list(rows[0])[:5] == ["path", "x_min", "y_min", "x_max", "y_max"]
    for row in rows:  # corners ordered and inside the 48 px image
        x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    pictures = sorted(drawn.glob("*.png"))
    assert len(pictures) == 15 and Image.open(pictures[0]).size == (48, 48)
    # The drawing differs from the input: the box is on it.
    original = Image.open(shapes / Path(rows[0]["path"]).name).convert("RGB")
    assert Image.open(drawn / f"{Path(rows[0]['path']).stem}.png").convert("RGB").tobytes() != original.tobytes()


def test_embed_cluster_search_heatmap_on_a_model_without_labels(project: Workspace) -> None:
    data = project.root / "data" / "road"
    source = tree_digest(project.root / "src" / "road")
    for argv in (["embed"], ["cluster"], ["search", "build"], ["heatmap"]):
        result = invoke(project, *argv, "-d", "road")
        assert result.exit_code == 0, (argv, result.output)
    assert tree_digest(project.root / "src" / "road") == source  # the user's images are only read
    assert "no labels" in " ".join(invoke(project, "cluster", "-d", "road").output.split())
    cluster = json.loads((data / "metrics" / "cluster.json").read_text(encoding="utf-8"))
    assert "nmi" not in cluster and cluster["k"] == 2
    search = json.loads((data / "metrics" / "search.json").read_text(encoding="utf-8"))
    assert "precision_at_k" not in search and search["recall_at_k"] == 1.0
    heatmap = json.loads((data / "metrics" / "heatmap.json").read_text(encoding="utf-8"))
    record = json.loads((data / "heatmap" / "heatmap.json").read_text(encoding="utf-8"))
    assert heatmap["images"] == 2 and record["score"].startswith("minus the change of the value")


def test_a_model_of_another_task_is_refused_and_nothing_is_lost(project: Workspace) -> None:
    # The bbox model copied over the classification dataset's model folder: every consumer refuses it.
    target = project.root / "data" / "shapes" / "model"
    shutil.copytree(project.root / "data" / "boxes" / "model", target, dirs_exist_ok=True)

    def artifacts() -> dict:
        return {k: v for k, v in tree_digest(project.root / "data").items() if not k.endswith(".lock")}  # locks are made empty

    before = artifacts()
    for argv in (["embed"], ["heatmap"]):
        result = invoke(project, *argv, "-d", "shapes")
        assert result.exit_code == 5, result.output
        assert "is a bbox model, and dataset 'shapes' is task classification" in " ".join(result.output.split())
    result = invoke(project, "heatmap", "-d", "boxes", "--class", "circle")
    assert result.exit_code == 3 and "it has no classes" in " ".join(result.output.split()), result.output
    assert artifacts() == before
    shutil.rmtree(target)


def test_a_task_needs_images_and_the_named_columns(project: Workspace, tmp_path: Path) -> None:
    from dlpipe.core.config import group_datasets

    params = json.loads(json.dumps(project.params))
    words = {"modality": "text", "source": "corpus.txt", "task": "regression", "targets": {"columns": ["a"]}}
    params["datasets"] = group_datasets({"words": words})
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    result = CliRunner().invoke(app, ["ingest", "--params", str(path)])
    assert result.exit_code == 3 and "task: regression needs images" in " ".join(result.output.split()), result.output
