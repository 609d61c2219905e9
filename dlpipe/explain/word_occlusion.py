"""Which words carry the class: occlusion over a text model's token ids, and its deletion evidence.

Occluding a word means masking it (id 0, the padding the network already ignores): the
ConvNet's windows then see a zero vector there and its pooling skips the position; the
recurrent networks skip the step. A span of ``span`` words is occluded at every start, all
copies of one document in one batch; a word's importance is the mean drop of the target's
probability over the spans that cover it.

Deletion evidence (Petsiuk et al., 2018, over words instead of pixels): mask the words most
important first, one more per step, and follow the target's probability; a lower area under
that curve than for a random order means the map ranks the words that matter first. Curves
of documents of different lengths are compared on a common grid of removed fractions.
"""

from __future__ import annotations

import numpy as np

from dlpipe.models.vocabulary import PAD_ID

# Removed fractions the deletion curves are resampled to (0, 0.05, ..., 1).
CURVE_POINTS = 21


def target_probabilities(model, ids: np.ndarray, target: int, batch_size: int) -> np.ndarray:
    """The target unit's output for each row of token ids."""
    return model.predict(ids, batch_size=batch_size, verbose=0)[:, target]


def word_importance(model, ids: np.ndarray, length: int, target: int, span: int, batch_size: int) -> np.ndarray:
    """Per position of one document (its first ``length`` ids), the mean probability drop when it is masked.

    Args:
        model: the text classifier (token ids in, probabilities out).
        ids: the document's (max_length,) token ids.
        length: its real tokens (positions past it are padding).
        target: the output unit explained.
        span: words masked together (1: one word at a time).
        batch_size: copies per forward pass.
    """
    if length == 0:
        return np.zeros(0, dtype=np.float32)
    span = min(span, length)
    starts = np.arange(length - span + 1)
    copies = np.repeat(ids[None], len(starts) + 1, axis=0)  # row 0 stays whole: the base probability
    for row, start in enumerate(starts, start=1):
        copies[row, start : start + span] = PAD_ID
    probabilities = target_probabilities(model, copies, target, batch_size)
    drops = probabilities[0] - probabilities[1:]
    total = np.zeros(length, dtype=np.float64)
    covered = np.zeros(length, dtype=np.float64)
    for start, drop in zip(starts, drops, strict=True):
        total[start : start + span] += drop
        covered[start : start + span] += 1
    return (total / covered).astype(np.float32)


def deletion_curve(model, ids: np.ndarray, order: np.ndarray, target: int, batch_size: int) -> np.ndarray:
    """The target's probability after masking 0, 1, ..., len(order) words in ``order``, resampled to CURVE_POINTS."""
    copies = np.repeat(ids[None], len(order) + 1, axis=0)
    for step in range(1, len(order) + 1):
        copies[step:, order[step - 1]] = PAD_ID
    curve = target_probabilities(model, copies, target, batch_size)
    removed = np.linspace(0.0, 1.0, len(curve))
    return np.interp(np.linspace(0.0, 1.0, CURVE_POINTS), removed, curve).astype(np.float32)


def importance_order(importance: np.ndarray) -> np.ndarray:
    """Positions from the most to the least important (ties keep reading order)."""
    return np.argsort(-importance, kind="stable")
