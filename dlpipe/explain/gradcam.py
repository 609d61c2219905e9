"""Grad-CAM (Selvaraju et al., 2017): the class score's gradient weights the last feature maps.

One forward and one backward pass per batch of images. dlpipe's classifier nests its backbone
as one layer (image -> preprocess -> backbone -> pooling -> dropout -> softmax), so the inner
feature map is not reachable from the outer model's graph. The forward pass therefore walks the
outer layers in order and calls a view of the backbone that returns the feature map as well as
its output; the gradient flows from the class score (the logit before the softmax, which does
not saturate on confident images) back to that feature map.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dlpipe.core.errors import ConfigError

CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
AUTO = "auto"
_USE_OCCLUSION = "use occlusion instead, which needs no feature map: list only occlusion in heatmap.methods"


def feature_maps(model: keras.Model) -> dict[str, list[str]]:
    """Names of the 4-D (feature map) layers after the first convolution, per container ('' = the model itself)."""
    found = {}
    for container in _containers(model):
        layers = container.layers
        first = next((i for i, layer in enumerate(layers) if isinstance(layer, CONV_TYPES)), None)
        if first is not None:
            found[container.name if container is not model else ""] = [
                layer.name for layer in layers[first:] if len(layer.output.shape) == 4
            ]
    return found


def find_target_layer(model: keras.Model, name: str = AUTO, key: str = "heatmap.gradcam_layer") -> tuple[keras.Model, keras.layers.Layer]:
    """(the model that holds the layer, the layer) whose feature map Grad-CAM weighs.

    ``auto`` takes the last convolutional feature map of the backbone (the nested model that has
    convolutions; the classifier itself when nothing is nested); a name is looked up in the
    classifier and in its nested models.

    Raises:
        ConfigError: the model has no convolutional layer, or no layer has that name.
    """
    maps = feature_maps(model)
    if not maps:
        raise ConfigError(
            "heatmap.methods: gradcam needs a convolutional feature map, but the model has no convolutional layer",
            _USE_OCCLUSION,
        )
    for container in reversed(_containers(model)):
        names = maps.get(container.name if container is not model else "", [])
        if name == AUTO and names:
            return container, container.get_layer(names[-1])
        if name != AUTO and any(layer.name == name for layer in container.layers):
            layer = container.get_layer(name)
            if len(layer.output.shape) != 4:
                raise ConfigError(f"{key}: layer '{name}' outputs shape {layer.output.shape}, not a feature map", _known(maps))
            return container, layer
    raise ConfigError(f"{key}: the model has no layer named '{name}'", _known(maps))


def gradcam_maps(model: keras.Model, images: np.ndarray, targets: np.ndarray, layer: str = AUTO) -> np.ndarray:
    """Grad-CAM map of each image for its target class, (N, size, size) float32 in [0, 1].

    Args:
        model: a single-path classifier ending in a Dense softmax layer, input RGB in [0, 255].
        images: (N, size, size, 3) float32.
        targets: (N,) class indices.
        layer: a layer name, or ``auto`` (see :func:`find_target_layer`).
    """
    container, target_layer = find_target_layer(model, layer)
    inner = keras.Model(container.inputs, [target_layer.output, container.outputs[0]]) if container is not model else None
    images_t = tf.constant(images, tf.float32)
    with tf.GradientTape() as tape:
        features, logits = features_and_logits(model, images_t, container, target_layer, inner)
        scores = tf.gather(logits, tf.constant(targets, tf.int32), axis=1, batch_dims=1)
    gradients = tape.gradient(scores, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # one weight per channel: the pooled gradient
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    size = images.shape[1:3]
    cams = tf.image.resize(cams, size, method="bilinear")[..., 0].numpy()
    peaks = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peaks > 0, cams / np.maximum(peaks, 1e-12), 0.0).astype(np.float32)


def features_and_logits(
    model: keras.Model, images: tf.Tensor, container: keras.Model, target: keras.layers.Layer, inner: keras.Model | None
):
    """(feature map, class logits) of ``images``: the outer layers in order, the backbone through ``inner``.

    Args:
        model, container, target: as :func:`find_target_layer` returns them (``container`` holds ``target``).
        inner: ``container`` rebuilt to output (target's feature map, its own output), or None when
            the target layer sits in ``model`` itself.

    Raises:
        ConfigError: the model is not a single-path network ending in a Dense layer, nor a branched one
            (a spatial head) whose target map is the backbone's output or a layer of its own.
    """
    if any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers):
        return _branched_features_and_outputs(model, images, container, target)
    x = images
    features = None
    last = model.layers[-1]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if inner is not None and layer is container:
            features, x = inner(x, training=False)
        elif layer is last and getattr(layer, "activation", None) is keras.activations.softmax:
            x = keras.ops.matmul(x, layer.kernel) + layer.bias  # the logits the softmax would squash
        else:
            x = layer(x, training=False)
            if layer is target:
                features = x
    if features is None or last.__class__ is not keras.layers.Dense:
        raise ConfigError(
            f"Grad-CAM needs a single-path classifier ending in a Dense layer; '{model.name}' is not one",
            _USE_OCCLUSION,
        )
    return features, x


def _branched_features_and_outputs(model: keras.Model, images: tf.Tensor, container: keras.Model, target: keras.layers.Layer):
    """(feature map, outputs) of a network whose head reads the backbone twice (pooled and spatial, models.network).

    The outputs are the head's own (a value, a box, points): there is no softmax to undo.
    """
    if container is model:
        features = target.output
    elif target is container.layers[-1] and container._inbound_nodes:
        # The backbone's output as the outer graph sees it (the node of its call in the network).
        features = container._inbound_nodes[-1].output_tensors[0]
    else:
        raise ConfigError(
            f"Grad-CAM of '{model.name}' can weigh the backbone's last feature map or a layer of the network itself, "
            f"not '{target.name}' inside the backbone",
            "set heatmap.gradcam_layer: auto (or spatial_features)",
        )
    return keras.Model(model.inputs, [features, model.outputs[0]])(images, training=False)


def _containers(model: keras.Model) -> list[keras.Model]:
    """The classifier and the models nested in it (the backbone, augmentation), in layer order."""
    return [model, *(layer for layer in model.layers if isinstance(layer, keras.Model))]


def _known(maps: dict[str, list[str]]) -> str:
    listed = "; ".join(f"{container or 'top level'}: {', '.join(names[-6:])}" for container, names in maps.items())
    return f"use auto or one of the convolutional feature maps ({listed})"
