"""ingest on audio clips and text corpora: exact rejection reasons and errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dlpipe.core.errors import InputDataError
from dlpipe.stages import ingest
from tests.conftest import Workspace, tone, tree_digest, write_wav
from tests.unit.test_ingest_images import outcome, read_csv


def header_only_wav() -> bytes:
    """A valid RIFF/WAVE header (16-bit mono, 8 kHz) whose data chunk is empty."""
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 0)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def run_audio(workspace: Workspace, add) -> ingest.Result:
    source = workspace.audio_dataset()
    add(source)
    before = tree_digest(source)
    result = ingest.run(workspace.load(), "clips")
    assert tree_digest(source) == before
    return result


def test_header_only_wav_is_rejected(workspace: Workspace) -> None:
    result = run_audio(workspace, lambda s: (s / "low/header_only.wav").write_bytes(header_only_wav()))
    assert outcome(result, "low/header_only.wav")["reason"] == "no_audio_frames"


def test_float_wav_with_nan_is_rejected(workspace: Workspace) -> None:
    samples = tone(0.5, 8000).astype(np.float32)
    samples[1234] = np.nan
    result = run_audio(workspace, lambda s: write_wav(s / "low/nan.wav", samples, 8000, "FLOAT"))
    row = outcome(result, "low/nan.wav")
    assert row["reason"] == "non_finite_samples" and "frame 1234" in row["detail"]


def test_stereo_48k_clip_is_accepted_with_its_facts(workspace: Workspace) -> None:
    result = run_audio(workspace, lambda s: write_wav(s / "high/stereo.wav", tone(0.5, 48000, channels=2), 48000, "PCM_24"))
    row = outcome(result, "high/stereo.wav")
    assert row["table"] == "manifest.csv"
    assert (row["sample_rate"], row["channels"], row["frames"], row["subtype"]) == ("48000", "2", "24000", "PCM_24")
    assert float(row["duration"]) == pytest.approx(0.5)


def test_clip_shorter_than_minimum_is_rejected(workspace: Workspace) -> None:
    result = run_audio(workspace, lambda s: write_wav(s / "low/blip.wav", tone(0.05, 8000), 8000))
    row = outcome(result, "low/blip.wav")
    assert row["reason"] == "too_short" and "0.050 s" in row["detail"]


def test_undecodable_audio_is_rejected(workspace: Workspace) -> None:
    result = run_audio(workspace, lambda s: (s / "low/garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk" * 20))
    assert outcome(result, "low/garbage.wav")["reason"] == "not_audio"


def test_empty_audio_file_is_rejected(workspace: Workspace) -> None:
    result = run_audio(workspace, lambda s: (s / "high/empty.wav").write_bytes(b""))
    assert outcome(result, "high/empty.wav")["reason"] == "empty_file"


# --- text ---------------------------------------------------------------------------------------

LATIN1_TEXT = "Le café était fermé. Über alles, naïve façade.\nSecond line\r\nthird"


def test_latin1_file_fails_under_utf8_and_names_the_fix(workspace: Workspace) -> None:
    (workspace.root / "corpus.txt").write_bytes(LATIN1_TEXT.encode("latin-1"))
    workspace.add_dataset("words", "text", "corpus.txt")
    with pytest.raises(InputDataError, match=r"not valid utf-8 at byte 6.*ingest\.text\.encoding") as caught:
        ingest.run(workspace.load(), "words")
    assert caught.value.exit_code == 4


def test_latin1_file_is_converted_to_utf8_with_its_encoding_set(workspace: Workspace) -> None:
    (workspace.root / "corpus.txt").write_bytes(LATIN1_TEXT.encode("latin-1"))
    workspace.add_dataset("words", "text", "corpus.txt")
    before = (workspace.root / "corpus.txt").read_bytes()
    result = ingest.run(workspace.load("ingest.text.encoding=latin-1"), "words")
    corpus = (result.out_dir / "corpus.txt").read_text(encoding="utf-8")
    assert corpus == LATIN1_TEXT.replace("\r\n", "\n") + "\n"
    row = read_csv(result.out_dir / "manifest.csv")[0]
    assert (row["lines"], row["tokens"], row["encoding"]) == ("3", "11", "latin-1")
    assert (workspace.root / "corpus.txt").read_bytes() == before


def test_empty_corpus_fails(workspace: Workspace) -> None:
    (workspace.root / "blank.txt").write_text("  \n\n \t\n", encoding="utf-8")
    workspace.add_dataset("words", "text", "blank.txt")
    before = (workspace.root / "blank.txt").read_bytes()
    with pytest.raises(InputDataError, match="empty") as caught:
        ingest.run(workspace.load(), "words")
    assert caught.value.exit_code == 4 and (workspace.root / "blank.txt").read_bytes() == before
    assert not (workspace.root / "data/words/ingest").exists()


def test_binary_file_in_corpus_folder_is_rejected(workspace: Workspace) -> None:
    folder = workspace.root / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"doc{i}.txt").write_text(f"document number {i} has words\n", encoding="utf-8")
    (folder / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    workspace.add_dataset("words", "text", "texts")
    result = ingest.run(workspace.load(), "words")
    assert outcome(result, "image.bin")["reason"] == "not_text"
    assert result.metrics["tokens"] == 15 and result.metrics["lines"] == 3


def test_token_count_is_exact_across_chunk_boundaries(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlpipe.data.media.text as text

    monkeypatch.setattr(text, "CHUNK_BYTES", 7)
    words = "alpha beta gamma delta epsilon\r\nzeta eta théta iota kappa\n" * 5
    (workspace.root / "c.txt").write_text(words, encoding="utf-8", newline="")
    info = text.inspect_text(workspace.root / "c.txt", "utf-8")
    assert (info.tokens, info.lines) == (50, 10)
