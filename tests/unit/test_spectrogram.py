"""spectrogram: log-mel values checked independently, windows, formats, bad inputs, the image-style manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import librosa
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dlpipe.audio.spectrogram import clip_windows, frames_per_window, mel_power, to_db, window_starts
from dlpipe.cli.app import app
from dlpipe.core.config import SpectrogramConfig
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.data.manifest import load_image_manifest
from dlpipe.stages import ingest, spectrogram
from tests.conftest import Workspace, shipped_params, tone, tree_digest, write_wav

RATE = 16_000


def shipped(**changes: object) -> SpectrogramConfig:
    return SpectrogramConfig.model_validate(shipped_params()["spectrogram"] | changes)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- the transform ----------------------------------------------------------------------------


def numpy_log_mel(samples: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """The same log-mel window computed without librosa's STFT: numpy framing, periodic Hann, rfft."""
    n = np.arange(cfg.n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)
    count = 1 + (samples.size - cfg.n_fft) // cfg.hop_length
    frames = np.stack([samples[i * cfg.hop_length : i * cfg.hop_length + cfg.n_fft] for i in range(count)])
    power = np.abs(np.fft.rfft(frames * hann, axis=1)).T ** 2
    mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax) @ power
    db = 10 * np.log10(np.maximum(mel, 1e-10) / mel.max())
    return np.maximum(db, db.max() - cfg.top_db)


def test_a_tone_matches_an_independent_stft_and_peaks_in_its_mel_band() -> None:
    cfg = shipped()
    t = np.arange(RATE) / RATE
    samples = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    (window,) = clip_windows(samples, cfg)
    expected = numpy_log_mel(samples.astype(np.float64), cfg)
    assert window.db.shape == expected.shape == (64, frames_per_window(cfg))
    np.testing.assert_allclose(window.db, expected, atol=0.05)
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    peak_band = int(window.db.mean(axis=1).argmax())
    assert peak_band == int(np.abs(centres - 1000).argmin())
    assert abs(centres[peak_band] - 1000) < 60


@pytest.mark.parametrize("reference", ["peak", "full_scale"])
def test_silence_is_finite_and_at_the_floor(reference: str) -> None:
    cfg = shipped(reference=reference)
    (window,) = clip_windows(np.zeros(RATE, dtype=np.float32), cfg)
    assert np.isfinite(window.db).all()
    assert np.ptp(window.db) == 0
    if reference == "peak":
        assert window.db.max() == -cfg.top_db


def test_full_scale_reference_puts_a_full_scale_tone_at_0_db() -> None:
    cfg = shipped(reference="full_scale")
    t = np.arange(RATE) / RATE
    loud = clip_windows(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)[0].db.max()
    quiet = clip_windows((0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), cfg)[0].db.max()
    assert abs(loud) < 0.5 and abs(quiet - (-20)) < 0.5


def test_windows_cover_a_long_clip_and_the_last_is_aligned_to_its_end() -> None:
    cfg = shipped()
    assert window_starts(100, 59, 31) == [0, 31, 41]
    assert window_starts(90, 59, 31) == [0, 31]
    assert window_starts(58, 59, 31) == []
    windows = clip_windows(np.random.default_rng(0).normal(0, 0.1, int(2.3 * RATE)).astype(np.float32), cfg)
    assert [w.start_seconds for w in windows] == [0.0, 0.496, 0.992, 1.296]
    assert windows[-1].end_seconds == pytest.approx(2.288, abs=0.001)  # the last whole frame ends within 16 ms of 2.3 s


def test_short_clips_are_padded_or_left_out_as_the_param_says() -> None:
    blip = np.ones(100, dtype=np.float32) * 0.1  # shorter than one FFT frame
    (padded,) = clip_windows(blip, shipped(short_clips="pad"))
    assert np.isfinite(padded.db).all()
    assert clip_windows(blip, shipped(short_clips="reject")) == []


def test_mel_power_is_never_negative() -> None:
    noise = np.random.default_rng(1).normal(0, 0.3, RATE).astype(np.float32)
    power = mel_power(noise, shipped())
    assert (power >= 0).all() and np.isfinite(to_db(power, shipped())).all()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"fmax": 9000}, "fmax"),
        ({"win_length": 2048}, "win_length"),
        ({"window_seconds": 0.01}, "window_seconds"),
        ({"db_min": 0}, "db_min"),
    ],
)
def test_inconsistent_params_are_config_errors(workspace: Workspace, change: dict, key: str) -> None:
    workspace.params["spectrogram"].update(change)
    workspace.audio_dataset()
    with pytest.raises(ConfigError, match=key):
        workspace.load()


# --- the stage --------------------------------------------------------------------------------


def audio_project(workspace: Workspace, **spectrogram_params: object):
    """A tiny audio dataset with every format the issue lists, ingested."""
    workspace.params["ingest"]["audio"]["min_duration"] = 0.0
    workspace.params["spectrogram"].update({"workers": 1, **spectrogram_params})
    source = workspace.audio_dataset(per_class=4)
    write_wav(source / "low/stereo_96k.wav", tone(0.7, 96_000, 300, channels=2), 96_000, "PCM_24")
    write_wav(source / "low/eight_bit.wav", tone(0.5, 11_025, 350), 11_025, "PCM_U8")
    write_wav(source / "high/twenty_four_bit.wav", tone(0.6, 44_100, 900), 44_100, "PCM_24")
    write_wav(source / "high/silent.wav", np.zeros(8000), 8000)
    write_wav(source / "high/long.wav", tone(2.3, 22_050, 1000), 22_050, "FLOAT")
    write_wav(source / "low/blip.wav", tone(100 / 8000, 8000, 250), 8000)  # shorter than one FFT frame
    project = workspace.load()
    ingest.run(project, "clips")
    return project


def test_stage_writes_an_image_dataset_that_image_stages_read(workspace: Workspace) -> None:
    project = audio_project(workspace, save_npy=True)
    result = spectrogram.run(project, "clips")
    out = workspace.root / "data/clips/spectrogram"
    rows = rows_of(out / "manifest.csv")
    clips = {row["path"]: row for row in rows_of(workspace.root / "data/clips/ingest/manifest.csv")}
    per_clip = {path: [row for row in rows if row["clip"] == path] for path in clips}
    # Every clip shorter than 1 s is padded to one window; 2.3 s gives windows at 0, 0.5, 1.0 and the end.
    assert {path: len(windows) for path, windows in per_clip.items() if len(windows) != 1} == {"high/long.wav": 4}
    assert result.clips == 14 and result.windows == len(rows) == 17 and result.rejected == 0
    for path, windows in per_clip.items():
        assert {w["split"] for w in windows} == {clips[path]["split"]}  # windows never straddle splits
        assert {w["label"] for w in windows} == {clips[path]["label"]}
    for row in rows:
        with Image.open(out / row["path"]) as image:
            assert (image.size, image.mode) == ((59, 64), "L")
        assert (row["width"], row["height"], row["format"]) == ("59", "64", "PNG")
    (silent_row,) = per_clip["high/silent.wav"]
    silent = np.load(out / silent_row["path"].replace("images/", "arrays/").replace(".png", ".npy"))
    assert np.isfinite(silent).all() and (silent == -80).all()
    assert silent_row["path"] == f"images/high/silent_{clips['high/silent.wav']['sha256'][:8]}_w000.png"
    with Image.open(out / silent_row["path"]) as image:
        assert np.asarray(image).max() == 0
    assert (out / "class_means.png").stat().st_size > 10_000
    sidecar = json.loads((out / "spectrogram.json").read_text())
    assert (sidecar["db_min"], sidecar["db_max"], sidecar["db_range_from"]) == (-80.0, 0.0, "params")
    manifest = load_image_manifest(project, "clips")
    assert (manifest.modality, len(manifest.rows), manifest.source_root) == ("image", 17, out)
    assert all(path.is_file() for path in manifest.paths())


def test_sixteen_bit_images_decode_through_the_image_pipeline(workspace: Workspace) -> None:
    from dlpipe.models.inputs import load_image_array

    project = audio_project(workspace, bit_depth=16)
    spectrogram.run(project, "clips")
    manifest = load_image_manifest(project, "clips")
    row = manifest.rows[0]
    with Image.open(manifest.resolve(row["path"])) as image:
        assert image.mode == "I;16" and np.asarray(image).max() > 255
    assert load_image_array(manifest.resolve(row["path"]), 32).shape == (32, 32, 3)


def test_fitted_scaling_comes_from_the_training_split_only(workspace: Workspace) -> None:
    from dlpipe.data.media.audio import load_mono

    project = audio_project(workspace, scaling="fit", reference="full_scale")
    spectrogram.run(project, "clips")
    cfg = project.params.spectrogram
    train = [row for row in rows_of(workspace.root / "data/clips/ingest/manifest.csv") if row["split"] == "train"]
    values = np.concatenate(
        [
            window.db.ravel()
            for row in train
            for window in clip_windows(load_mono((workspace.root / "src/clips" / row["path"]).read_bytes(), RATE).samples, cfg)
        ]
    )
    sidecar = json.loads((workspace.root / "data/clips/spectrogram/spectrogram.json").read_text())
    assert sidecar["db_min"] == pytest.approx(np.percentile(values, 0.5), abs=0.15)
    assert sidecar["db_max"] == pytest.approx(np.percentile(values, 99.5), abs=0.15)


def test_rejected_short_clips_are_listed(workspace: Workspace) -> None:
    workspace.params["spectrogram"]["max_reject_fraction"] = 1.0
    project = audio_project(workspace, short_clips="reject", window_seconds=0.25, window_hop_seconds=0.25)
    result = spectrogram.run(project, "clips")
    rejected = rows_of(workspace.root / "data/clips/spectrogram/rejected.csv")
    assert [(row["path"], row["reason"]) for row in rejected] == [("low/blip.wav", "too_short")]
    assert result.rejected == 1 and result.metrics["rejected"] == 1


def test_too_many_short_clips_fail_and_keep_the_earlier_output(workspace: Workspace) -> None:
    project = audio_project(workspace)
    spectrogram.run(project, "clips")
    before = tree_digest(workspace.root / "data/clips/spectrogram")
    strict = workspace.load("spectrogram.short_clips=reject")
    with pytest.raises(InputDataError, match="too_short") as caught:
        spectrogram.run(strict, "clips")
    assert caught.value.exit_code == 4
    assert tree_digest(workspace.root / "data/clips/spectrogram") == before


def test_a_clip_changed_since_ingest_is_an_artifact_error(workspace: Workspace) -> None:
    project = audio_project(workspace)
    spectrogram.run(project, "clips")
    before = tree_digest(workspace.root / "data/clips/spectrogram")
    write_wav(workspace.root / "src/clips/low/low_0.wav", tone(0.3, 8000, 999), 8000)
    with pytest.raises(ArtifactError, match=r"low/low_0\.wav.*sha256") as caught:
        spectrogram.run(project, "clips")
    assert caught.value.exit_code == 5
    assert tree_digest(workspace.root / "data/clips/spectrogram") == before


def test_image_stages_refuse_a_spectrogram_of_an_earlier_ingest(workspace: Workspace) -> None:
    project = audio_project(workspace)
    with pytest.raises(ArtifactError, match="spectrogram"):
        load_image_manifest(project, "clips")  # not made yet
    spectrogram.run(project, "clips")
    write_wav(workspace.root / "src/clips/low/extra.wav", tone(0.4, 8000, 333), 8000)
    ingest.run(project, "clips")
    with pytest.raises(ArtifactError, match="earlier ingest"):
        load_image_manifest(project, "clips")


def test_spectrogram_of_an_image_dataset_is_refused(workspace: Workspace) -> None:
    workspace.image_dataset()
    project = workspace.load()
    ingest.run(project, "imgs")
    with pytest.raises(ConfigError, match="audio") as caught:
        spectrogram.run(project, "imgs")
    assert caught.value.exit_code == 3


def test_cli_runs_the_stage_and_reports_exit_codes(workspace: Workspace) -> None:
    audio_project(workspace)
    workspace.image_dataset()
    runner = CliRunner()
    ok = runner.invoke(app, ["spectrogram", "--dataset", "clips", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)[0]["windows"] == 17
    assert runner.invoke(app, ["spectrogram", "--dataset", "imgs"]).exit_code == 3


# --- per-dataset overrides --------------------------------------------------------------------


def test_dataset_overrides_apply_to_that_dataset_only(workspace: Workspace) -> None:
    workspace.audio_dataset()
    workspace.image_dataset()
    workspace.params["datasets"]["clips"]["overrides"] = {"finetune.augment.flip": False, "spectrogram.n_mels": 32}
    project = workspace.load()
    assert project.params.finetune.augment.flip is True
    audio = project.for_dataset("clips")
    assert (audio.params.finetune.augment.flip, audio.params.spectrogram.n_mels) == (False, 32)
    assert project.for_dataset("imgs") is project


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"finetune.augment.flipp": False}, "unknown key"),
        ({"base.seed": 1}, "stage section"),
        ({"finetune.dropout": 2.0}, "finetune.dropout"),
        ({"nosuch.key": 1}, "stage section"),
    ],
)
def test_bad_dataset_overrides_are_config_errors(workspace: Workspace, overrides: dict, message: str) -> None:
    workspace.audio_dataset()
    workspace.params["datasets"]["clips"]["overrides"] = overrides
    with pytest.raises(ConfigError, match=message):
        workspace.load()


def test_clips_sharing_a_name_in_nested_folders_get_distinct_images(workspace: Workspace) -> None:
    workspace.params["spectrogram"]["workers"] = 1
    source = workspace.audio_dataset(per_class=2)
    write_wav(source / "low/a/same.wav", tone(0.3, 8000, 210), 8000)
    write_wav(source / "low/b/same.wav", tone(0.3, 8000, 230), 8000)
    project = workspace.load()
    ingest.run(project, "clips")
    spectrogram.run(project, "clips")
    rows = rows_of(workspace.root / "data/clips/spectrogram/manifest.csv")
    same = [row["path"] for row in rows if row["clip"] in ("low/a/same.wav", "low/b/same.wav")]
    assert len(same) == len(set(same)) == 2
