"""word2vec: training, evaluation, exports, determinism and every bad input, on tiny corpora."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.artifacts import sha256_file
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.queries.word2vec import load as load_vectors
from dlpipe.stages import ingest, word2vec
from tests.conftest import Workspace, tree_digest

TOPICS = {
    "royal": ["king", "queen", "prince", "princess", "palace", "crown", "throne", "royal", "court", "castle"],
    "sport": ["match", "team", "goal", "player", "coach", "score", "league", "season", "stadium", "referee"],
    "weather": ["rain", "storm", "wind", "cloud", "snow", "sunny", "forecast", "thunder", "flood", "cold"],
}
COMMON = ["the", "a", "man", "woman", "said", "today", "new", "big"]
# Small and fast: a few epochs of 16-d vectors, no UMAP map (one test below draws it).
FAST = {"vector_size": 16, "epochs": 3, "min_count": 2, "workers": 1, "seed": 7}


def topic_corpus(sentences: int = 600, seed: int = 0) -> str:
    """Sentences of 10 words, each from one topic plus common words: topic words share their contexts."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    lines = []
    for _ in range(sentences):
        words = TOPICS[names[rng.integers(len(names))]] + COMMON
        lines.append(" ".join(rng.choice(words, size=10)).capitalize() + ", 42 times!")
    return "\n".join(lines) + "\n"


def text_workspace(root: Path, text: str | bytes, **word2vec_params) -> Workspace:
    """A project with one text dataset ``words`` (source corpus.txt), ingested."""
    workspace = Workspace(root)
    source = root / "corpus.txt"
    source.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    workspace.params["word2vec"].update(FAST | word2vec_params)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    workspace.add_dataset("words", "text", "corpus.txt")
    ingest.run(workspace.load(), "words")
    return workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One trained project shared by the read-only tests (copied by those that break it)."""
    workspace = text_workspace(tmp_path_factory.mktemp("w2v"), topic_corpus())
    word2vec.run(workspace.load(), "words")
    return workspace


def copy_of(workspace: Workspace, root: Path) -> Workspace:
    """A copy of a trained project, to break without touching the shared one."""
    shutil.copytree(workspace.root, root, dirs_exist_ok=True)
    copy = Workspace(root)
    copy.params = workspace.params
    return copy


def out_dir(workspace: Workspace) -> Path:
    return workspace.root / "data/words/word2vec"


# --- a good run -----------------------------------------------------------------------------------


def test_outputs_sidecar_and_metrics(trained: Workspace) -> None:
    folder = out_dir(trained)
    for name in ("vectors.npy", "model.w2v", "corpus_tokens.txt", "vocab.csv", "vectors.txt", "index.faiss", "index.json", "word2vec.json"):
        assert (folder / name).is_file(), name
    vectors = load_vectors(trained.load(), "words")
    words = set(vectors.kv.index_to_key)
    # Lower-cased, punctuation dropped, numbers replaced: "King," and "42" and "!" never appear as such.
    assert words == {w for topic in TOPICS.values() for w in topic} | set(COMMON) | {"<num>", "times"}
    lines = (folder / "vectors.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"{len(words)} 16" and len(lines) == len(words) + 1
    assert (folder / "vocab.csv").read_text(encoding="utf-8").splitlines()[1].startswith("0,")
    metadata = (folder / "projector/metadata.tsv").read_text(encoding="utf-8").split()
    assert metadata == vectors.kv.index_to_key
    assert np.loadtxt(folder / "projector/vectors.tsv", delimiter="\t").shape == (len(words), 16)

    m = json.loads((trained.root / "data/words/metrics/word2vec.json").read_text(encoding="utf-8"))
    assert m["vocabulary"] == len(words) and m["tokens"] == 600 * 12
    assert len(json.loads((trained.root / "data/words/plots/word2vec/live/metrics.json").read_text())) > 0
    loss_rows = (trained.root / "data/words/plots/word2vec/live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 1 + FAST["epochs"] and m["final_loss"] > 0
    # Only king/queen/man/woman-style questions can be answered: the rest of questions-words.txt is out of vocabulary.
    assert m["analogy_questions"] == 19544 and 0 < m["analogy_oov_rate"] < 1
    assert m["wordsim_oov_rate"] > 0.9


def test_model_continues_training(trained: Workspace) -> None:
    from gensim.models import Word2Vec

    model = Word2Vec.load(str(out_dir(trained) / "model.w2v"))
    before = model.wv["king"].copy()
    corpus = str(out_dir(trained) / "corpus_tokens.txt")
    model.train(corpus_file=corpus, total_words=model.corpus_total_words, epochs=1)
    assert not np.array_equal(before, model.wv["king"])


def test_faiss_top10_equals_gensim_most_similar(trained: Workspace) -> None:
    from dlpipe.retrieval.index import load_index, search

    vectors = load_vectors(trained.load(), "words")
    kv = vectors.kv
    loaded = load_index(out_dir(trained), {"vectors_sha256": vectors.info["vector_files"]["vectors.npy"], "normalized": True})
    normed = kv.get_normed_vectors()
    _, ids = search(loaded.index, normed, 11)
    for row, word in enumerate(kv.index_to_key):
        found = [kv.index_to_key[i] for i in ids[row] if i != row][:10]
        assert found == [w for w, _ in kv.most_similar(word, topn=10)], word


def test_evaluate_on_own_files(trained: Workspace, tmp_path: Path) -> None:
    from dlpipe.text.vectors import evaluate

    analogies = tmp_path / "q.txt"
    analogies.write_text(": royal\nman king woman queen\nman prince woman princess\nman zebra woman queen\n", encoding="utf-8")
    pairs = tmp_path / "p.tsv"
    pairs.write_text("king\tqueen\t9\nking\train\t1\nmatch\tgoal\t8\nrain\tsnow\t8\nzebra\tking\t2\n", encoding="utf-8")
    kv = load_vectors(trained.load(), "words").kv
    scores = evaluate(kv, 1000, analogies, pairs)
    assert (scores["analogy_questions"], scores["analogy_answered"]) == (3, 2)
    assert scores["analogy_oov_rate"] == pytest.approx(1 / 3) and scores["wordsim_oov_rate"] == pytest.approx(0.2)
    from scipy.stats import spearmanr

    judged = [("king", "queen", 9), ("king", "rain", 1), ("match", "goal", 8), ("rain", "snow", 8)]  # zebra is unknown
    expected = spearmanr([score for *_, score in judged], [kv.similarity(a, b) for a, b, _ in judged]).statistic
    assert scores["wordsim_spearman"] == pytest.approx(expected, abs=1e-6)
    # restrict_vocab: only the most frequent word counts as known, so nothing can be answered.
    narrow = evaluate(kv, 1, analogies, pairs)
    assert narrow["analogy_answered"] == 0 and narrow["analogy_accuracy"] is None and narrow["analogy_oov_rate"] == 1


@pytest.mark.slow  # importing umap imports TensorFlow, and numba compiles UMAP: ~25 s; dvc repro draws the real map
def test_word_map_png(trained: Workspace, tmp_path: Path) -> None:
    from PIL import Image

    from dlpipe.text.export import write_word_map

    kv = load_vectors(trained.load(), "words").kv
    assert write_word_map(tmp_path / "map.png", kv, 12, seed=0, title="test") == 12
    assert Image.open(tmp_path / "map.png").size[0] > 500
    assert write_word_map(tmp_path / "none.png", kv, 3, seed=0, title="test") == 0 and not (tmp_path / "none.png").exists()


def test_two_runs_give_identical_vectors_and_a_new_seed_does_not(trained: Workspace, tmp_path: Path) -> None:
    copy = copy_of(trained, tmp_path)
    first = (out_dir(trained) / "vectors.txt").read_bytes()
    word2vec.run(copy.load(), "words")
    assert (out_dir(copy) / "vectors.txt").read_bytes() == first
    word2vec.run(copy.load("word2vec.seed=8"), "words")
    assert (out_dir(copy) / "vectors.txt").read_bytes() != first


def test_sample_corpus_neighbourhood_and_benchmark_coverage(tmp_path: Path) -> None:
    """The real sample corpus (gensim's lee_background.cor, ~60k tokens) with the shipped params."""
    from gensim.test.utils import datapath

    workspace = Workspace(tmp_path)
    workspace.add_dataset("news", "text", datapath("lee_background.cor"))
    workspace.params["word2vec"]["export"]["map_words"] = 0
    project = workspace.load()
    ingest.run(project, "news")
    result = word2vec.run(project, "news")
    m = result.metrics
    # Measured with seed 42, workers 1: 1,777 words; 146 of 19,544 analogy questions and 60 of 353 pairs in vocabulary.
    assert (m["vocabulary"], m["analogy_answered"], m["analogy_oov_rate"]) == (1777, 146, pytest.approx(0.99253))
    assert m["wordsim_oov_rate"] == pytest.approx(0.830028)
    assert m["first_epoch_loss"] > m["final_loss"] > 0
    neighbours = [w for w, _ in load_vectors(project, "news").kv.most_similar("police", topn=10)]
    assert "officers" in neighbours


# --- tokenisation ---------------------------------------------------------------------------------


def test_tokenize_policies(tmp_path: Path) -> None:
    from dlpipe.core.config import TokenizeConfig
    from dlpipe.text.tokens import tokenize_file

    source = tmp_path / "in.txt"
    source.write_text("Don't stop: 3.5 km in 1990s, 12:30!\nNew York New York\n", encoding="utf-8")
    base = {"lowercase": True, "punctuation": "drop", "numbers": "replace", "max_token_chars": 50}
    base |= {"phrases": False, "phrases_min_count": 1, "phrases_threshold": 1.0}

    def tokens(**change) -> str:
        tokenize_file(source, tmp_path / "out.txt", TokenizeConfig(**(base | change)))
        return (tmp_path / "out.txt").read_text(encoding="utf-8")

    assert tokens() == "don't stop <num> km in 1990s <num>\nnew york new york\n"
    assert tokens(lowercase=False, punctuation="keep", numbers="keep") == "Don't stop : 3.5 km in 1990s , 12:30 !\nNew York New York\n"
    assert tokens(numbers="drop", max_token_chars=4) == "stop km in\nnew york new york\n"
    assert tokens(phrases=True).endswith("new_york new_york\n")


def test_a_10_mb_line_is_streamed_in_bounded_sentences(tmp_path: Path) -> None:
    from dlpipe.core.config import TokenizeConfig
    from dlpipe.text.tokens import MAX_SENTENCE_TOKENS, tokenize_file

    words = np.array([f"word{i:04d}ing" for i in range(300)])
    block = " ".join(np.random.default_rng(0).choice(words, size=80_000)) + " "
    text = (block * (10 * 2**20 // len(block) + 1))[: 10 * 2**20]
    source = tmp_path / "line.txt"
    source.write_text(text, encoding="utf-8")  # one line, no newline at all
    expected = len(text.split())
    del text
    cfg = TokenizeConfig(
        lowercase=True, punctuation="drop", numbers="keep", max_token_chars=50, phrases=False, phrases_min_count=1, phrases_threshold=1.0
    )
    tracemalloc.start()
    stats = tokenize_file(source, tmp_path / "tokens.txt", cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stats.tokens == expected and stats.sentences == -(-expected // MAX_SENTENCE_TOKENS)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 10 MiB line"
    with open(tmp_path / "tokens.txt", encoding="utf-8") as handle:
        assert max(len(line.split()) for line in handle) == MAX_SENTENCE_TOKENS


# --- bad inputs: exact error, exit code, earlier output intact -------------------------------------


def test_vector_size_zero_is_a_config_error(trained: Workspace) -> None:
    before = tree_digest(out_dir(trained))
    with pytest.raises(ConfigError, match=r"word2vec\.vector_size: Input should be greater than or equal to 1") as caught:
        trained.load("word2vec.vector_size=0")
    assert caught.value.exit_code == 3 and tree_digest(out_dir(trained)) == before


def test_every_word_below_min_count(trained: Workspace, tmp_path: Path) -> None:
    copy = copy_of(trained, tmp_path)
    before = tree_digest(out_dir(copy))
    with pytest.raises(InputDataError, match=r"fewer than word2vec\.min_count=100000 times") as caught:
        word2vec.run(copy.load("word2vec.min_count=100000"), "words")
    assert caught.value.exit_code == 4 and "lower word2vec.min_count" in caught.value.hint
    assert tree_digest(out_dir(copy)) == before


def test_corpus_without_words(trained: Workspace, tmp_path: Path) -> None:
    copy = copy_of(trained, tmp_path)
    before = tree_digest(out_dir(copy))
    (copy.root / "corpus.txt").write_text("!!! ... 12 34\n-- ??\n", encoding="utf-8")
    ingest.run(copy.load(), "words")
    with pytest.raises(InputDataError, match="no token left after tokenisation") as caught:
        word2vec.run(copy.load("word2vec.tokenize.numbers=drop"), "words")
    assert caught.value.exit_code == 4 and tree_digest(out_dir(copy)) == before


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"  \n\n \t\n", "empty"), ("café crème".encode("latin-1"), "not valid utf-8"), (b"\x89PNG\r\n\x1a\n\x00\x00\rIHDR", "NUL byte")],
    ids=["empty", "not-utf8", "binary"],
)
def test_bad_source_fails_at_ingest_and_leaves_vectors(trained: Workspace, tmp_path: Path, content: bytes, match: str) -> None:
    copy = copy_of(trained, tmp_path)
    before = tree_digest(out_dir(copy))
    (copy.root / "corpus.txt").write_bytes(content)
    with pytest.raises(InputDataError, match=match) as caught:
        ingest.run(copy.load(), "words")
    assert caught.value.exit_code == 4 and tree_digest(out_dir(copy)) == before


def _swap_first_word(text: bytes) -> bytes:
    """The same corpus with its first word's case swapped: same length, same token count, other bytes."""
    first = text.split()[0]
    return text.replace(first, first.swapcase(), 1)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text + b"\xff\xfe bad",
        lambda text: text + b"\x00\x01",
        lambda text: text + b" extra words",
        lambda text: text[: len(text) // 2],
        _swap_first_word,
    ],
    ids=["not-utf8", "binary", "edited", "truncated", "same-length-swap"],
)
def test_corpus_damaged_after_ingest_is_refused(trained: Workspace, tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    copy = copy_of(trained, tmp_path)
    before = tree_digest(out_dir(copy))
    corpus = copy.root / "data/words/ingest/corpus.txt"
    corpus.write_bytes(damage(corpus.read_bytes()))
    with pytest.raises(ArtifactError, match="changed after ingest wrote it") as caught:
        word2vec.run(copy.load(), "words")
    assert caught.value.exit_code == 5 and tree_digest(out_dir(copy)) == before


def test_ingest_without_a_corpus_hash_is_refused(trained: Workspace, tmp_path: Path) -> None:
    copy = copy_of(trained, tmp_path)
    sidecar_path = copy.root / "data/words/ingest/manifest.json"
    recorded = json.loads(sidecar_path.read_text())
    assert recorded["corpus_sha256"] == sha256_file(copy.root / "data/words/ingest/corpus.txt")
    sidecar_path.write_text(json.dumps({key: value for key, value in recorded.items() if key != "corpus_sha256"}))
    with pytest.raises(ArtifactError, match="no corpus_sha256") as caught:
        word2vec.run(copy.load(), "words")
    assert caught.value.exit_code == 5 and "rerun `dlpipe ingest" in caught.value.hint


def test_binary_file_in_a_corpus_folder_is_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(topic_corpus(300), encoding="utf-8")
    (folder / "b.bin").write_bytes(b"\x00\x01\x02 binary \x00 stuff")
    workspace = Workspace(tmp_path)
    workspace.params["word2vec"].update(FAST)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    workspace.add_dataset("words", "text", "texts")
    ingest.run(workspace.load(), "words")
    result = word2vec.run(workspace.load(), "words")
    assert result.metrics["tokens"] == 300 * 12 and "binary" not in load_vectors(workspace.load(), "words").kv.key_to_index


def test_image_dataset_is_a_config_error(trained: Workspace, tmp_path: Path) -> None:
    copy = copy_of(trained, tmp_path)
    copy.params["datasets"]["pics"] = {"modality": "image", "source": "pics"}
    with pytest.raises(ConfigError, match=r"word2vec needs a corpus \(datasets.corpus\)") as caught:
        word2vec.run(copy.load(), "pics")
    assert caught.value.exit_code == 3
