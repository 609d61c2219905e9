"""Sequence networks: the text classifier over word ids, and recurrent networks over audio frames.

    token ids (max_length,) -> Embedding "word_embedding" (word2vec start, frozen or not)
      cnn: zero the padding -> Conv1D per width (ReLU) -> 1-max pooling over real tokens -> Concatenate "embedding"
      gru / lstm / bigru / bilstm: padding masked -> stacked recurrent layers, the last one "embedding"
    -> Dropout -> head output "predictions"

    spectrogram window image [0, 255] -> MelFrames (columns are time steps, rows mel bands, in [0, 1])
      -> stacked GRU / LSTM, the last one "embedding" -> Dropout -> head output "predictions"

The ConvNet is the Kim (2014) sentence classifier in the Zhang & Wallace (2015) baseline
setting; the recurrent networks read the words in order and skip the padding through the
Embedding's mask. The layer named "embedding" is the document embedding that embed, cluster
and search use, as for images. Gradient clipping (``finetune.text.clipnorm``) is applied by
the optimiser in the training harness.
"""

from __future__ import annotations

import keras
import numpy as np

from dlpipe.core.config import FinetuneConfig, RnnConfig, TextModelConfig
from dlpipe.models.heads.base import Head
from dlpipe.models.layers import MaskedGlobalMaxPooling1D, MelFrames, PaddingMask
from dlpipe.models.network import EMBEDDING_LAYER

WORD_EMBEDDING_LAYER = "word_embedding"
RECURRENT = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM, "bigru": keras.layers.GRU, "bilstm": keras.layers.LSTM}


def build_text_network(
    cfg: TextModelConfig,
    rnn: RnnConfig,
    head: Head,
    vocabulary_size: int,
    n_outputs: int,
    seed: int,
    vectors: np.ndarray | None = None,
) -> keras.Model:
    """The classifier for ``cfg.architecture``; ``vectors`` (vocabulary_size x dimension) start the embedding.

    With ``vectors`` and ``cfg.freeze_embeddings`` the embedding layer has no trainable weight.
    """
    dimension = cfg.embedding_dim
    recurrent = cfg.architecture in RECURRENT
    tokens = keras.Input((cfg.max_length,), dtype="int32", name="tokens")
    embedding = keras.layers.Embedding(
        vocabulary_size,
        dimension,
        mask_zero=recurrent,
        trainable=not (vectors is not None and cfg.freeze_embeddings),
        embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
        name=WORD_EMBEDDING_LAYER,
    )
    x = embedding(tokens)
    x = recurrent_stack(cfg.architecture, rnn, x, seed) if recurrent else _convolutions(cfg, x, tokens, seed)
    x = keras.layers.Dropout(cfg.dropout, seed=seed + 1)(x)
    outputs = head.output_layer(n_outputs, seed)(x)
    model = keras.Model(tokens, outputs, name=f"text_{cfg.architecture}_{head.name}")
    if vectors is not None:
        embedding.set_weights([vectors])
    return model


def _convolutions(cfg: TextModelConfig, words, tokens, seed: int):
    mask = PaddingMask(name="padding_mask")(tokens)
    # Zero vectors at the padding, so windows that reach past a document's end see what 'same' padding adds.
    words = keras.layers.Multiply(name="masked_words")([words, mask])
    pooled = []
    for offset, width in enumerate(cfg.cnn.widths):
        features = keras.layers.Conv1D(
            cfg.cnn.filters,
            width,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.HeUniform(seed=seed + 10 + offset),
            name=f"conv_{width}_{offset}",
        )(words)
        pooled.append(MaskedGlobalMaxPooling1D(name=f"max_over_time_{width}_{offset}")([features, mask]))
    if len(pooled) == 1:
        return keras.layers.Identity(name=EMBEDDING_LAYER)(pooled[0])
    return keras.layers.Concatenate(name=EMBEDDING_LAYER)(pooled)


def build_frame_network(cfg: FinetuneConfig, head: Head, n_outputs: int, seed: int) -> keras.Model:
    """A recurrent network (``finetune.audio_sequence.architecture``) over the mel frames of a spectrogram window image."""
    size = cfg.backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    frames = MelFrames(name="mel_frames")(inputs)
    # Each frame's spectrum on a common scale, so loudness does not swamp its shape.
    frames = keras.layers.LayerNormalization(name="frame_norm")(frames)
    x = recurrent_stack(cfg.audio_sequence.architecture, cfg.rnn, frames, seed, pool_over_time=True)
    x = keras.layers.Dropout(cfg.dropout, seed=seed + 1)(x)
    outputs = head.output_layer(n_outputs, seed)(x)
    return keras.Model(inputs, outputs, name=f"frames_{cfg.audio_sequence.architecture}_{head.name}")


def recurrent_stack(architecture: str, rnn: RnnConfig, x, seed: int, pool_over_time: bool = False):
    """``rnn.layers`` GRU or LSTM layers (bidirectional for bigru / bilstm) over ``x``, ending in the layer "embedding".

    The last layer's final state is the embedding, or with ``pool_over_time`` the mean of its states over
    every step (a sound may lie anywhere in a window, where a sentence's meaning builds up to its end).
    """
    kind = RECURRENT[architecture]
    for layer in range(rnn.layers):
        last = layer == rnn.layers - 1 and not pool_over_time
        options = {"unit_forget_bias": True} if kind is keras.layers.LSTM else {}  # forget-gate bias 1 (Jozefowicz et al.)
        cell = kind(
            rnn.units,
            return_sequences=not last,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 20 + layer),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 40 + layer),
            name=EMBEDDING_LAYER if last and not architecture.startswith("bi") else f"{architecture}_{layer}",
            **options,
        )
        if architecture.startswith("bi"):
            cell = keras.layers.Bidirectional(cell, name=EMBEDDING_LAYER if last else f"bidirectional_{layer}")
        x = cell(x)
    return keras.layers.GlobalAveragePooling1D(name=EMBEDDING_LAYER)(x) if pool_over_time else x
