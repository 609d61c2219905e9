"""ingest on labelled text: class folders, fastText lines and CSV rows, with exact reasons and errors."""

from __future__ import annotations

import pytest

from dlpipe.core.errors import InputDataError
from dlpipe.data.manifest import load_text_manifest
from dlpipe.stages import ingest
from tests.conftest import Workspace, tree_digest
from tests.unit.test_ingest_images import outcome, read_csv

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()


def sentence(label: str, i: int) -> str:
    """A distinct sentence per (label, i)."""
    return f"{label} says {WORDS[i % len(WORDS)]} number {i}"


def fasttext_dataset(workspace: Workspace, lines: list[str], name: str = "polarity") -> None:
    (workspace.root / "reviews.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    workspace.add_dataset(name, "text", "reviews.txt")
    workspace.params["datasets"][name]["labels"] = "fasttext"


def balanced(per_label: int = 5) -> list[str]:
    return [f"__label__{label} {sentence(label, i)}" for label in ("neg", "pos") for i in range(per_label)]


def test_fasttext_lines_become_documents_with_stratified_splits(workspace: Workspace) -> None:
    fasttext_dataset(workspace, balanced(10))
    before = tree_digest(workspace.root / "reviews.txt")
    result = ingest.run(workspace.load(), "polarity")
    assert tree_digest(workspace.root / "reviews.txt") == before
    rows = read_csv(result.out_dir / "manifest.csv")
    assert result.accepted == 20 and len(result.classes) == 2
    assert rows[0]["path"] == "reviews.txt:1" and rows[0]["label"] == "neg" and rows[0]["tokens"] == "5"
    for label in ("neg", "pos"):
        splits = sorted(r["split"] for r in rows if r["label"] == label)
        assert splits.count("test") >= 1 and splits.count("val") >= 1 and splits.count("train") >= 6
    manifest = load_text_manifest(workspace.load(), "polarity")
    assert manifest.documents[0] == sentence("neg", 0) and len(manifest.documents) == 20


def test_bad_fasttext_lines_get_their_reason(workspace: Workspace) -> None:
    lines = balanced(5) + ["no label here at all", "__label__pos __label__neg two labels", "__label__neg   ", "", "\t"]
    fasttext_dataset(workspace, lines)
    result = ingest.run(workspace.load(), "polarity")
    assert outcome(result, "reviews.txt:11")["reason"] == "no_label"
    assert outcome(result, "reviews.txt:12")["reason"] == "several_labels"
    assert outcome(result, "reviews.txt:13")["reason"] == "empty_document"
    assert result.accepted == 10 and len(result.classes) == 2  # blank lines are not documents


def test_duplicates_are_kept_once_and_conflicts_dropped(workspace: Workspace) -> None:
    # Same words with other spacing is the same document.
    lines = balanced(5) + [f"__label__neg  {sentence('neg', 0)}  ", f"__label__pos {sentence('neg', 1)}"]
    fasttext_dataset(workspace, lines)
    result = ingest.run(workspace.load(), "polarity")
    assert outcome(result, "reviews.txt:11")["reason"] == "duplicate"
    assert outcome(result, "reviews.txt:2")["reason"] == outcome(result, "reviews.txt:12")["reason"] == "label_conflict"
    assert result.metrics["duplicates"] == 1 and result.metrics["label_conflicts"] == 2


def test_class_folders_of_txt_files_are_one_document_each(workspace: Workspace) -> None:
    source = workspace.add_dataset("folders", "text", "docs")
    workspace.params["datasets"]["folders"]["labels"] = "folders"
    for label in ("sport", "tech"):
        (source / label).mkdir(parents=True)
        for i in range(4):
            (source / label / f"{i}.txt").write_text(f"{sentence(label, i)}\nsecond line\n", encoding="utf-8")
    (source / "tech" / "empty.txt").write_text(" \n\n", encoding="utf-8")
    result = ingest.run(workspace.load(), "folders")
    assert outcome(result, "tech/empty.txt")["reason"] == "empty_document"
    manifest = load_text_manifest(workspace.load(), "folders")
    assert manifest.documents[0] == f"{sentence('sport', 0)} second line"
    assert [row["label"] for row in manifest.rows[:4]] == ["sport"] * 4


def test_csv_rows_use_the_named_columns(workspace: Workspace) -> None:
    rows = ["id,review,stars"] + [f'{i},"{sentence(s, i)}, with a comma",{s}' for s in ("1", "5") for i in range(4)]
    rows.append("99,,5")
    (workspace.root / "table.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    workspace.add_dataset("table", "text", "table.csv")
    workspace.params["datasets"]["table"]["labels"] = "csv"
    result = ingest.run(workspace.load("ingest.text.text_column=review", "ingest.text.label_column=stars"), "table")
    assert result.accepted == 8 and len(result.classes) == 2
    assert outcome(result, "table.csv:10")["reason"] == "empty_document"  # rows counted as a spreadsheet shows them
    assert load_text_manifest(workspace.load(), "table").documents[0] == f"{sentence('1', 0)}, with a comma"


def test_csv_without_the_text_column_names_it_and_the_param(workspace: Workspace) -> None:
    (workspace.root / "table.csv").write_text("body,label\nsome text,a\n", encoding="utf-8")
    workspace.add_dataset("table", "text", "table.csv")
    workspace.params["datasets"]["table"]["labels"] = "csv"
    expected = r"table\.csv: no column 'text' \(ingest\.text\.text_column\); the header has body, label"
    with pytest.raises(InputDataError, match=expected) as caught:
        ingest.run(workspace.load(), "table")
    assert caught.value.exit_code == 4


def test_a_label_too_rare_to_split_is_named(workspace: Workspace) -> None:
    fasttext_dataset(workspace, balanced(5) + ["__label__meh only one of these"])
    with pytest.raises(InputDataError, match=r"fewer than 3 documents.*'meh': 1 \(reviews\.txt:11\)"):
        ingest.run(workspace.load(), "polarity")
    assert not (workspace.root / "data/polarity/ingest").exists()


def test_non_utf8_fasttext_names_the_byte_and_the_param(workspace: Workspace) -> None:
    fasttext_dataset(workspace, balanced(5))
    (workspace.root / "reviews.txt").write_bytes(b"__label__pos caf\xe9 au lait\n" + (workspace.root / "reviews.txt").read_bytes())
    with pytest.raises(InputDataError, match=r"reviews\.txt: .*utf-8.*byte 16"):
        ingest.run(workspace.load(), "polarity")
    result = ingest.run(workspace.load("ingest.text.encoding=cp1252"), "polarity")
    assert load_text_manifest(workspace.load("ingest.text.encoding=cp1252"), "polarity").documents[0] == "café au lait"
    assert result.accepted == 11


def test_labels_on_an_image_dataset_is_a_config_error(workspace: Workspace) -> None:
    from dlpipe.core.errors import ConfigError

    workspace.image_dataset()
    workspace.params["datasets"]["imgs"]["labels"] = "csv"
    with pytest.raises(ConfigError, match=r"datasets\.image\.imgs"):
        workspace.load()
