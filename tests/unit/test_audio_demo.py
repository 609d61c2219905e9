"""The shipped params.yaml on the sample audio: spectrogram windows through the unchanged image stages.

One module-scoped run (sample -> ingest -> spectrogram -> small_cnn -> embed -> cluster -> search ->
heatmap), with the `sounds` dataset's shipped overrides, serves every test here (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.queries import predict
from dlpipe.queries import search as search_query
from dlpipe.stages import cluster, embed, finetune, heatmap, ingest, search, spectrogram
from tests.conftest import Workspace, shipped_params


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, dict]]:
    """The workspace, and every stage's metrics for the sample audio."""
    from dlpipe.data.sample import generate_audio

    workspace = Workspace(tmp_path_factory.mktemp("audio_demo"))
    workspace.params["datasets"] = {"sounds": shipped_params()["datasets"]["sounds"] | {"source": "sounds"}}
    project = workspace.load()
    generate_audio(workspace.root / "sounds", project.params.sample.audio, project.params.base.seed)
    project = project.for_dataset("sounds")
    metrics = {"ingest": ingest.run(project, "sounds").metrics}
    for stage in (spectrogram, finetune, embed, cluster, search, heatmap):
        metrics[stage.STAGE] = stage.run(project, "sounds").metrics
    return workspace, metrics


@pytest.fixture(scope="module")
def sounds(demo: tuple[Workspace, dict[str, dict]]) -> dict[str, dict]:
    return demo[1]


def test_spectrogram_windows_cover_every_clip(sounds: dict[str, dict]) -> None:
    windows = sounds["spectrogram"]
    # 160 clips of 0.75-1.25 s: the shorter ones padded to one 1 s window, the longer ones two.
    assert (windows["clips"], windows["rejected"]) == (160, 0)
    assert windows["windows"] == 235 and (windows["image_height"], windows["image_width"]) == (64, 59)


def test_classifier_on_spectrograms_reaches_90_percent_test_accuracy(sounds: dict[str, dict]) -> None:
    # Measured 1.000 (35 of 35 test windows) with seed 42 and the shipped sounds overrides (no flips or rotations).
    assert sounds["finetune"]["test_accuracy"] >= 0.9


def test_deep_features_of_sounds_cluster_by_class(sounds: dict[str, dict]) -> None:
    metrics = sounds["cluster"]
    assert metrics["nmi"] >= 0.8 and metrics["nmi"] >= metrics["raw_pixels_nmi"] + 0.2


def test_search_and_heatmap_run_on_spectrograms(sounds: dict[str, dict]) -> None:
    assert sounds["search"]["recall_at_k"] == 1.0 and sounds["search"]["precision_at_k"] >= 0.9
    explained = sounds["heatmap"]
    assert explained["images"] >= 20
    assert explained["occlusion_deletion_auc"] < explained["random_deletion_auc"]


def test_predict_takes_audio_clips_and_averages_their_windows(demo: tuple[Workspace, dict[str, dict]]) -> None:
    workspace = demo[0]
    with open(workspace.root / "data/sounds/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    clips = [workspace.root / "sounds" / row["path"] for row in test]
    result = predict.run(workspace.root / "data/sounds/model", clips, k=2)
    right = sum(p.answer.labels[0] == row["label"] for p, row in zip(result.predictions, test, strict=True))
    # Measured: all 24 test clips right (their 35 windows are the finetune test split).
    assert right >= 0.9 * len(test)
    assert sum(p.windows for p in result.predictions) == demo[1]["finetune"]["test_count"]


def test_predict_refuses_a_file_that_is_neither_image_nor_audio(demo: tuple[Workspace, dict[str, dict]], tmp_path: Path) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 10)
    with pytest.raises(InputDataError, match="neither an image") as caught:
        predict.run(demo[0].root / "data/sounds/model", [junk], k=1)
    assert caught.value.exit_code == 4


def test_search_query_takes_audio_clips_and_finds_windows_of_their_class(
    demo: tuple[Workspace, dict[str, dict]], tmp_path: Path
) -> None:
    workspace = demo[0]
    with open(workspace.root / "data/sounds/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    clips = [workspace.root / "sounds" / row["path"] for row in test]
    project = workspace.load().for_dataset("sounds")
    result = search_query.run(project, "sounds", clips, [], k=5, sheet_path=tmp_path / "sheet.png")
    same_label = [n.label == row["label"] for answer, row in zip(result.answers, test, strict=True) for n in answer.neighbours]
    # Measured: every neighbour of every test clip has the clip's label.
    assert sum(same_label) >= 0.9 * len(same_label) and len(same_label) == 5 * len(test)
    assert sum(a.windows for a in result.answers) == demo[1]["finetune"]["test_count"]
    assert (tmp_path / "sheet.png").stat().st_size > 0
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 10)
    with pytest.raises(InputDataError, match="neither an image") as caught:
        search_query.run(project, "sounds", [junk], [], k=5)
    assert caught.value.exit_code == 4 and "audio" in caught.value.hint


def test_a_copied_sounds_model_folder_predicts_wav_files_on_its_own(demo: tuple[Workspace, dict[str, dict]], tmp_path: Path) -> None:
    workspace = demo[0]
    copied = tmp_path / "elsewhere" / "sounds-model"
    shutil.copytree(workspace.root / "data/sounds/model", copied)
    with open(workspace.root / "data/sounds/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    clips = [workspace.root / "sounds" / row["path"] for row in test]
    at_home = predict.run(workspace.root / "data/sounds/model", clips, k=2)
    away = predict.run(copied, clips, k=2)  # no spectrogram folder beside it: model.json says it all
    assert [p.answer.labels for p in away.predictions] == [p.answer.labels for p in at_home.predictions]
    assert [p.windows for p in away.predictions] == [p.windows for p in at_home.predictions]


@pytest.mark.parametrize("damage", ["missing", "params"])
def test_a_model_whose_recorded_transform_is_damaged_is_refused(
    demo: tuple[Workspace, dict[str, dict]], tmp_path: Path, damage: str
) -> None:
    copied = tmp_path / "model"
    shutil.copytree(demo[0].root / "data/sounds/model", copied)
    sidecar = json.loads((copied / "model.json").read_text(encoding="utf-8"))
    if damage == "missing":
        del sidecar["spectrogram"]
    else:
        sidecar["spectrogram"]["params"]["n_mels"] = 3  # below the valid range, and not the recorded image height
    (copied / "model.json").write_text(json.dumps(sidecar), encoding="utf-8")
    clip = next((demo[0].root / "sounds").rglob("*.wav"))
    with pytest.raises(ArtifactError, match="model.json") as caught:
        predict.run(copied, [clip], k=1)
    assert caught.value.exit_code == 5


def test_gru_over_mel_frames_classifies_the_sounds_and_serves_predict_embed_search(
    demo: tuple[Workspace, dict[str, dict]],
) -> None:
    """Last in the module: it replaces the CNN model the tests above read."""
    workspace = demo[0]
    project = workspace.load("finetune.audio_sequence.architecture=gru").for_dataset("sounds")
    result = finetune.run(project, "sounds")
    # Measured 0.914 (32 of 35 test windows); the CNN above measured 1.000. Both are in docs/BENCHMARKS.md.
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    info = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))
    assert info["architecture"] == "gru" and info["preprocessing"] == "mel_frames" and info["spectrogram"] is not None
    with open(workspace.root / "data/sounds/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    clips = [workspace.root / "sounds" / row["path"] for row in test]
    predicted = predict.run(result.model_dir, clips, k=1)
    assert sum(p.answer.labels[0] == row["label"] for p, row in zip(predicted.predictions, test, strict=True)) >= 0.85 * len(test)
    embedded = embed.run(project, "sounds")
    assert embedded.dimension == project.params.finetune.rnn.units
    assert search.run(project, "sounds").metrics["recall_at_k"] >= 0.9
