"""Shared fixtures: a throw-away project with params.yaml and tiny datasets in tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The one genuine ImageNet backbone the machines that test dlpipe have (../shared/weights/README.md).
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"


def shipped_params() -> dict[str, Any]:
    """The repository's params.yaml as a dict (tests start from it and change what they need).

    Its datasets are flat here, name -> entry with its modality (and labels), as tests add them;
    :meth:`Workspace.write_params` lists them under their kind again.
    """
    from dlpipe.core.config import DATASET_KINDS

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    groups = params["datasets"]
    params["datasets"] = {
        name: {"modality": DATASET_KINDS[kind][0], **entry} for kind, entries in groups.items() for name, entry in entries.items()
    }
    return params


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``root``: equal digests mean nothing was touched."""
    return {
        path.relative_to(root).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class RunsCode:
    """A pickle payload that creates ``marker`` when it is unpickled: proof that a loader ran code from an artifact."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def save_hostile_npy(path: Path, marker: Path) -> None:
    """A .npy whose object array unpickles :class:`RunsCode` (numpy only loads it with allow_pickle=True)."""
    np.save(path, np.array([RunsCode(marker), 1.0], dtype=object), allow_pickle=True)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0, **save: Any) -> bytes:
    """Encode a small random image; different seeds give different content."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        image = rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    """Write samples (frames × channels, or 1-D) as a WAV file."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype, format="WAV")
    return path


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone at amplitude 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


class Workspace:
    """A project folder with params.yaml; datasets are added with the helpers below."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.params = shipped_params()
        self.params["datasets"] = {}
        self.params["ingest"]["workers"] = 1
        self.params["ingest"]["max_reject_fraction"] = 0.5

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def write_params(self) -> Path:
        """params.yaml with ``self.params``; its datasets (name -> entry with modality) listed under their kind."""
        from dlpipe.core.config import group_datasets

        document = self.params | {"datasets": group_datasets(self.params["datasets"])}
        self.params_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return self.params_path

    def add_dataset(self, name: str, modality: str, source: str) -> Path:
        self.params["datasets"][name] = {"modality": modality, "source": source}
        self.write_params()
        return self.root / source

    def image_dataset(self, name: str = "imgs", classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> Path:
        """Class folders of distinct small PNG/JPEG images."""
        source = self.add_dataset(name, "image", f"src/{name}")
        for c, label in enumerate(classes):
            (source / label).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
                (source / label / f"{label}_{i}.{ext}").write_bytes(image_bytes(fmt, seed=1000 * c + i))
        return source

    def audio_dataset(self, name: str = "clips", classes: tuple[str, ...] = ("low", "high"), per_class: int = 4) -> Path:
        """Class folders of distinct short WAV tones."""
        source = self.add_dataset(name, "audio", f"src/{name}")
        for c, label in enumerate(classes):
            for i in range(per_class):
                write_wav(source / label / f"{label}_{i}.wav", tone(0.3, 8000, 200 + 300 * c + 10 * i), 8000)
        return source

    def load(self, *overrides: str):
        from dlpipe.core.config import load_project

        return load_project(self.write_params(), list(overrides))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """An empty project in tmp_path, also the current directory."""
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path)


@pytest.fixture
def shared_weights_dir() -> Path:
    """The folder with the real ImageNet weights (see ../shared/weights/README.md), or skip."""
    configured = os.environ.get("DLPIPE_TEST_WEIGHTS_DIR")
    folder = Path(configured) if configured else REPO.parent / "shared" / "weights"
    if not (folder / MOBILENET_FILE).is_file():
        pytest.skip(f"pretrained weights {MOBILENET_FILE} not found in {folder} (set DLPIPE_TEST_WEIGHTS_DIR)")
    return folder


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras cache: KERAS_HOME points at tmp_path/keras_home."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home
