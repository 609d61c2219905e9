"""``dlpipe word2vec``: train, similar, analogy, doesnt-match and evaluate through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.core.artifacts import sha256_file
from tests.cli.test_cli import HEAVY
from tests.conftest import REPO, Workspace, save_hostile_npy
from tests.unit.test_word2vec import FAST, topic_corpus


def said(result) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """--params of a project whose text dataset was ingested and trained through the CLI."""
    workspace = Workspace(tmp_path_factory.mktemp("w2v_cli"))
    (workspace.root / "corpus.txt").write_text(topic_corpus(), encoding="utf-8")
    workspace.params["word2vec"].update(FAST)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    workspace.add_dataset("words", "text", "corpus.txt")
    options = ["--params", str(workspace.params_path)]
    assert CliRunner().invoke(app, ["ingest", *options]).exit_code == 0
    trained = CliRunner().invoke(app, ["word2vec", "train", "--json", *options])
    assert trained.exit_code == 0, trained.output
    (report,) = json.loads(trained.stdout)
    assert report["dataset"] == "words" and report["out_dir"].endswith("data/words/word2vec")
    return options


@pytest.mark.parametrize("argv", [["word2vec", "--help"], ["word2vec", "train", "--help"], ["word2vec", "similar", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = f"from dlpipe.cli.app import app; app({argv!r}, prog_name='dlpipe', standalone_mode=False)"
    completed = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in completed.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), f"--help imported {sorted(imported & set(HEAVY))}"


def test_every_word2vec_command_has_the_common_options() -> None:
    for command in ("train", "similar", "analogy", "doesnt-match", "evaluate"):
        text = CliRunner().invoke(app, ["word2vec", command, "--help"], terminal_width=200).output
        for option in ("--params", "--set", "--verbose", "--json"):
            assert option in text, f"word2vec {command} lacks {option}"


def test_similar(project: list[str]) -> None:
    result = CliRunner().invoke(app, ["word2vec", "similar", "King", "-n", "3", "--json", *project])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["word"] == "King" and len(answer["neighbours"]) == 3
    similarities = [n["similarity"] for n in answer["neighbours"]]
    assert similarities == sorted(similarities, reverse=True) and all(n["word"] != "king" for n in answer["neighbours"])
    table = CliRunner().invoke(app, ["word2vec", "similar", "king", *project])
    assert table.exit_code == 0 and "words similar to king" in table.stdout


def test_analogy(project: list[str]) -> None:
    argv = ["word2vec", "analogy", "--positive", "king", "--positive", "woman", "--negative", "man", "-n", "5", "--json"]
    result = CliRunner().invoke(app, [*argv, *project])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["positive"], answer["negative"]) == (["king", "woman"], ["man"])
    assert not {"king", "woman", "man"} & {a["word"] for a in answer["answers"]} and len(answer["answers"]) == 5


def test_doesnt_match(project: list[str]) -> None:
    result = CliRunner().invoke(app, ["word2vec", "doesnt-match", "king", "queen", "prince", "princess", "rain", "--json", *project])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"words": ["king", "queen", "prince", "princess", "rain"], "doesnt_match": "rain"}
    too_few = CliRunner().invoke(app, ["word2vec", "doesnt-match", "king", *project])
    assert too_few.exit_code == 4 and "at least two words" in said(too_few)


def test_unknown_word_suggests_close_ones(project: list[str]) -> None:
    result = CliRunner().invoke(app, ["word2vec", "similar", "qeen", *project])
    assert result.exit_code == 4 and "Traceback" not in result.output
    assert "'qeen' is not in the vocabulary of dataset 'words'" in said(result) and "queen" in said(result)
    analogy = CliRunner().invoke(app, ["word2vec", "analogy", "--positive", "kingg", *project])
    assert analogy.exit_code == 4 and "king" in analogy.stderr


def test_evaluate(project: list[str]) -> None:
    result = CliRunner().invoke(app, ["word2vec", "evaluate", "--json", *project])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["analogy_questions"] == 19544 and scores["restrict_vocab"] == 30000
    narrow = CliRunner().invoke(app, ["word2vec", "evaluate", "--json", "--set", "word2vec.evaluate.restrict_vocab=1", *project])
    assert json.loads(narrow.stdout)["analogy_oov_rate"] == 1


def test_queries_refuse_changed_vectors(project: list[str]) -> None:
    vectors = Path(project[1]).parent / "data/words/word2vec/vectors.npy"
    original = vectors.read_bytes()
    try:
        vectors.write_bytes(original + b"\0")
        result = CliRunner().invoke(app, ["word2vec", "similar", "king", *project])
        assert result.exit_code == 5 and "differ from what word2vec wrote" in said(result)
    finally:
        vectors.write_bytes(original)


def test_vectors_that_would_run_code_are_refused(project: list[str], tmp_path: Path) -> None:
    folder = Path(project[1]).parent / "data/words/word2vec"
    saved = {name: (folder / name).read_bytes() for name in ("vectors.npy", "word2vec.json")}
    marker = tmp_path / "ran"
    try:
        save_hostile_npy(folder / "vectors.npy", marker)
        # whoever can write the folder can also make the sidecar vouch for the file
        sidecar = json.loads(saved["word2vec.json"])
        sidecar["vector_files"]["vectors.npy"] = sha256_file(folder / "vectors.npy")
        (folder / "word2vec.json").write_text(json.dumps(sidecar), encoding="utf-8")
        for command in (["similar", "king"], ["evaluate"]):
            result = CliRunner().invoke(app, ["word2vec", *command, *project])
            assert result.exit_code == 5 and "not a readable array of numbers" in said(result), result.output
        assert not marker.exists()
    finally:
        for name, content in saved.items():
            (folder / name).write_bytes(content)


def test_no_vectors_yet_is_an_artifact_error(workspace: Workspace) -> None:
    (workspace.root / "corpus.txt").write_text("a b c\n", encoding="utf-8")
    workspace.add_dataset("words", "text", "corpus.txt")
    result = CliRunner().invoke(app, ["word2vec", "similar", "king", "--dataset", "words"])
    assert result.exit_code == 5 and "word2vec sidecar of dataset 'words' not found" in said(result)
