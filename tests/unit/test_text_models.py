"""finetune on labelled text: every architecture learns, word2vec starts the embedding, padding is masked, bad inputs are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.errors import ArtifactError, ConfigError
from dlpipe.data.manifest import load_text_manifest
from dlpipe.stages import finetune_text, ingest, word2vec
from dlpipe.text.tokens import iter_tokens
from tests.conftest import Workspace, tree_digest

# Small networks and few epochs: enough to separate two corpora, quick on two cores.
SMALL = (
    "finetune.text.embedding_dim=16",
    "finetune.text.max_length=40",
    "finetune.text.cnn.filters=16",
    "finetune.rnn.units=16",
    "finetune.text.batch_size=16",
    "finetune.text.epochs=12",
    "finetune.text.lr=0.01",
    "finetune.text.min_count=1",
    "finetune.early_stopping_patience=4",
    "finetune.top_losses=5",
)
SMALL_WORD2VEC = ("word2vec.vector_size=16", "word2vec.epochs=2", "word2vec.min_count=2", "word2vec.export.map_words=0")


def gensim_corpus(name: str) -> Path:
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data" / name


def news_sentences(count: int) -> list[str]:
    """Sentences of Lee's news corpus (Australian news of 2001), at least six words each."""
    text = gensim_corpus("lee_background.cor").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]
    return sentences[:count]


def encyclopedia_passages(count: int, words: int = 20) -> list[str]:
    """Passages of ``words`` words, spread over gensim's stemmed Wikipedia sample (head500.noblanks.cor)."""
    tokens = gensim_corpus("head500.noblanks.cor").read_text(encoding="utf-8").split()
    step = len(tokens) // count
    return [" ".join(tokens[i : i + words]) for i in range(0, step * count, step)]


def two_corpora(workspace: Workspace, name: str = "corpora", per_class: int = 120) -> None:
    """A fastText dataset whose classes are two real corpora: news sentences and encyclopedia passages (clearly separable)."""
    lines = [f"__label__news {s}" for s in news_sentences(per_class)]
    lines += [f"__label__encyclopedia {s}" for s in encyclopedia_passages(per_class)]
    (workspace.root / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    workspace.add_dataset(name, "text", f"{name}.txt")
    workspace.params["datasets"][name]["labels"] = "fasttext"
    ingest.run(workspace.load(), name)


def news_vectors(workspace: Workspace) -> Path:
    """word2vec vectors of Lee's news corpus, as the demo's are made (small and quick)."""
    (workspace.root / "news.cor").write_bytes(gensim_corpus("lee_background.cor").read_bytes())
    workspace.add_dataset("news", "text", "news.cor")
    ingest.run(workspace.load(), "news")
    return word2vec.run(workspace.load(*SMALL_WORD2VEC), "news").out_dir


@pytest.mark.parametrize("architecture", ["cnn", "gru", "lstm", "bigru", "bilstm"])
def test_every_architecture_separates_two_corpora(workspace: Workspace, architecture: str) -> None:
    two_corpora(workspace)
    result = finetune_text.run(workspace.load(*SMALL, f"finetune.text.architecture={architecture}"), "corpora")
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    model_dir = result.model_dir
    info = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    assert info["modality"] == "text" and info["architecture"] == architecture and info["classes"] == ["encyclopedia", "news"]
    assert info["vocabulary"]["words"] == len((model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines())
    assert info["tokenize"]["lowercase"] is True and info["max_length"] == 40
    for name in ("confusion.csv", "confusion.png", "history.png", "top_losses.csv", "top_losses.md", "live/plots/metrics/train/loss.tsv"):
        assert (result.plots_dir / name).is_file(), name
    top = (result.plots_dir / "top_losses.csv").read_text(encoding="utf-8").splitlines()
    assert top[0] == "rank,row,path,truth,predicted,confidence,loss,document" and len(top) == 6


def test_word2vec_vectors_start_a_frozen_embedding(workspace: Workspace) -> None:
    import keras

    vectors_dir = news_vectors(workspace)
    two_corpora(workspace)
    params = (*SMALL, f"finetune.text.word2vec={vectors_dir}", "finetune.text.freeze_embeddings=true")
    result = finetune_text.run(workspace.load(*params), "corpora")

    model = keras.saving.load_model(result.model_dir / "model.keras", compile=False)
    layer = model.get_layer("word_embedding")
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 1
    words = (result.model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    trained = {line.split(" ", 1)[0]: line for line in (vectors_dir / "vectors.txt").read_text(encoding="utf-8").splitlines()[1:]}
    shared = [w for w in words[2:] if w in trained]
    matrix = layer.get_weights()[0]
    for word in shared[:20]:  # a frozen layer still holds word2vec's vectors after training
        expected = np.array(trained[word].split()[1:], dtype=np.float32)
        np.testing.assert_allclose(matrix[words.index(word)], expected, rtol=1e-6)
    info = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))
    assert info["word2vec"]["found_words"] == len(shared) and info["frozen_embeddings"] is True
    assert info["word2vec"]["found_words"] + info["word2vec"]["missing_words"] == len(words) - 2
    assert result.metrics["word2vec_missing_words"] == info["word2vec"]["missing_words"] > 0


def test_word2vec_vectors_of_another_tokeniser_or_size_are_refused(workspace: Workspace) -> None:
    vectors_dir = news_vectors(workspace)
    two_corpora(workspace)
    start = f"finetune.text.word2vec={vectors_dir}"
    with pytest.raises(ConfigError, match=r"finetune\.text\.embedding_dim is 32, but the vectors in .* have 16 dimensions") as caught:
        finetune_text.run(workspace.load(*SMALL, start, "finetune.text.embedding_dim=32"), "corpora")
    assert caught.value.exit_code == 3
    with pytest.raises(ConfigError, match=r"tokenised with other word2vec\.tokenize settings \(lowercase, numbers\)"):
        finetune_text.run(workspace.load(*SMALL, start, "word2vec.tokenize.lowercase=false", "word2vec.tokenize.numbers=keep"), "corpora")
    assert not (workspace.root / "data" / "corpora" / "model").exists()

    (vectors_dir / "vectors.txt").write_text("2 16\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"vectors\.txt is missing or differs from what word2vec recorded") as caught:
        finetune_text.run(workspace.load(*SMALL, start), "corpora")
    assert caught.value.exit_code == 5


def test_long_documents_are_truncated_and_counted(workspace: Workspace) -> None:
    two_corpora(workspace, per_class=40)
    result = finetune_text.run(workspace.load(*SMALL, "finetune.text.max_length=8", "finetune.text.epochs=1"), "corpora")
    info = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))
    project = workspace.load()
    documents = load_text_manifest(project, "corpora").documents
    longer = sum(len(list(iter_tokens(document, project.params.word2vec.tokenize))) > 8 for document in documents)
    assert info["documents"]["truncated"] == result.metrics["truncated_documents"] == longer > 0
    assert info["documents"]["longest_tokens"] > 8


def test_phrases_and_unknown_architectures_are_config_errors(workspace: Workspace) -> None:
    two_corpora(workspace, per_class=40)
    ingested = tree_digest(workspace.root / "data")
    with pytest.raises(ConfigError, match=r"word2vec\.tokenize\.phrases: true"):
        finetune_text.run(workspace.load(*SMALL, "word2vec.tokenize.phrases=true"), "corpora")
    with pytest.raises(ConfigError, match=r"finetune\.text\.architecture.*'cnn', 'gru', 'lstm', 'bigru' or 'bilstm'"):
        workspace.load("finetune.text.architecture=transformer")
    assert tree_digest(workspace.root / "data") == ingested


def test_image_stage_refuses_a_text_dataset(workspace: Workspace) -> None:
    from dlpipe.stages import finetune

    two_corpora(workspace, per_class=40)
    with pytest.raises(ConfigError, match=r"dataset 'corpora' is text; this stage needs images"):
        finetune.run(workspace.load(*SMALL), "corpora")


@pytest.mark.parametrize("architecture", ["cnn", "bigru"])
def test_padding_never_changes_a_prediction(workspace: Workspace, architecture: str) -> None:
    from dlpipe.models.heads.registry import head_class
    from dlpipe.models.sequence_network import build_text_network

    workspace.add_dataset("any", "text", "any.txt")
    finetune = workspace.load(*SMALL, f"finetune.text.architecture={architecture}").params.finetune
    cfg = finetune.text
    model = build_text_network(cfg, finetune.rnn, head_class("classification")(), 50, 3, seed=0)
    tokens = np.zeros((3, cfg.max_length), dtype=np.int32)
    tokens[0, :5], tokens[1, :1], tokens[2, :] = [5, 9, 2, 7, 7], [3], np.arange(cfg.max_length) % 48 + 2
    before = model.predict(tokens, verbose=0)
    layer = model.get_layer("word_embedding")
    weights = layer.get_weights()[0]
    weights[0] = np.random.default_rng(1).normal(0, 5, size=weights.shape[1])  # whatever the padding's vector holds
    layer.set_weights([weights])
    np.testing.assert_allclose(model.predict(tokens, verbose=0), before, atol=1e-6)
    assert not np.allclose(before[0], before[1])


def test_vocabulary_comes_from_the_training_split_with_pad_and_oov() -> None:
    from dlpipe.models.vocabulary import OOV_ID, build_vocabulary, encode

    vocabulary = build_vocabulary([["b", "a", "a"], ["c", "b", "a"], ["d"]], min_count=2, max_size=10)
    assert vocabulary.words == ["<pad>", "<oov>", "a", "b"]
    encoded = encode(vocabulary, [["a", "z", "b", "a"], ["b"]], max_length=3)
    assert encoded.ids.tolist() == [[2, OOV_ID, 3], [3, 0, 0]]
    assert (encoded.truncated, encoded.oov_tokens, encoded.tokens) == (1, 1, 4)
    assert build_vocabulary([["x", "y", "y"]], min_count=1, max_size=1).words == ["<pad>", "<oov>", "y"]
