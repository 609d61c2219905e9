"""params.yaml validation: every mistake names its key path and raises ConfigError."""

from __future__ import annotations

import pytest

from dlpipe.core.config import load_project
from dlpipe.core.errors import EXIT_CODES, ConfigError
from tests.conftest import REPO, Workspace


def test_shipped_params_are_valid() -> None:
    project = load_project(REPO / "params.yaml")
    assert set(project.params.datasets) == {"shapes", "sounds", "news", "reviews", "road", "shapes_boxes", "shapes_regions", "triangles"}
    assert {name: spec.task for name, spec in project.params.datasets.items() if spec.task != "classification"} == {
        "road": "regression", "shapes_boxes": "bbox", "shapes_regions": "regions", "triangles": "keypoints"
    }
    assert project.data_dir == REPO / "data"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ingest.val_fraction=fast", r"ingest\.val_fraction: Input should be a valid number, got 'fast'"),
        ("ingest.workers=-1", r"ingest\.workers: Input should be greater than or equal to 0, got -1"),
        ("base.seed=1.5", r"base\.seed: Input should be a valid integer, got 1\.5"),
        ("ingest.wrokers=2", r"ingest\.wrokers: unknown key \(a typo\?\)"),
        ("datasets.image.shapes.task=boxes", r"datasets\.image\.shapes\.task: Input should be 'classification'"),
        ("datasets.image.shapes.modality=audio", r"datasets\.image\.shapes\.modality: the kind it is listed under \(image\) gives"),
        ("datasets.pics={}", r"datasets\.pics: not a kind of dataset; list each dataset under its kind"),
        ("datasets.audio=", r"datasets\.audio: expected dataset names, each with a source \(audio: \{\} when there is none\)"),
        ("datasets.text.reviews.labels=none", r"datasets\.text\.reviews: labelled text needs labels .* goes under datasets\.corpus"),
        ("datasets.corpus.news.labels=csv", r"datasets\.corpus\.news\.labels: a corpus has no labels"),
        ("datasets.corpus.shapes={source: x}", r"datasets\.corpus\.shapes: 'shapes' is listed under two kinds"),
        ("ingest.text.encoding=klingon", r"ingest\.text\.encoding: expected a Python codec name"),
        ("ingest.test_fraction=0.9", r"val_fraction \+ test_fraction must be < 1"),
        ("sample.audio.sample_rates=[100]", r"sample\.audio\.sample_rates: expected sample rates between"),
    ],
)
def test_invalid_value_names_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_project(REPO / "params.yaml", [override])
    assert caught.value.exit_code == 3


def test_missing_section_and_missing_key(workspace: Workspace) -> None:
    del workspace.params["ingest"]
    with pytest.raises(ConfigError, match=r"ingest: missing"):
        workspace.load()
    workspace.params = workspace.params | {"ingest": {"val_fraction": 0.1}}
    with pytest.raises(ConfigError, match=r"ingest\.test_fraction: missing"):
        workspace.load()


def test_set_overrides_are_yaml_typed(workspace: Workspace) -> None:
    workspace.image_dataset()
    project = workspace.load("ingest.workers=3", "sample.audio.sample_rates=[8000, 16000]", "ingest.text.encoding=latin-1")
    assert project.params.ingest.workers == 3
    assert project.params.sample.audio.sample_rates == [8000, 16000]
    assert project.params.ingest.text.encoding == "latin-1"


@pytest.mark.parametrize(
    ("override", "message"),
    [("novalue", "expected section.key=value"), ("nosection.key=1", "no section nosection"), ("base.seed.x=1", "not a section")],
)
def test_malformed_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_project(REPO / "params.yaml", [override])


def test_missing_or_broken_params_file(workspace: Workspace) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_project(workspace.root / "nope.yaml")
    (workspace.root / "bad.yaml").write_text("base: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_project(workspace.root / "bad.yaml")


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="datasets.nope") as caught:
        load_project(REPO / "params.yaml").dataset("nope")
    assert "shapes" in str(caught.value)


def test_exit_codes_are_distinct_and_documented() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} |" in readme, f"exit code {code} ({meaning}) is not in the README table"


@pytest.mark.parametrize(
    ("data_dir", "source", "message"),
    [
        ("imgs", "imgs", r"source \(.*imgs\) holds base.data_dir"),
        ("imgs/out", "imgs", r"source \(.*imgs\) holds base.data_dir \(.*imgs/out\)"),
        ("data", "data/d", r"overlaps .*data/d, where dlpipe writes the artifacts of dataset 'd'"),
        ("data", "data/d/photos", r"overlaps .*data/d, where dlpipe writes the artifacts of dataset 'd'"),
        ("/", "imgs", r"base.data_dir is a filesystem root"),
    ],
)
def test_data_dir_that_overlaps_a_source_is_refused_before_any_work(workspace: Workspace, data_dir: str, source: str, message: str) -> None:
    (workspace.root / "imgs/a").mkdir(parents=True)
    workspace.params["base"]["data_dir"] = data_dir
    workspace.add_dataset("d", "image", source)
    before = sorted(workspace.root.rglob("*"))
    with pytest.raises(ConfigError, match=message):
        load_project(workspace.params_path)
    assert sorted(workspace.root.rglob("*")) == before


def test_sources_beside_the_artifact_folders_are_allowed(workspace: Workspace) -> None:
    # The demo's layout: generated sources under data/sample, artifacts under data/<dataset>.
    workspace.add_dataset("shapes", "image", "data/sample/shapes")
    workspace.add_dataset("corpus", "text", "corpus.txt")
    assert load_project(workspace.params_path).dataset("shapes").source == "data/sample/shapes"


def test_heatmap_grid_auto_costs_the_same_at_every_input_size() -> None:
    from dlpipe.explain.occlusion import patch_starts

    cfg = load_project(REPO / "params.yaml").params.heatmap
    assert (cfg.patch_size, cfg.stride) == ("auto", "auto")
    for size, patch, stride in ((64, 8, 4), (128, 16, 8), (224, 28, 14)):
        resolved = cfg.for_input(size)
        assert (resolved.patch_size, resolved.stride) == (patch, stride)
        assert len(patch_starts(size, patch, stride)) == 15  # 15 x 15 occluded copies per image
    assert cfg.model_copy(update={"patch_size": 5}).for_input(224).stride == 2  # a fixed patch: auto stride follows it
