"""The text path through the command line: predict, embed, cluster, search and heatmap on a labelled text dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.stages import finetune_text
from tests.conftest import Workspace, image_bytes, tree_digest
from tests.unit.test_text_models import SMALL, encyclopedia_passages, news_sentences, two_corpora

NEWS = "The Prime Minister said the government would announce new measures in Sydney on Tuesday."
ENCYCLOPEDIA = "anarch polit philosophi theori societi govern centuri encyclopedia econom system"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """News sentences vs encyclopedia passages, ingested, with a small trained text CNN."""
    root = tmp_path_factory.mktemp("text_cli")
    workspace = Workspace(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        two_corpora(workspace)
        for setting in (*SMALL, "search.k=5", "search.examples=3", "heatmap.per_class=3", "heatmap.top_losses=2", "cluster.k=2"):
            key, value = setting.split("=", 1)
            node = workspace.params
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = json.loads(value) if value[0].isdigit() or value in ("true", "false") else value
        finetune_text.run(workspace.load(), "corpora")
    return workspace


def invoke(project: Workspace, *argv: str, stdin: str | None = None):
    return CliRunner().invoke(app, [*argv, "--params", str(project.params_path)], input=stdin)


def test_predict_arguments_file_and_stdin(project: Workspace, tmp_path: Path) -> None:
    result = invoke(project, "predict", NEWS, ENCYCLOPEDIA, "-d", "corpora", "--json", "-k", "1")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["top"][0]["label"] for a in answers] == ["news", "encyclopedia"]
    assert answers[0]["source"] == "argument 1" and answers[0]["document"] == NEWS

    lines = tmp_path / "documents.txt"
    lines.write_text("\n".join([*news_sentences(130)[-5:], "", *encyclopedia_passages(130)[-5:], "!!! ???"]) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.csv"
    result = invoke(project, "predict", "--file", str(lines), "-d", "corpora", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["source"] for r in rows][:2] == [f"{lines}:1", f"{lines}:2"] and len(rows) == 11  # the blank line is skipped
    assert [r["label_1"] for r in rows[:10]] == ["news"] * 5 + ["encyclopedia"] * 5
    assert rows[10]["error"].startswith("empty_document") and rows[10]["label_1"] == ""

    # An argument longer than a file name may be (ENAMETOOLONG) is a document, not an error.
    result = invoke(project, "predict", NEWS * 30, "-d", "corpora", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["top"][0]["label"] == "news", result.output

    result = invoke(project, "predict", "-", "-d", "corpora", "--json", stdin=f"{NEWS}\n\n{ENCYCLOPEDIA}\n")
    assert result.exit_code == 0, result.output
    assert [(a["source"], a["top"][0]["label"]) for a in json.loads(result.stdout)] == [("stdin:1", "news"), ("stdin:3", "encyclopedia")]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["photo.png"], 4, "'photo.png' is a file, and .* is a text model"),
        (["--file", "latin1.txt"], 4, r"latin1\.txt is not UTF-8 \(cannot decode the byte at offset 3\)"),
        (["!!!"], 4, "argument 1 has no token after tokenisation"),
        ([], 4, "no document to predict"),
    ],
)
def test_predict_bad_text_inputs(project: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv, code, message) -> None:
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.png").write_bytes(image_bytes())
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 \u00e9t\u00e9\n".encode("latin-1"))
    model_dir = tree_digest(project.root / "data" / "corpora" / "model")
    result = invoke(project, "predict", *argv, "-d", "corpora")
    assert result.exit_code == code, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert tree_digest(project.root / "data" / "corpora" / "model") == model_dir


def test_embed_cluster_search_and_heatmap_on_text(project: Workspace) -> None:
    data = project.root / "data" / "corpora"
    assert invoke(project, "embed", "-d", "corpora").exit_code == 0
    vectors = np.load(data / "embed" / "embeddings.npy")
    info = json.loads((data / "embed" / "embeddings.json").read_text(encoding="utf-8"))
    assert vectors.shape == (240, info["dimension"]) and info["modality"] == "text" and info["dimension"] == 48

    result = invoke(project, "cluster", "-d", "corpora", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((data / "metrics" / "cluster.json").read_text(encoding="utf-8"))
    assert metrics["nmi"] >= 0.7 and "bag_of_words_nmi" in metrics, metrics
    assert (data / "cluster" / "cluster_documents.md").read_text(encoding="utf-8").startswith("# corpora: the documents nearest")

    result = invoke(project, "search", "build", "-d", "corpora")
    assert result.exit_code == 0, result.output
    examples = list(csv.DictReader((data / "search" / "examples.csv").open(encoding="utf-8")))
    assert len(examples) == 3 * 6 and examples[0]["rank"] == "0"
    result = invoke(project, "search", "query", NEWS, "-k", "5", "-d", "corpora", "--json")
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    assert answer["query"] == NEWS and [n["label"] for n in answer["neighbours"]].count("news") >= 4
    assert all(n["document"] for n in answer["neighbours"])

    result = invoke(project, "heatmap", "-d", "corpora")
    assert result.exit_code == 0, result.output
    metrics = json.loads((data / "metrics" / "heatmap.json").read_text(encoding="utf-8"))
    assert metrics["documents"] == 3 * 2 + 2
    # The map ranks the words that matter first: deleting them lowers the class faster than a random order.
    assert metrics["occlusion_deletion_auc"] < metrics["random_deletion_auc"], metrics
    page = (data / "heatmap" / "words.html").read_text(encoding="utf-8")
    assert page.count("class='doc'") == 8 and "title='drop " in page
    words = list(csv.DictReader((data / "heatmap" / "words.csv").open(encoding="utf-8")))
    assert {int(w["document"]) for w in words} == set(range(8))


def test_text_model_refuses_a_class_it_does_not_know(project: Workspace) -> None:
    result = invoke(project, "heatmap", "some words here", "-d", "corpora", "--class", "poetry")
    assert result.exit_code == 3 and "known classes: encyclopedia, news" in result.output
