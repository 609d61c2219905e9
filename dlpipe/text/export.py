"""Exports of trained word vectors: word2vec text format, TensorBoard projector
TSVs, a labelled UMAP map of the most frequent words, and a FAISS index.

Every function writes into a folder that :func:`dlpipe.core.artifacts.atomic_dir` swaps
in whole, so none of them needs its own temporary name. Row ``i`` of every export
is word ``i`` of the KeyedVectors (most frequent first), as in ``vocab.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TEXT_FILE = "vectors.txt"
PROJECTOR_DIR = "projector"
MAP_FILE = "words_umap.png"
# UMAP needs a few points to build a neighbour graph; fewer words get no map.
MIN_MAP_WORDS = 5


def write_text_format(path: Path, kv: Any) -> None:
    """The original word2vec text format (header ``count dimension``, then ``word v1 v2 ...``)."""
    kv.save_word2vec_format(str(path), binary=False)


def write_projector(folder: Path, kv: Any, words: int) -> int:
    """``vectors.tsv`` and ``metadata.tsv`` for projector.tensorflow.org; ``words`` 0 means all. Return the rows."""
    count = len(kv) if words == 0 else min(words, len(kv))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "vectors.tsv", "w", encoding="utf-8", newline="\n") as handle:
        np.savetxt(handle, kv.vectors[:count], delimiter="\t", fmt="%.6g")
    # A single-column metadata file has no header row (the projector's rule).
    (folder / "metadata.tsv").write_text("".join(f"{word}\n" for word in kv.index_to_key[:count]), encoding="utf-8")
    return count


def write_word_map(path: Path, kv: Any, words: int, seed: int, title: str) -> int:
    """A seeded 2-D UMAP (cosine) of the ``words`` most frequent words, each point labelled; return how many.

    Returns 0 without writing when the vocabulary has fewer than MIN_MAP_WORDS words.
    """
    count = min(words, len(kv))
    if count < MIN_MAP_WORDS:
        return 0
    from matplotlib.figure import Figure

    from dlpipe.reports.figures import save_png
    from dlpipe.retrieval.clustering import load_umap

    umap = load_umap()

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, count - 1), min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1)
    coords = reducer.fit_transform(kv.vectors[:count])
    fig = Figure(figsize=(14, 14), layout="constrained")
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1], s=6, color="tab:blue", alpha=0.6)
    for word, (x, y) in zip(kv.index_to_key[:count], coords, strict=True):
        ax.annotate(word, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    save_png(fig, path)
    return count


def write_index(folder: Path, kv: Any, info: dict[str, Any]) -> None:
    """An exact inner-product FAISS index of the L2-normalised vectors (cosine similarity), with its sidecar."""
    from dlpipe.retrieval.index import build_index, save_index

    index = build_index(kv.get_normed_vectors(), "Flat", metric="inner_product")
    save_index(index, folder, {**info, "factory": "Flat", "normalized": True, "ids": "row i is word i of vocab.csv"})
