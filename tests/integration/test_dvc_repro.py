"""`dvc repro` of the shipped pipeline in a scratch copy of the project (small sample sizes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlpipe.core.config import group_datasets
from tests.conftest import REPO, shipped_params

pytestmark = pytest.mark.integration
TASKS_LEFT_OUT = ("road", "shapes_regions", "triangles")


def write_params(root: Path, params: dict[str, Any]) -> None:
    """params.yaml from a dict whose datasets are flat (name -> entry with its modality), as shipped_params gives them."""
    document = params | {"datasets": group_datasets(params["datasets"])}
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def run(cwd: Path, *argv: str) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, f"{' '.join(argv)} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "dlpipe", root / "dlpipe", ignore=shutil.ignore_patterns("__pycache__"))
    params = shipped_params()
    params["sample"]["images"].update(per_class=8, size=48)
    params["sample"]["audio"].update(per_class=5, duration=0.5)
    params["sample"]["road"].update(count=12, size=48)
    params["sample"]["triangles"].update(count=12, size=48)
    # Of the task datasets, shapes_boxes stands for all four (the same stages, one head each; tests/unit trains them all).
    # They are left out of params.yaml alone: dvc.yaml loops over what params.yaml lists.
    for name in TASKS_LEFT_OUT:
        del params["datasets"][name]
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params["finetune"].update(head_epochs=2, batch_size=8)
    params["finetune"]["backbone"]["image_size"] = 32
    write_params(root, params)
    (root / ".gitignore").write_text("/data/\n", encoding="utf-8")
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    # A real project has commits (DVCLive reads the current revision).
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "project")
    run(root, "dvc", "repro")
    return root


def test_repro_ingests_every_sample_dataset(project: Path) -> None:
    for name, expected in (("shapes", 32), ("sounds", 20), ("news", 1), ("reviews", 200)):
        metrics = json.loads((project / f"data/{name}/metrics/ingest.json").read_text())
        assert metrics["accepted"] == expected and metrics["rejected"] == 0
    news = json.loads((project / "data/news/metrics/ingest.json").read_text())
    assert news["tokens"] == 59890
    finetuned = json.loads((project / "data/shapes/metrics/finetune.json").read_text())
    assert finetuned["epochs"] == 2 and (project / "data/shapes/model/model.keras").is_file()
    embedded = json.loads((project / "data/shapes/metrics/embed.json").read_text())
    assert embedded["count"] == 32
    assert json.loads((project / "data/shapes/embed/embeddings.json").read_text())["source"] == "finetuned"
    clustered = json.loads((project / "data/shapes/metrics/cluster.json").read_text())
    assert clustered["count"] == 32 and "raw_pixels_nmi" in clustered
    assert (project / "data/shapes/cluster/umap.png").is_file()
    searched = json.loads((project / "data/shapes/metrics/search.json").read_text())
    assert (searched["count"], searched["recall_at_k"]) == (32, 1.0)
    assert json.loads((project / "data/shapes/search/index.json").read_text())["factory"] == "Flat"
    assert (project / "data/shapes/search/index.faiss").is_file()
    explained = json.loads((project / "data/shapes/metrics/heatmap.json").read_text())
    assert explained["images"] >= 4 and explained["pointing_images"] == explained["images"]
    assert {f"{method}_deletion_auc" for method in ("occlusion", "gradcam", "random")} <= set(explained)
    heatmaps = project / "data/shapes/heatmap"
    assert (heatmaps / "grid.png").is_file() and len(list((heatmaps / "overlays").glob("*.png"))) == explained["images"]
    assert (heatmaps / "maps/occlusion.npy").is_file() and (heatmaps / "maps/gradcam.npy").is_file()


def test_repro_runs_a_bbox_model_through_every_image_stage(project: Path) -> None:
    finetuned = json.loads((project / "data/shapes_boxes/metrics/finetune.json").read_text())
    assert finetuned["epochs"] == 2 and "test_mean_iou" in finetuned
    assert json.loads((project / "data/shapes_boxes/model/model.json").read_text())["task"] == "bbox"
    assert (project / "data/shapes_boxes/plots/finetune/boxes.png").is_file()
    assert json.loads((project / "data/shapes_boxes/metrics/embed.json").read_text())["count"] == 32
    assert "nmi" in json.loads((project / "data/shapes_boxes/metrics/cluster.json").read_text())  # boxes.csv has labels
    explained = json.loads((project / "data/shapes_boxes/metrics/heatmap.json").read_text())
    record = json.loads((project / "data/shapes_boxes/heatmap/heatmap.json").read_text())
    assert record["score"] == "IoU with the unoccluded box" and explained["pointing_images"] == explained["images"]


def test_repro_runs_the_audio_branch_through_the_image_stages(project: Path) -> None:
    windows = json.loads((project / "data/sounds/metrics/spectrogram.json").read_text())
    # 20 clips of 0.375-0.625 s: each padded to one 1 s window.
    assert (windows["clips"], windows["windows"], windows["rejected"]) == (20, 20, 0)
    assert (project / "data/sounds/spectrogram/class_means.png").is_file()
    finetuned = json.loads((project / "data/sounds/metrics/finetune.json").read_text())
    assert finetuned["epochs"] == 2 and (project / "data/sounds/model/model.keras").is_file()
    assert json.loads((project / "data/sounds/metrics/embed.json").read_text())["count"] == 20
    assert json.loads((project / "data/sounds/metrics/cluster.json").read_text())["count"] == 20
    assert json.loads((project / "data/sounds/metrics/search.json").read_text())["recall_at_k"] == 1.0
    explained = json.loads((project / "data/sounds/metrics/heatmap.json").read_text())
    assert explained["images"] >= 1 and (project / "data/sounds/heatmap/grid.png").is_file()


def test_second_repro_does_nothing_and_status_is_clean(project: Path) -> None:
    lock_before = (project / "dvc.lock").read_text()
    output = run(project, "dvc", "repro")
    assert "Running stage" not in output
    assert (project / "dvc.lock").read_text() == lock_before
    assert "up to date" in run(project, "dvc", "status")


def test_a_param_change_reruns_only_the_stages_that_read_it(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["image"]["min_side"] = 20  # params.yaml as the project has it: datasets by kind
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    output = run(project, "dvc", "repro")
    ran = sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))
    # No image is that small: manifest.csv is unchanged, so finetune and embed (which depend on it) stay cached;
    # the two reports show the new ingest metrics, and the index their summaries.
    assert ran == ["ingest@shapes", "ingest@shapes_boxes", "report@shapes", "report@shapes_boxes", "report_index"]


def test_repro_trains_word_vectors_on_the_sample_corpus(project: Path) -> None:
    metrics = json.loads((project / "data/news/metrics/word2vec.json").read_text())
    assert metrics["vocabulary"] == 1777 and metrics["analogy_questions"] == 19544
    vectors = project / "data/news/word2vec"
    for name in ("vectors.npy", "model.w2v", "vectors.txt", "index.faiss", "words_umap.png", "projector/metadata.tsv"):
        assert (vectors / name).is_file(), name
    assert (project / "data/news/plots/word2vec/live/plots/metrics/train/loss.tsv").is_file()
    # gensim logs nothing to stderr here, so the combined output is the JSON alone
    answer = json.loads(run(project, "dlpipe", "word2vec", "similar", "police", "-n", "3", "--json"))
    assert len(answer["neighbours"]) == 3


def readme_own_data() -> tuple[dict[str, Any], list[str]]:
    """The README's "Using your own data": its first YAML block and the commands that follow it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using your own data", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    after = section.split("```", 2)[2].split("\n\n")[1]  # the indented command block right after the YAML
    commands = [line.strip() for line in after.splitlines() if line.startswith("    ")]
    return yaml.safe_load(block), commands


def test_a_dataset_added_to_params_alone_runs_through_dvc_repro_as_the_readme_says(project: Path) -> None:
    from dlpipe.core.config import SampleImagesConfig
    from dlpipe.data.sample import generate_images

    snippet, commands = readme_own_data()
    assert commands == ["dvc repro"]
    (kind, entries), = snippet["datasets"].items()
    (name, entry), = entries.items()
    # The user's folder: class sub-folders of images, outside the project's data folder.
    pets = project.parent / "pets"
    generate_images(pets, SampleImagesConfig(per_class=8, size=48, jpeg_fraction=0.5), seed=9)
    entry["source"] = str(pets)
    dvc_yaml = (project / "dvc.yaml").read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"][kind][name] = entry
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    output = "".join(run(project, *command.split()) for command in commands)
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    stages = ("ingest", "finetune", "embed", "cluster", "search", "heatmap", "report")
    assert {f"{stage}@{name}" for stage in stages} | {"report_index"} <= ran
    assert (project / "dvc.yaml").read_bytes() == dvc_yaml
    assert json.loads((project / f"data/{name}/metrics/embed.json").read_text())["count"] == 32
    assert (project / f"data/{name}/search/index.faiss").is_file() and (project / f"data/{name}/heatmap/grid.png").is_file()
    index = (project / "data/report/index.html").read_text(encoding="utf-8")
    assert f'href="datasets/{name}/index.html"' in index
    assert "up to date" in run(project, "dvc", "status")
