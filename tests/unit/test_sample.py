"""The demo data generators: determinism, layout, content and atomic output."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from dlpipe.core.config import SampleAudioConfig, SampleImagesConfig
from dlpipe.core.errors import DependencyError
from dlpipe.data import sample

IMAGES = SampleImagesConfig(per_class=3, size=48, jpeg_fraction=0.5)
AUDIO = SampleAudioConfig(per_class=3, duration=0.3, sample_rates=[8000, 16000])


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_boxes(folder: Path) -> list[dict[str, str]]:
    with open(folder / "boxes.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def gensim_corpus() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None:
        pytest.skip("gensim is not installed")
    return Path(spec.submodule_search_locations[0], "test", "test_data", "lee_background.cor")


# ---------------------------------------------------------------- determinism


MAKERS = {
    "images": lambda out, seed: sample.generate_images(out, IMAGES, seed),
    "audio": lambda out, seed: sample.generate_audio(out, AUDIO, seed),
    "text": lambda out, seed: sample.generate_text(out),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_same_seed_gives_byte_identical_trees(tmp_path, kind):
    if kind == "text":
        gensim_corpus()
    MAKERS[kind](tmp_path / "a", 7)
    MAKERS[kind](tmp_path / "b", 7)
    first, second = tree_hashes(tmp_path / "a"), tree_hashes(tmp_path / "b")
    assert first and first == second


def test_different_seed_gives_different_images(tmp_path):
    sample.generate_images(tmp_path / "a", IMAGES, 1)
    sample.generate_images(tmp_path / "b", IMAGES, 2)
    first, second = tree_hashes(tmp_path / "a"), tree_hashes(tmp_path / "b")
    shared = first.keys() & second.keys()
    assert all(first[name] != second[name] for name in shared if name != "boxes.csv")
    assert first != second


def test_different_seed_gives_different_audio(tmp_path):
    sample.generate_audio(tmp_path / "a", AUDIO, 1)
    sample.generate_audio(tmp_path / "b", AUDIO, 2)
    assert tree_hashes(tmp_path / "a") != tree_hashes(tmp_path / "b")


def test_a_file_does_not_depend_on_how_many_are_made(tmp_path):
    sample.generate_images(tmp_path / "few", IMAGES, 5)
    sample.generate_images(tmp_path / "more", IMAGES.model_copy(update={"per_class": 5}), 5)
    few, more = tree_hashes(tmp_path / "few"), tree_hashes(tmp_path / "more")
    assert all(more[name] == digest for name, digest in few.items() if name != "boxes.csv")


# ---------------------------------------------------------------- images


def test_images_layout_and_counts(tmp_path):
    out = tmp_path / "images"
    result = sample.generate_images(out, IMAGES, 0)
    assert result == sample.SampleResult(
        "images", out, 12, {"circle": 3, "square": 3, "triangle": 3, "star": 3}
    )
    for label in sample.IMAGE_CLASSES:
        names = sorted(path.name for path in (out / label).iterdir())
        assert [name.rsplit(".", 1)[0] for name in names] == [f"{label}_{i:04d}" for i in (1, 2, 3)]
    assert sorted(path.name for path in out.iterdir()) == sorted([*sample.IMAGE_CLASSES, "boxes.csv"])


def test_images_mix_png_and_jpeg_with_matching_content(tmp_path):
    out = tmp_path / "images"
    sample.generate_images(out, IMAGES, 0)
    formats = {}
    for path in out.rglob("*.*"):
        if path.suffix in (".png", ".jpg"):
            with Image.open(path) as image:
                assert image.size == (48, 48) and image.mode == "RGB"
                formats[path.suffix] = image.format
    assert formats == {".png": "PNG", ".jpg": "JPEG"}


def test_jpeg_fraction_extremes(tmp_path):
    sample.generate_images(tmp_path / "png", IMAGES.model_copy(update={"jpeg_fraction": 0.0}), 0)
    sample.generate_images(tmp_path / "jpg", IMAGES.model_copy(update={"jpeg_fraction": 1.0}), 0)
    assert {path.suffix for path in (tmp_path / "png").rglob("*_*.*")} == {".png"}
    assert {path.suffix for path in (tmp_path / "jpg").rglob("*_*.*")} == {".jpg"}


def test_boxes_match_files_and_enclose_a_visible_shape(tmp_path):
    out = tmp_path / "images"
    sample.generate_images(out, IMAGES.model_copy(update={"per_class": 6}), 3)
    rows = read_boxes(out)
    files = sorted(path.relative_to(out).as_posix() for path in out.rglob("*_*.*"))
    assert sorted(row["path"] for row in rows) == files
    for row in rows:
        assert row["path"].startswith(row["label"] + "/")
        x0, y0, x1, y1 = (int(row[key]) for key in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        # Shapes span roughly 45-85% of the side (a triangle or star spans less than its circle).
        assert 0.4 * 48 <= max(x1 - x0, y1 - y0) <= 0.9 * 48
        with Image.open(out / row["path"]) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        inside = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        # The local background: a 2-pixel band around the box (shapes keep that margin).
        ring = np.zeros((48, 48), dtype=bool)
        ring[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
        ring[y0:y1, x0:x1] = False
        around = pixels[ring].mean(axis=0)
        assert np.linalg.norm(inside - around) > 15, row
        # The box is tight: each side's two outermost pixel lines hold clear shape pixels
        # (one line alone may hold only a sliver of an antialiased tip).
        sides = (
            pixels[y0 : y0 + 2, x0:x1],
            pixels[y1 - 2 : y1, x0:x1],
            pixels[y0:y1, x0 : x0 + 2],
            pixels[y0:y1, x1 - 2 : x1],
        )
        for edge in sides:
            assert np.linalg.norm(edge.reshape(-1, 3) - around, axis=1).max() > 25, row


# ---------------------------------------------------------------- audio


def test_audio_layout_counts_and_content(tmp_path):
    out = tmp_path / "audio"
    cfg = AUDIO.model_copy(update={"per_class": 6})
    result = sample.generate_audio(out, cfg, 0)
    assert result.kind == "audio" and result.out == out and result.files == 24
    assert result.classes == {label: 6 for label in sample.AUDIO_CLASSES}
    rates, channels, subtypes = set(), set(), set()
    for label in sample.AUDIO_CLASSES:
        paths = sorted((out / label).iterdir())
        assert [path.name for path in paths] == [f"{label}_{i:04d}.wav" for i in range(1, 7)]
        for path in paths:
            info = soundfile.info(path)
            samples, rate = soundfile.read(path, always_2d=True)
            assert info.format == "WAV" and rate in (8000, 16000)
            assert 0.75 * 0.3 <= info.duration <= 1.25 * 0.3
            assert np.isfinite(samples).all() and 0 < np.abs(samples).max() < 1
            rates.add(rate)
            channels.add(info.channels)
            subtypes.add(info.subtype)
    assert rates == {8000, 16000}
    assert channels == {1, 2}
    assert "PCM_16" in subtypes and len(subtypes) >= 2


def test_audio_tones_are_narrow_band_and_bursts_are_not(tmp_path):
    out = tmp_path / "audio"
    sample.generate_audio(out, AUDIO, 4)

    def top_bins_share(path: Path) -> float:
        samples, _ = soundfile.read(path, always_2d=True)
        power = np.sort(np.abs(np.fft.rfft(samples[:, 0])) ** 2)[::-1]
        return float(power[:8].sum() / power.sum())

    tone = min(top_bins_share(path) for path in (out / "tone").iterdir())
    burst = max(top_bins_share(path) for path in (out / "noise_burst").iterdir())
    assert tone > 1.2 * burst


# ---------------------------------------------------------------- text


def test_text_is_gensim_corpus_with_origin(tmp_path):
    source = gensim_corpus()
    out = tmp_path / "text"
    result = sample.generate_text(out)
    assert result == sample.SampleResult("text", out, 1, {})
    assert (out / "lee_background.cor").read_bytes() == source.read_bytes()
    origin = (out / "ORIGIN.txt").read_text(encoding="utf-8")
    assert hashlib.sha256(source.read_bytes()).hexdigest() in origin
    assert "Lee" in origin and "LGPL" in origin and "gensim" in origin
    assert sorted(path.name for path in out.iterdir()) == ["ORIGIN.txt", "lee_background.cor"]


def test_text_without_gensim_is_a_dependency_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sample.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError) as caught:
        sample.generate_text(tmp_path / "text")
    assert "pip install gensim" in str(caught.value)
    assert not (tmp_path / "text").exists()


# ---------------------------------------------------------------- atomicity


def test_failed_image_generation_leaves_existing_output_intact(tmp_path, monkeypatch):
    out = tmp_path / "images"
    sample.generate_images(out, IMAGES, 0)
    before = tree_hashes(out)
    real_save = Image.Image.save
    calls = []

    def failing_save(image, *args, **kwargs):  # the fifth image write fails, as a full disk would
        calls.append(args)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        real_save(image, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        sample.generate_images(out, IMAGES, 1)
    assert tree_hashes(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images"]


def test_failed_audio_generation_leaves_existing_output_intact(tmp_path, monkeypatch):
    out = tmp_path / "audio"
    sample.generate_audio(out, AUDIO, 0)
    before = tree_hashes(out)

    def failing_encode(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile.SoundFile, "write", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        sample.generate_audio(out, AUDIO, 1)
    assert tree_hashes(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audio"]


def test_regeneration_replaces_existing_output(tmp_path):
    out = tmp_path / "images"
    sample.generate_images(out, IMAGES, 0)
    (out / "stale.txt").write_text("left over")
    sample.generate_images(out, IMAGES, 0)
    assert not (out / "stale.txt").exists()
