"""Keras layers that dlpipe puts into its models (registered, so saved ``.keras`` models load back)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# ImageNet channel means in BGR order, as keras.applications' "caffe" preprocessing subtracts them.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESS_MODES = ("tf", "caffe", "none", "unit")


@keras.saving.register_keras_serializable(package="dlpipe")
class Preprocess(keras.layers.Layer):
    """Map float RGB images with values in [0, 255] to the input a backbone expects.

    Args:
        mode: ``"tf"`` scales to [-1, 1] (MobileNet, MobileNetV2); ``"caffe"`` flips RGB to
            BGR and subtracts the ImageNet means (ResNet50, VGG16); ``"none"`` passes the
            images through (EfficientNet and MobileNetV3 rescale inside the model);
            ``"unit"`` scales to [0, 1] (small_cnn).
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {', '.join(PREPROCESS_MODES)}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="dlpipe")
class PaddingMask(keras.layers.Layer):
    """1.0 at every real token and 0.0 at padding (id 0), shape (batch, steps, 1), for a ConvNet over words."""

    def call(self, tokens: Any) -> Any:
        return ops.expand_dims(ops.cast(ops.not_equal(tokens, 0), self.compute_dtype), -1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape, 1)


@keras.saving.register_keras_serializable(package="dlpipe")
class MaskedGlobalMaxPooling1D(keras.layers.Layer):
    """1-max pooling over time that only looks at real tokens: inputs ``[features, padding mask]``.

    A document shorter than the padded length gets the same features as it would alone, and a
    document with no token at all (possible at predict time) gets zeros instead of -inf.
    """

    def call(self, inputs: Any) -> Any:
        features, mask = inputs
        lowest = ops.convert_to_tensor(-3.0e38 if features.dtype == "float32" else -6.0e4, dtype=features.dtype)
        pooled = ops.max(ops.where(ops.cast(mask, "bool"), features, lowest), axis=1)
        return ops.where(ops.any(ops.cast(mask, "bool"), axis=1), pooled, ops.zeros_like(pooled))

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        batch, _, channels = input_shape[0]
        return (batch, channels)


@keras.saving.register_keras_serializable(package="dlpipe")
class MelFrames(keras.layers.Layer):
    """A spectrogram window image (batch, mel rows, time columns, 3) in [0, 255] as frames (batch, time, mel) in [0, 1].

    Each image column is one time step and its rows the mel bands; the channels (grey copies) are averaged.
    """

    def call(self, images: Any) -> Any:
        grey = ops.mean(ops.cast(images, self.compute_dtype), axis=-1) / 255.0
        return ops.transpose(grey, (0, 2, 1))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        batch, rows, columns, _ = input_shape
        return (batch, columns, rows)
