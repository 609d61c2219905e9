"""Registry of ConvNet backbones and how their weights are found.

A backbone is the convolutional base of an image classifier: ``build_base`` returns
it without its top and without pooling, so callers add ``layers.Preprocess`` in
front and their own pooling and head behind. Weights come from Keras' cache
(``imagenet``: the file keras.applications downloads into ``$KERAS_HOME/models``),
from a local file (a path), or are random (``none``). ImageNet weights that are
neither cached nor downloadable raise :class:`~dlpipe.core.errors.DependencyError`
naming the file and the folder to put it in; with ``DLPIPE_OFFLINE=1`` no
download is tried at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras

from dlpipe.core.config import BackboneConfig
from dlpipe.core.errors import ConfigError, DependencyError

OFFLINE_ENV = "DLPIPE_OFFLINE"
# keras' urlretrieve has no timeout: bound each socket operation so a black-holed network fails instead of hanging.
DOWNLOAD_TIMEOUT_S = 60.0
# Suffixes Keras' Model.load_weights reads (legacy HDF5, Keras 3 weights, whole .keras archives).
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".weights.h5", ".keras")
# Start of the warning Keras 3 gives when it leaves part of a model at its random init while loading.
_SKIPPED = "Skipping"

Maker = Callable[[float, int, "str | None"], keras.Model]


@dataclass(frozen=True)
class BackboneSpec:
    """What dlpipe knows about one backbone.

    Attributes:
        name: registry key (``backbone.name`` in params.yaml).
        default_size: input side the backbone was designed for.
        preprocessing: mode of :class:`dlpipe.models.layers.Preprocess` that turns [0, 255] RGB into its input.
        pretrained: whether keras.applications has ImageNet weights for it.
        imagenet_alphas: widths (``alpha``) that have ImageNet weights; empty when alpha does not apply.
    """

    name: str
    default_size: int
    preprocessing: str
    pretrained: bool
    imagenet_alphas: tuple[float, ...]
    _pooled: Callable[[float], int] = field(repr=False, compare=False)
    _imagenet_file: Callable[[float, int], str] | None = field(repr=False, compare=False)
    _make: Maker = field(repr=False, compare=False)

    def feature_dim(self, alpha: float) -> int:
        """Length of the globally pooled feature vector at width ``alpha`` (ignored where alpha does not apply)."""
        return self._pooled(float(alpha))


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count as MobileNetV2/V3 do (nearest multiple of 8, never more than 10% down)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _rows(size: int, sizes: tuple[int, ...]) -> int:
    """Input size in a MobileNet weights file name: Keras falls back to 224 for sizes it has no file for."""
    return size if size in sizes else 224


SMALL_CNN_FILTERS = (16, 32, 64, 128)


def _small_cnn(size: int) -> keras.Model:
    """Four conv blocks (16/32/64/128 filters); the last is not pooled so its output is the Grad-CAM map."""
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = inputs
    for block, filters in enumerate(SMALL_CNN_FILTERS, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            # A short memory: small datasets give few steps for the moving statistics to settle.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 4:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x)


def _application(constructor: Callable[..., keras.Model], **extra: object) -> Maker:
    """A maker for a keras.applications constructor: no top, no pooling, square RGB input."""

    def make(alpha: float, size: int, weights: str | None) -> keras.Model:
        return constructor(input_shape=(size, size, 3), include_top=False, weights=weights, pooling=None, **extra)

    return make


def _with_alpha(constructor: Callable[..., keras.Model], **extra: object) -> Maker:
    """Like :func:`_application`, passing the width multiplier on."""

    def make(alpha: float, size: int, weights: str | None) -> keras.Model:
        return _application(constructor, alpha=alpha, **extra)(alpha, size, weights)

    return make


_APPS = keras.applications
_V1_SIZES = (128, 160, 192, 224)
_V2_SIZES = (96, 128, 160, 192, 224)
_V1_ALPHA_TEXT = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="small_cnn",
            default_size=64,
            preprocessing="unit",
            pretrained=False,
            imagenet_alphas=(),
            _pooled=lambda alpha: SMALL_CNN_FILTERS[-1],
            _imagenet_file=None,
            _make=lambda alpha, size, weights: _small_cnn(size),
        ),
        BackboneSpec(
            name="mobilenet",
            default_size=224,
            preprocessing="tf",
            pretrained=True,
            imagenet_alphas=(0.25, 0.5, 0.75, 1.0),
            _pooled=lambda alpha: int(1024 * alpha),
            _imagenet_file=lambda alpha, size: (
                f"mobilenet_{_V1_ALPHA_TEXT[alpha]}_{_rows(size, _V1_SIZES)}_tf_no_top.h5"
            ),
            _make=_with_alpha(_APPS.MobileNet),
        ),
        BackboneSpec(
            name="mobilenet_v2",
            default_size=224,
            preprocessing="tf",
            pretrained=True,
            imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
            _pooled=lambda alpha: _divisible(1280 * alpha) if alpha > 1.0 else 1280,
            _imagenet_file=lambda alpha, size: (
                f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{_rows(size, _V2_SIZES)}_no_top.h5"
            ),
            _make=_with_alpha(_APPS.MobileNetV2),
        ),
        BackboneSpec(
            name="mobilenet_v3_small",
            default_size=224,
            preprocessing="none",
            pretrained=True,
            imagenet_alphas=(0.75, 1.0),
            _pooled=lambda alpha: _divisible(_divisible(96 * alpha) * 6),
            _imagenet_file=lambda alpha, size: f"weights_mobilenet_v3_small_224_{alpha}_float_no_top_v2.h5",
            _make=_with_alpha(_APPS.MobileNetV3Small, include_preprocessing=True),
        ),
        BackboneSpec(
            name="mobilenet_v3_large",
            default_size=224,
            preprocessing="none",
            pretrained=True,
            imagenet_alphas=(0.75, 1.0),
            _pooled=lambda alpha: _divisible(_divisible(160 * alpha) * 6),
            _imagenet_file=lambda alpha, size: f"weights_mobilenet_v3_large_224_{alpha}_float_no_top_v2.h5",
            _make=_with_alpha(_APPS.MobileNetV3Large, include_preprocessing=True),
        ),
        BackboneSpec(
            name="efficientnet_b0",
            default_size=224,
            preprocessing="none",
            pretrained=True,
            imagenet_alphas=(),
            _pooled=lambda alpha: 1280,
            # Keras derives this name from the model name, so the model keeps Keras' name while building.
            _imagenet_file=lambda alpha, size: "efficientnetb0_notop.h5",
            _make=_application(_APPS.EfficientNetB0),
        ),
        BackboneSpec(
            name="resnet50",
            default_size=224,
            preprocessing="caffe",
            pretrained=True,
            imagenet_alphas=(),
            _pooled=lambda alpha: 2048,
            _imagenet_file=lambda alpha, size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _make=_application(_APPS.ResNet50),
        ),
        BackboneSpec(
            name="vgg16",
            default_size=224,
            preprocessing="caffe",
            pretrained=True,
            imagenet_alphas=(),
            _pooled=lambda alpha: 512,
            _imagenet_file=lambda alpha, size: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _make=_application(_APPS.VGG16),
        ),
    )
}


def get_spec(name: str, key: str = "backbone.name") -> BackboneSpec:
    """The registry entry called ``name``.

    Raises:
        ConfigError: no such backbone; the message names ``key`` and lists the available ones.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"{key}: unknown backbone {name!r}; available: {', '.join(BACKBONES)}",
        ) from None


def _imagenet_spec(cfg: BackboneConfig, key: str) -> BackboneSpec:
    """The spec of ``cfg.name`` after checking that ImageNet weights exist for it at ``cfg.alpha``."""
    spec = get_spec(cfg.name, f"{key}.name")
    if not spec.pretrained:
        raise ConfigError(
            f"{key}.weights: backbone {spec.name} has no pretrained weights",
            hint="use weights: none (random init) or the path of a weights file saved for this backbone",
        )
    if spec.imagenet_alphas and float(cfg.alpha) not in spec.imagenet_alphas:
        raise ConfigError(
            f"{key}.alpha: {spec.name} has ImageNet weights only for alpha "
            f"{', '.join(str(a) for a in spec.imagenet_alphas)}, got {cfg.alpha}",
            hint="pick one of those widths, or use weights: none",
        )
    return spec


def imagenet_weights_file(cfg: BackboneConfig, key: str = "backbone") -> str:
    """The file name keras.applications downloads and caches for ``cfg`` without its top.

    It depends on the width (``alpha``) and, for MobileNet v1/v2, on the input size
    (Keras uses the 224 px file for sizes it has no file of its own for).

    Raises:
        ConfigError: the backbone has no ImageNet weights, or none at this alpha.
    """
    spec = _imagenet_spec(cfg, key)
    assert spec._imagenet_file is not None  # every pretrained spec names its file
    return spec._imagenet_file(float(cfg.alpha), cfg.image_size)


def keras_cache_dir() -> Path:
    """Where keras.applications looks for and stores weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``).

    Read from the environment at call time (Keras itself reads ``KERAS_HOME`` once,
    at import), with Keras' own fallbacks to ``/tmp/.keras`` where the folder is not writable.
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    with contextlib.suppress(OSError):
        os.makedirs(home, exist_ok=True)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models"


@contextlib.contextmanager
def _keras_home(home: Path) -> Iterator[None]:
    """Point Keras' download cache at ``home`` and bound network stalls while building a pretrained model."""
    from keras.src.backend import config as keras_config

    # get_file() resolves its cache through keras_home(), which returns this module global.
    saved_home, saved_timeout = keras_config._KERAS_DIR, socket.getdefaulttimeout()
    keras_config._KERAS_DIR = str(home)
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        keras_config._KERAS_DIR = saved_home
        socket.setdefaulttimeout(saved_timeout)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _build_imagenet(cfg: BackboneConfig, key: str) -> keras.Model:
    """Build with ``weights="imagenet"`` from Keras' cache, downloading only when allowed."""
    file = imagenet_weights_file(cfg, key)
    spec = get_spec(cfg.name)
    cache = keras_cache_dir()
    cached = (cache / file).is_file()
    hint = (
        f"put {file} in {cache}{os.sep}: download it on a machine with internet "
        "(keras.applications caches it there) or set weights to a local file path"
    )
    if not cached and _offline():
        raise DependencyError(
            f"{key}.weights: ImageNet weights file {file} for {spec.name} is not in {cache} "
            f"and {OFFLINE_ENV} is set, so no download was tried",
            hint=hint,
        )
    try:
        with _keras_home(cache.parent):
            return spec._make(float(cfg.alpha), cfg.image_size, "imagenet")
    # Keras raises a bare Exception for failed downloads; hash mismatches and bad files raise others.
    except Exception as exc:
        state = "is in" if cached else "is not in"
        raise DependencyError(
            f"{key}.weights: ImageNet weights file {file} for {spec.name} {state} {cache} "
            f"and Keras could not get a usable copy: {exc}",
            hint=hint if not cached else f"delete {cache / file} and {hint}",
        ) from exc


def _load_file(model: keras.Model, cfg: BackboneConfig, key: str) -> None:
    """Load the weights file ``cfg.weights`` into ``model`` as keras.applications does for a path."""
    path = Path(cfg.weights)
    if not path.is_file():
        raise ConfigError(
            f"{key}.weights: no weights file at {path}",
            hint="use imagenet, none, or the path of an existing weights file",
        )
    if not path.name.endswith(WEIGHTS_SUFFIXES):
        raise ConfigError(
            f"{key}.weights: {path} is not a Keras weights file (expected {', '.join(WEIGHTS_SUFFIXES)})",
        )
    # Keras 3 leaves layers it cannot match at their random init with only a warning: treat that as a misfit too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=_SKIPPED, category=UserWarning)
        try:
            model.load_weights(path)
            failure = next((str(w.message) for w in caught if str(w.message).startswith(_SKIPPED)), None)
        except (ValueError, KeyError, OSError) as exc:
            failure = str(exc)
    if failure is not None:
        raise ConfigError(
            f"{key}.weights: weights file {path} does not fit backbone {cfg.name}: {_first_words(failure)}",
            hint=f"use a file saved from {cfg.name} at alpha {cfg.alpha}, or weights: none",
        )
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _first_words(text: str, limit: int = 300) -> str:
    """The gist of a Keras error on one line (its messages can list hundreds of layers)."""
    text = " ".join(text.split("List of objects")[0].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_base(cfg: BackboneConfig, key: str = "backbone") -> keras.Model:
    """The convolutional base of ``cfg.name`` with the weights ``cfg.weights`` asks for.

    The model takes already-preprocessed ``(image_size, image_size, 3)`` images (put
    ``Preprocess(spec.preprocessing)`` in front), has no top and no pooling (its output
    is the last convolutional feature map) and is named ``cfg.name``.

    Args:
        cfg: the backbone section.
        key: its key path in params.yaml (``finetune.backbone``, ``embed.backbone``), for messages.

    Raises:
        ConfigError: unknown backbone, ImageNet weights asked of small_cnn or at an alpha
            that has none, a missing weights file, or one made for another architecture.
        DependencyError: ImageNet weights are neither in Keras' cache nor downloadable.
    """
    spec = get_spec(cfg.name, f"{key}.name")
    if cfg.weights == "imagenet":
        model = _build_imagenet(cfg, key)
    else:
        model = spec._make(float(cfg.alpha), cfg.image_size, None)
        if cfg.weights != "none":
            _load_file(model, cfg, key)
    model.name = spec.name
    return model
