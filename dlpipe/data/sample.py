"""Deterministic demo datasets: coloured shapes, short sounds, a news corpus and labelled movie reviews.

The demo pipeline and the tests need labelled data that ships with the code and
is the same on every machine, so nothing here downloads anything. Images and
audio are synthesised from ``seed``; every file draws from its own generator,
seeded with ``(seed, kind, class, item)``, so a file's content does not depend on
the order of generation or on how many other files are made, and the same seed
gives byte-identical files. Text is copied from the corpora bundled with gensim: the Lee news
corpus (unlabelled, for word2vec) and Pang & Lee's sentence polarity sample (labelled, for text
classification).

Each generator builds its whole output folder with
:func:`~dlpipe.core.artifacts.atomic_dir`: an existing folder is replaced only when the
new one is complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

from dlpipe.core.artifacts import atomic_dir, write_csv
from dlpipe.core.config import SampleAudioConfig, SampleImagesConfig
from dlpipe.core.errors import DependencyError
from dlpipe.core.layout import BOXES_COLUMNS, BOXES_FILE

IMAGE_CLASSES = ("circle", "square", "triangle", "star")
AUDIO_CLASSES = ("tone", "chirp", "noise_burst", "click_train")
TEXT_FILE = "lee_background.cor"
REVIEWS_FILE = "pang_lee_polarity.cor"

_SUPERSAMPLE = 4
_MARGIN = 2  # pixels of background kept between a shape and the image border
_MIN_CONTRAST = 110.0  # RGB distance between a shape and the background behind it
_JPEG_QUALITY = 90
_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
_SUBTYPE_SHARES = (0.6, 0.2, 0.2)
_STEREO_SHARE = 1 / 3
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command; see _encode_wav
_KIND_IMAGES, _KIND_AUDIO = 0, 1
_GENSIM_DATA = ("test", "test_data")


@dataclass(frozen=True)
class SampleResult:
    """What a generator wrote."""

    kind: str  # "images" | "audio" | "text" | "reviews" | "road" | "triangles"
    out: Path  # folder written
    files: int  # data files written (not counting boxes.csv / ORIGIN.txt)
    classes: dict[str, int]  # class name -> file count ({} for text)


def generate_images(out: Path, cfg: SampleImagesConfig, seed: int) -> SampleResult:
    """Write ``out/<class>/<class>_0001.png|jpg`` shape images and ``out/boxes.csv``.

    Four classes (circle, square, triangle, star), ``cfg.per_class`` each: one
    filled shape of random size, position, rotation and colour on a gradient
    background with noise and faint distractor lines. A ``cfg.jpeg_fraction``
    share of the files (chosen per file) is JPEG, the rest PNG. ``boxes.csv``
    holds each shape's tight pixel bounding box (x_max, y_max exclusive).
    """
    out = Path(out)
    width = _index_width(cfg.per_class)
    rows = []
    with atomic_dir(out) as staging:
        for class_index, label in enumerate(IMAGE_CLASSES):
            (staging / label).mkdir()
            for item in range(1, cfg.per_class + 1):
                rng = np.random.default_rng([seed, _KIND_IMAGES, class_index, item])
                pixels, box = _shape_image(rng, label, cfg.size)
                suffix = "jpg" if rng.random() < cfg.jpeg_fraction else "png"
                relative = f"{label}/{label}_{item:0{width}d}.{suffix}"
                save_image(staging / relative, pixels, suffix)
                rows.append(dict(zip(BOXES_COLUMNS, (relative, label, *box), strict=True)))
        write_csv(staging / BOXES_FILE, BOXES_COLUMNS, rows)
    return SampleResult("images", out, len(rows), {label: cfg.per_class for label in IMAGE_CLASSES})


def generate_audio(out: Path, cfg: SampleAudioConfig, seed: int) -> SampleResult:
    """Write ``out/<class>/<class>_0001.wav`` clips of four kinds of sound.

    Classes: ``tone`` (sine), ``chirp`` (rising sweep), ``noise_burst`` and
    ``click_train``, ``cfg.per_class`` each, with a random onset and background
    noise at a random SNR. Per clip the length is ``cfg.duration`` ±25%, the
    sample rate one of ``cfg.sample_rates``, and channels (mono/stereo) and
    subtype (PCM_16/PCM_24/FLOAT) vary. Peaks stay below 1.0.
    """
    out = Path(out)
    width = _index_width(cfg.per_class)
    with atomic_dir(out) as staging:
        for class_index, label in enumerate(AUDIO_CLASSES):
            (staging / label).mkdir()
            for item in range(1, cfg.per_class + 1):
                rng = np.random.default_rng([seed, _KIND_AUDIO, class_index, item])
                rate = int(rng.choice(cfg.sample_rates))
                samples, subtype = _clip(rng, label, cfg.duration, rate)
                path = staging / label / f"{label}_{item:0{width}d}.wav"
                path.write_bytes(_encode_wav(samples, rate, subtype))
    classes = {label: cfg.per_class for label in AUDIO_CLASSES}
    return SampleResult("audio", out, sum(classes.values()), classes)


def generate_text(out: Path) -> SampleResult:
    """Copy gensim's bundled Lee background corpus to ``out/lee_background.cor``.

    Also writes ``out/ORIGIN.txt`` (source file, sha256, gensim version, the
    corpus' citation and license).

    Raises:
        DependencyError: gensim is not installed or lacks the corpus file.
    """
    out = Path(out)
    source, version = _gensim_corpus(TEXT_FILE)
    with atomic_dir(out) as staging:
        shutil.copyfile(source, staging / TEXT_FILE)
        (staging / "ORIGIN.txt").write_text(_origin_note(staging / TEXT_FILE, version, _LEE_ORIGIN), encoding="utf-8")
    return SampleResult("text", out, 1, {})


def generate_reviews(out: Path) -> SampleResult:
    """Copy gensim's bundled sentence-polarity sample (200 fastText lines) to ``out/pang_lee_polarity.cor``.

    Also writes ``out/ORIGIN.txt``. Use it with ``labels: fasttext`` and ``ingest.text.encoding: cp1252``
    (the file is not UTF-8).

    Raises:
        DependencyError: gensim is not installed or lacks the file.
    """
    out = Path(out)
    source, version = _gensim_corpus(REVIEWS_FILE)
    with atomic_dir(out) as staging:
        shutil.copyfile(source, staging / REVIEWS_FILE)
        (staging / "ORIGIN.txt").write_text(_origin_note(staging / REVIEWS_FILE, version, _POLARITY_ORIGIN), encoding="utf-8")
    # The file is cp1252 (an em dash and accented letters): only its ASCII label prefixes are read here.
    lines = source.read_bytes().splitlines()
    labels = [line.split(maxsplit=1)[0].decode("ascii").removeprefix("__label__") for line in lines if line.strip()]
    return SampleResult("reviews", out, 1, {label: labels.count(label) for label in sorted(set(labels))})


def _index_width(per_class: int) -> int:
    """Digits in file numbers: at least 4, more when needed so names sort in order."""
    return max(4, len(str(per_class)))


# ---------------------------------------------------------------- images


def _shape_image(rng: np.random.Generator, label: str, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Render one image; return its uint8 RGB pixels and the shape's box (x0, y0, x1, y1)."""
    background = gradient_background(rng, size)
    for _ in range(rng.integers(0, 3)):
        line = line_coverage(rng, size)
        colour = rng.integers(0, 256, size=3)
        background = blend(background, colour, line * rng.uniform(0.12, 0.3))
    mask, box = _shape_mask(rng, label, size)
    x0, y0, x1, y1 = box
    colour = contrasting_colour(rng, background[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
    image = blend(background, colour, mask)
    image += rng.normal(0, rng.uniform(2, 10), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), box


def gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two random colours in a random direction, as float RGB."""
    start, end = rng.uniform(20, 235, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    t = (along - along.min()) / (along.max() - along.min())
    return start + t[..., None] * (end - start)


def line_coverage(rng: np.random.Generator, size: int) -> np.ndarray:
    """Antialiased coverage (0..1) of one thin line between two random points."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    points = [tuple(p) for p in rng.uniform(0, big, size=(2, 2))]
    ImageDraw.Draw(canvas).line(points, fill=255, width=int(rng.integers(1, 3)) * _SUPERSAMPLE)
    return downsample(canvas, size)


def _shape_mask(rng: np.random.Generator, label: str, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw the shape at 4x, placed fully inside the image; return coverage (0..1) and its box."""
    big = size * _SUPERSAMPLE
    radius = rng.uniform(0.5, 0.85) * big / 2
    vertices = None if label == "circle" else _polygon(rng, label, radius)
    extent = np.array([[-radius, -radius], [radius, radius]]) if vertices is None else vertices
    margin = _MARGIN * _SUPERSAMPLE
    centre = rng.uniform(margin - extent.min(axis=0), big - margin - extent.max(axis=0))
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if vertices is None:
        draw.ellipse((*(centre - radius), *(centre + radius)), fill=255)
    else:
        draw.polygon([tuple(point) for point in centre + vertices], fill=255)
    covered = np.asarray(canvas) > 0
    cols = np.flatnonzero(covered.any(axis=0))
    rows = np.flatnonzero(covered.any(axis=1))
    # A final pixel belongs to the box when any of its sub-pixels is covered.
    box = (
        int(cols[0]) // _SUPERSAMPLE,
        int(rows[0]) // _SUPERSAMPLE,
        int(cols[-1]) // _SUPERSAMPLE + 1,
        int(rows[-1]) // _SUPERSAMPLE + 1,
    )
    return downsample(canvas, size), box


def _polygon(rng: np.random.Generator, label: str, radius: float) -> np.ndarray:
    """Vertex offsets (N x 2) from the centre of a randomly rotated square, triangle or star."""
    if label == "square":
        angles, radii = np.arange(4) * math.pi / 2, np.full(4, radius)
    elif label == "triangle":
        angles, radii = np.arange(3) * 2 * math.pi / 3, np.full(3, radius)
    else:  # star: five points alternating with a random inner radius
        angles = np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
    angles = angles + rng.uniform(0, 2 * math.pi)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def downsample(canvas: Image.Image, size: int) -> np.ndarray:
    """Shrink a 4x coverage canvas with LANCZOS (antialiased edges) to floats in 0..1."""
    small = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64) / 255.0


def blend(image: np.ndarray, colour: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Paint ``colour`` over ``image`` with per-pixel opacity ``coverage``."""
    alpha = coverage[..., None]
    return image * (1 - alpha) + colour * alpha


def contrasting_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A random colour far enough from ``behind`` to stand out (the farthest of 16 if none is)."""
    candidates = rng.integers(0, 256, size=(16, 3)).astype(np.float64)
    distance = np.linalg.norm(candidates - behind, axis=1)
    far_enough = np.flatnonzero(distance >= _MIN_CONTRAST)
    return candidates[far_enough[0] if far_enough.size else int(distance.argmax())]


def save_image(path: Path, pixels: np.ndarray, suffix: str) -> None:
    """Write PNG or JPEG (by suffix); Pillow adds no timestamps, so bytes depend on pixels only."""
    options = {"quality": _JPEG_QUALITY} if suffix == "jpg" else {}
    Image.fromarray(pixels).save(path, **options)


# ---------------------------------------------------------------- audio


def _clip(rng: np.random.Generator, label: str, duration: float, rate: int) -> tuple[np.ndarray, str]:
    """Synthesise one clip (frames x channels, peak < 1) and pick its WAV subtype."""
    length = int(round(duration * rng.uniform(0.75, 1.25) * rate))
    # Rounding must not push a clip outside the promised ±25%.
    length = min(max(length, math.ceil(0.75 * duration * rate)), math.floor(1.25 * duration * rate))
    channels = 2 if rng.random() < _STEREO_SHARE else 1
    subtype = str(rng.choice(_SUBTYPES, p=_SUBTYPE_SHARES))
    event, (start, stop) = _SOUNDS[label](rng, length, rate)
    signal_rms = float(np.sqrt(np.mean(event[start:stop] ** 2)))
    noise_rms = signal_rms / 10 ** (rng.uniform(6, 24) / 20)
    gains = rng.uniform(0.6, 1.0, size=channels)  # stereo clips are panned a little
    frames = event[:, None] * gains + rng.normal(0, noise_rms, size=(length, channels))
    return frames * (rng.uniform(0.3, 0.9) / np.abs(frames).max()), subtype


def _span(rng: np.random.Generator, length: int, low: float, high: float) -> tuple[int, int]:
    """A random stretch covering ``low``..``high`` of the clip, at a random onset."""
    size = max(1, int(length * rng.uniform(low, high)))
    start = int(rng.integers(0, length - size + 1))
    return start, start + size


def _fade(size: int, rate: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Amplitude envelope with raised-cosine attack and release of ``low``..``high`` seconds."""
    ramp = min(size // 2, max(1, int(rate * rng.uniform(low, high))))
    envelope = np.ones(size)
    rise = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, ramp))
    envelope[:ramp] = rise
    envelope[size - ramp :] = rise[::-1]
    return envelope


def _place(length: int, start: int, sound: np.ndarray) -> np.ndarray:
    """A silent clip of ``length`` frames with ``sound`` starting at ``start``."""
    clip = np.zeros(length)
    clip[start : start + sound.size] = sound
    return clip


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A frequency drawn evenly on a log scale (equal chance per octave)."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _tone(rng: np.random.Generator, length: int, rate: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A sine at 200..2000 Hz with a slight tremolo."""
    start, stop = _span(rng, length, 0.5, 0.9)
    t = np.arange(stop - start) / rate
    frequency = min(_log_uniform(rng, 200, 2000), 0.45 * rate)
    tremolo = 1 - rng.uniform(0, 0.2) * (0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(2, 6) * t))
    sound = np.sin(2 * math.pi * frequency * t + rng.uniform(0, 2 * math.pi)) * tremolo
    return _place(length, start, sound * _fade(t.size, rate, rng, 0.005, 0.03)), (start, stop)


def _chirp(rng: np.random.Generator, length: int, rate: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An exponential sweep rising 2.5..6x from 150..600 Hz."""
    start, stop = _span(rng, length, 0.5, 0.9)
    t = np.arange(stop - start) / rate
    low = _log_uniform(rng, 150, 600)
    high = min(low * rng.uniform(2.5, 6), 0.45 * rate)
    span = t.size / rate
    # Phase is the integral of f(t) = low * (high/low) ** (t/span).
    growth = math.log(high / low)
    phase = 2 * math.pi * low * span / growth * (np.exp(growth * t / span) - 1)
    sound = np.sin(phase) * _fade(t.size, rate, rng, 0.005, 0.03)
    return _place(length, start, sound), (start, stop)


def _noise_burst(rng: np.random.Generator, length: int, rate: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A burst of white noise, band-limited half of the time."""
    start, stop = _span(rng, length, 0.15, 0.5)
    noise = rng.normal(0, 1, size=stop - start)
    if rng.random() < 0.5:
        spectrum = np.fft.rfft(noise)
        frequencies = np.fft.rfftfreq(noise.size, 1 / rate)
        low = _log_uniform(rng, 100, 1000)
        high = min(low * rng.uniform(2, 8), rate / 2)
        spectrum[(frequencies < low) | (frequencies > high)] = 0
        noise = np.fft.irfft(spectrum, n=noise.size)
    noise /= np.abs(noise).max()
    return _place(length, start, noise * _fade(noise.size, rate, rng, 0.002, 0.01)), (start, stop)


def _click_train(rng: np.random.Generator, length: int, rate: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Short decaying clicks repeated at 5..40 Hz."""
    start, stop = _span(rng, length, 0.6, 0.95)
    click_t = np.arange(max(2, int(0.003 * rate))) / rate
    ring = min(rng.uniform(1000, 3000), 0.4 * rate)
    click = np.sin(2 * math.pi * ring * click_t) * np.exp(-click_t / 0.0006)
    period = rate / rng.uniform(5, 40)
    sound = np.zeros(stop - start)
    for onset in np.arange(0, sound.size - click.size + 1, period).astype(int):
        sound[onset : onset + click.size] += click
    return _place(length, start, sound), (start, stop)


_SOUNDS = {"tone": _tone, "chirp": _chirp, "noise_burst": _noise_burst, "click_train": _click_train}


def _encode_wav(samples: np.ndarray, rate: int, subtype: str) -> bytes:
    """Encode frames as WAV bytes that depend on the samples only."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, samples.shape[1], subtype=subtype, format="WAV") as handle:
        # libsndfile stamps float WAVs with the wall-clock time in a PEAK chunk; turn that chunk off.
        soundfile._snd.sf_command(handle._file, _SFC_SET_ADD_PEAK_CHUNK, soundfile._ffi.NULL, 0)
        handle.write(samples)
    return buffer.getvalue()


# ---------------------------------------------------------------- text


def _gensim_corpus(name: str) -> tuple[Path, str]:
    """Locate a file of gensim's test data without importing gensim; return it and gensim's version."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "the sample text corpora come from gensim, which is not installed", "pip install gensim"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_GENSIM_DATA, name)
        if path.is_file():
            try:
                return path, metadata.version("gensim")
            except metadata.PackageNotFoundError:
                return path, "unknown"
    raise DependencyError(
        f"gensim is installed but lacks its test file {'/'.join(_GENSIM_DATA)}/{name} "
        f"(looked in {', '.join(spec.submodule_search_locations)})",
        "reinstall it in full: pip install --force-reinstall gensim",
    )


_LEE_ORIGIN = """This is the Lee background corpus, English news stories from the Australian
Broadcasting Corporation's news mail service, which gensim uses in its tests
and tutorials. It comes from

    Lee, M. D., Pincombe, B., & Welsh, M. (2005). An empirical evaluation of
    models of text document similarity. Proceedings of the 27th Annual
    Conference of the Cognitive Science Society.
"""

_POLARITY_ORIGIN = """These are 200 sentences (100 negative, 100 positive) of the sentence polarity
dataset v1.0 of movie-review snippets from rottentomatoes.com, in fastText format
(__label__neg / __label__pos, lower-cased, punctuation split off), as gensim ships
them for its fastText tests. The file is encoded in cp1252, not UTF-8. The full
set (10,662 sentences) comes from

    Pang, B., & Lee, L. (2005). Seeing stars: Exploiting class relationships for
    sentiment categorization with respect to rating scales. Proceedings of ACL 2005.
"""


def _origin_note(copy: Path, version: str, about: str) -> str:
    """The text of ORIGIN.txt for a copied gensim test file."""
    data = copy.read_bytes()
    return (
        f"{copy.name}: a sample text dataset of the dlpipe demo\n"
        f"\n"
        f"Source: gensim/{'/'.join(_GENSIM_DATA)}/{copy.name} inside the installed gensim package\n"
        f"        (gensim {version}), copied byte for byte.\n"
        f"sha256: {hashlib.sha256(data).hexdigest()}\n"
        f"Size:   {len(data)} bytes, {len(data.splitlines())} documents (one per line), "
        f"{len(data.split())} words\n"
        f"\n"
        f"{about}"
        f"\n"
        f"License: distributed as part of gensim under the GNU LGPL v2.1\n"
        f"(https://github.com/piskvorky/gensim/blob/develop/COPYING).\n"
    )
