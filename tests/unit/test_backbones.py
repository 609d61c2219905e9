"""Backbone registry, Preprocess layer and weights resolution (imagenet / none / file)."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from dlpipe.core.config import BackboneConfig
from dlpipe.core.errors import ConfigError, DependencyError
from dlpipe.models import backbones
from dlpipe.models.backbones import (
    BACKBONES,
    SMALL_CNN_FILTERS,
    build_base,
    get_spec,
    imagenet_weights_file,
)
from dlpipe.models.layers import Preprocess
from tests.conftest import MOBILENET_FILE


def backbone(**changes: Any) -> BackboneConfig:
    """A BackboneConfig: mobilenet alpha 0.25 at 32 px with random weights, plus ``changes``."""
    values: dict[str, Any] = {"name": "mobilenet", "weights": "none", "alpha": 0.25, "image_size": 32}
    return BackboneConfig(**{**values, **changes})


def test_every_backbone_builds_with_its_pooled_size() -> None:
    for name, spec in BACKBONES.items():
        alpha = 0.5 if spec.imagenet_alphas else 1.0
        model = build_base(backbone(name=name, alpha=alpha))
        pooled = keras.layers.GlobalAveragePooling2D()(model.output)
        assert model.name == name == spec.name
        assert model.input_shape == (None, 32, 32, 3)
        assert pooled.shape[-1] == spec.feature_dim(alpha), name


def test_feature_dims_follow_alpha() -> None:
    assert get_spec("mobilenet").feature_dim(0.25) == 256
    assert get_spec("mobilenet_v2").feature_dim(1.0) == 1280
    assert get_spec("mobilenet_v2").feature_dim(1.4) == 1792
    assert get_spec("mobilenet_v3_small").feature_dim(1.0) == 576
    assert get_spec("mobilenet_v3_large").feature_dim(0.75) == 720
    assert get_spec("resnet50").feature_dim(0.25) == 2048


def test_small_cnn_keeps_a_spatial_map_for_grad_cam() -> None:
    model = build_base(backbone(name="small_cnn", image_size=64))
    assert model.output_shape == (None, 8, 8, SMALL_CNN_FILTERS[-1])
    assert isinstance(model.layers[-1], keras.layers.ReLU)


@pytest.mark.parametrize(
    ("mode", "module"),
    [
        ("tf", keras.applications.mobilenet),
        ("tf", keras.applications.mobilenet_v2),
        ("caffe", keras.applications.resnet50),
        ("caffe", keras.applications.vgg16),
    ],
)
def test_preprocess_matches_keras_applications(mode: str, module: Any) -> None:
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = module.preprocess_input(images.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess(mode)(images)), expected, rtol=1e-6, atol=1e-4)


def test_preprocess_none_and_unit() -> None:
    images = np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess("none")(images)), images)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess("unit")(images)), images / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        Preprocess("torch")


def test_model_with_preprocess_saves_and_loads(tmp_path: Path) -> None:
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(build_base(backbone())(Preprocess("tf")(inputs)))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert any(isinstance(layer, Preprocess) and layer.mode == "tf" for layer in loaded.layers)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_unknown_backbone_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_base(backbone(name="alexnet"), key="finetune.backbone")
    assert "finetune.backbone.name" in str(info.value) and "alexnet" in str(info.value)
    assert all(name in str(info.value) for name in BACKBONES)


def test_small_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(ConfigError, match="(?s)small_cnn has no pretrained weights.*weights: none"):
        build_base(backbone(name="small_cnn", weights="imagenet"))


def test_imagenet_alpha_must_have_weights(keras_home: Path) -> None:
    with pytest.raises(ConfigError, match=r"backbone\.alpha.*0\.25, 0\.5, 0\.75, 1\.0.*got 0\.3"):
        build_base(backbone(alpha=0.3, weights="imagenet"))
    with pytest.raises(ConfigError, match=r"0\.75, 1\.0"):
        imagenet_weights_file(backbone(name="mobilenet_v3_large", alpha=0.5))


def test_imagenet_file_names_follow_keras() -> None:
    names = {
        backbone(alpha=0.25, image_size=224): "mobilenet_2_5_224_tf_no_top.h5",
        backbone(alpha=1, image_size=128): "mobilenet_1_0_128_tf_no_top.h5",
        backbone(alpha=0.5, image_size=96): "mobilenet_5_0_224_tf_no_top.h5",
        backbone(name="mobilenet_v2", alpha=0.35, image_size=96): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5",
        backbone(name="mobilenet_v2", alpha=1, image_size=300): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        backbone(name="mobilenet_v3_small", alpha=1, image_size=64): "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        backbone(name="mobilenet_v3_large", alpha=0.75): "weights_mobilenet_v3_large_224_0.75_float_no_top_v2.h5",
        backbone(name="efficientnet_b0"): "efficientnetb0_notop.h5",
        backbone(name="resnet50"): "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        backbone(name="vgg16"): "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }
    assert {cfg: imagenet_weights_file(cfg) for cfg in names} == names


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(ConfigError, match=f"embed.backbone.weights: no weights file at {missing}"):
        build_base(backbone(weights=str(missing)), key="embed.backbone")


def test_weights_file_of_another_architecture(tmp_path: Path) -> None:
    small = build_base(backbone(name="small_cnn"))
    small.save_weights(tmp_path / "small.weights.h5")
    with pytest.raises(ConfigError, match="does not fit backbone mobilenet"):
        build_base(backbone(weights=str(tmp_path / "small.weights.h5")))
    build_base(backbone()).save_weights(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(ConfigError, match="does not fit backbone small_cnn"):
        build_base(backbone(name="small_cnn", weights=str(tmp_path / "mobilenet.weights.h5")))
    with pytest.raises(ConfigError, match="does not fit backbone mobilenet"):
        build_base(backbone(alpha=0.5, weights=str(tmp_path / "mobilenet.weights.h5")))


def test_small_cnn_weights_file_round_trip(tmp_path: Path) -> None:
    saved = build_base(backbone(name="small_cnn"))
    saved.save_weights(tmp_path / "small.weights.h5")
    loaded = build_base(backbone(name="small_cnn", image_size=48, weights=str(tmp_path / "small.weights.h5")))
    for ours, theirs in zip(loaded.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_imagenet_offline_names_file_and_folder(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    with pytest.raises(DependencyError) as info:
        build_base(backbone(image_size=224, weights="imagenet"))
    message = str(info.value)
    assert MOBILENET_FILE in message and str(keras_home / "models") in message
    assert "download it on a machine with internet" in message and "local file path" in message


def test_imagenet_failed_download_is_a_dependency_error(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network in this test")

    monkeypatch.delenv(backbones.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(DependencyError, match=f"{MOBILENET_FILE}.*{keras_home / 'models'}.*no network in this test"):
        build_base(backbone(image_size=224, weights="imagenet"))


def test_imagenet_weights_come_from_keras_cache(
    shared_weights_dir: Path, keras_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.utils import file_utils

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached file must be used without a download")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    (keras_home / "models").mkdir()
    shutil.copy(shared_weights_dir / MOBILENET_FILE, keras_home / "models" / MOBILENET_FILE)
    cfg = backbone(image_size=224, weights="imagenet")
    model = build_base(cfg)
    direct = keras.applications.MobileNet(
        input_shape=(224, 224, 3), alpha=0.25, include_top=False, weights=str(shared_weights_dir / MOBILENET_FILE)
    )
    random = build_base(backbone(image_size=224))
    assert model.name == "mobilenet" and model.count_params() == 218_544
    for layer in ("conv1", "conv_dw_1", "conv_pw_13", "conv_pw_13_bn"):
        for ours, theirs, fresh in zip(
            model.get_layer(layer).get_weights(),
            direct.get_layer(layer).get_weights(),
            random.get_layer(layer).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)
            assert not np.array_equal(ours, fresh)
