"""Any content, clear error: every loader meets random and malformed files with a DlpipeError.

Property-based (hypothesis): each loader of a file dlpipe reads gets random bytes, truncated copies
of the real file, valid JSON with a field deleted or of the wrong type, deep nesting, a huge file
and a folder in its place. Where a sidecar vouches for a file by its hash, the hash is updated too,
so the content reaches the parser (as it would from someone who can write the folder). Each load
must return or raise a DlpipeError (exit 3, 4 or 5), within a time bound (hypothesis' deadline) and
a memory bound (the address space may grow by 1 GiB at most).
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlpipe.core.artifacts import sha256_file
from dlpipe.core.config import load_project
from dlpipe.core.errors import DlpipeError
from dlpipe.data.manifest import load_image_manifest, load_manifest
from dlpipe.data.targets import read_targets_csv
from dlpipe.models.store import load_trained_model
from dlpipe.retrieval.embeddings import load_embeddings
from dlpipe.retrieval.index import load_index
from dlpipe.stages import embed, finetune, ingest, search, word2vec
from dlpipe.text.vectors import load_vectors
from tests.conftest import Workspace
from tests.unit.test_image_models import TINY, tiny_shapes
from tests.unit.test_word2vec import FAST, topic_corpus

EXAMPLES = settings(
    max_examples=12,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    database=None,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
DEEP = "[" * 5_000 + "]" * 5_000  # past the recursion limit of every parser
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny images through ingest, finetune, embed and search build; a corpus through word2vec."""
    workspace = Workspace(tmp_path_factory.mktemp("hostile"))
    tiny_shapes(workspace, per_class=6)
    (workspace.root / "corpus.txt").write_text(topic_corpus(), encoding="utf-8")
    workspace.add_dataset("words", "text", "corpus.txt")
    workspace.params["word2vec"].update(FAST)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    project = workspace.load(*TINY)
    finetune.run(project, "shapes")
    embed.run(project, "shapes")
    search.run(project, "shapes")
    ingest.run(project, "words")
    word2vec.run(project, "words")
    return workspace.root


@contextlib.contextmanager
def memory_bound(extra: int = 1 << 30) -> Iterator[None]:
    """Let the address space grow by ``extra`` bytes at most: more is a MemoryError, which fails the test."""
    status = Path("/proc/self/status").read_text()
    size = int(next(line for line in status.splitlines() if line.startswith("VmSize:")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def replaced(path: Path, content: bytes | str | None, vouch: tuple[Path, list[str]] | None = None) -> Iterator[None]:
    """``path`` holding ``content`` (None: a folder in its place) for the block, then restored.

    ``vouch``: a JSON sidecar and the key path under which it records ``path``'s sha256, updated to match.
    """
    keep = path.with_name(path.name + ".kept")
    shutil.move(path, keep)
    sidecar_text = vouch[0].read_text() if vouch else None
    try:
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
            if vouch:
                record = json.loads(sidecar_text)
                *parents, key = vouch[1]
                node = record
                for name in parents:
                    node = node[name]
                node[key] = sha256_file(path)
                if "index_bytes" in record and key == "index_sha256":
                    record["index_bytes"] = path.stat().st_size
                vouch[0].write_text(json.dumps(record))
        yield
    finally:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        shutil.move(keep, path)
        if vouch:
            vouch[0].write_text(sidecar_text)


def refused_or_loaded(load: Callable[[], Any]) -> None:
    """``load`` succeeds or raises a DlpipeError with a documented code; anything else fails the test."""
    with memory_bound():
        try:
            load()
        except DlpipeError as error:
            assert error.exit_code in (3, 4, 5), error


def mutated(document: dict[str, Any], key: str, value: Any, delete: bool) -> str:
    """``document`` with ``key`` deleted or set to ``value``, as JSON."""
    changed = dict(document)
    if delete:
        changed.pop(key, None)
    else:
        changed[key] = value
    return json.dumps(changed)


def content_of(path: Path) -> st.SearchStrategy[bytes]:
    """Random bytes, or the real file cut short, or the real file with a few bytes flipped."""
    data = path.read_bytes()
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    flipped = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda flips: bytes(_flip(bytearray(data), flips))
    )
    return st.binary(max_size=512) | cut | flipped


def _flip(data: bytearray, flips: list[tuple[int, int]]) -> bytearray:
    for position, value in flips:
        data[position] = value
    return data


def sidecar_edits(path: Path) -> st.SearchStrategy[str]:
    document = json.loads(path.read_text())
    return st.builds(mutated, st.just(document), st.sampled_from(sorted(document)), json_values, st.booleans()) | st.text(max_size=200)


# --- params and overrides ---------------------------------------------------------------------


@EXAMPLES
@given(text=st.text(max_size=300))
@example(text=BILLION_LAUGHS)
@example(text=DEEP)
def test_params_file(project_root: Path, text: str) -> None:
    params = project_root / "params.yaml"
    with replaced(params, text):
        refused_or_loaded(lambda: load_project(params))


@EXAMPLES
@given(section=st.sampled_from(["base", "ingest", "finetune", "embed", "search", "cluster", "datasets"]), value=json_values)
def test_params_section_of_a_wrong_type(project_root: Path, section: str, value: Any) -> None:
    import yaml

    params = project_root / "params.yaml"
    document = yaml.safe_load(params.read_text())
    with replaced(params, yaml.safe_dump({**document, section: value})):
        refused_or_loaded(lambda: load_project(params))


@EXAMPLES
@given(override=st.text(max_size=80))
@example(override="base.seed=" + DEEP)
@example(override="finetune=" + BILLION_LAUGHS.replace("\n", "; "))
def test_override(project_root: Path, override: str) -> None:
    refused_or_loaded(lambda: load_project(project_root / "params.yaml", [override]))


# --- the ingest outputs -----------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_manifest_sidecar(project_root: Path, data: st.DataObject) -> None:
    sidecar = project_root / "data/shapes/ingest/manifest.json"
    project = load_project(project_root / "params.yaml")
    with replaced(sidecar, data.draw(sidecar_edits(sidecar))):
        refused_or_loaded(lambda: load_manifest(project, "shapes"))


@EXAMPLES
@given(data=st.data())
@example(data=None)
def test_manifest_table(project_root: Path, data: st.DataObject | None) -> None:
    manifest = project_root / "data/shapes/ingest/manifest.csv"
    project = load_project(project_root / "params.yaml")
    content = None if data is None else data.draw(content_of(manifest))
    with replaced(manifest, content, vouch=(manifest.with_name("manifest.json"), ["manifest_sha256"])):
        refused_or_loaded(lambda: load_image_manifest(project, "shapes"))


@EXAMPLES
@given(content=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: "path,x,y\n" + t))
def test_targets_csv(tmp_path_factory: pytest.TempPathFactory, content: bytes | str) -> None:
    path = tmp_path_factory.mktemp("targets") / "targets.csv"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    refused_or_loaded(lambda: read_targets_csv(path, ["x", "y"], "regression"))


# --- the model, embeddings, index and vectors -------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_model_sidecar(project_root: Path, data: st.DataObject) -> None:
    sidecar = project_root / "data/shapes/model/model.json"
    with replaced(sidecar, data.draw(sidecar_edits(sidecar))):
        refused_or_loaded(lambda: load_trained_model(sidecar.parent))


@EXAMPLES
@given(data=st.data())
@example(data=None)
def test_model_file(project_root: Path, data: st.DataObject | None) -> None:
    model = project_root / "data/shapes/model/model.keras"
    content = None if data is None else data.draw(content_of(model))
    with replaced(model, content, vouch=(model.with_name("model.json"), ["model_sha256"])):
        refused_or_loaded(lambda: load_trained_model(model.parent))


@EXAMPLES
@given(data=st.data())
def test_embeddings_sidecar(project_root: Path, data: st.DataObject) -> None:
    sidecar = project_root / "data/shapes/embed/embeddings.json"
    project = load_project(project_root / "params.yaml")
    with replaced(sidecar, data.draw(sidecar_edits(sidecar))):
        refused_or_loaded(lambda: load_embeddings(project, "shapes"))


@EXAMPLES
@given(data=st.data())
@example(data=None)
def test_embeddings_file(project_root: Path, data: st.DataObject | None) -> None:
    vectors = project_root / "data/shapes/embed/embeddings.npy"
    project = load_project(project_root / "params.yaml")
    content = None if data is None else data.draw(content_of(vectors))
    with replaced(vectors, content, vouch=(vectors.with_name("embeddings.json"), ["embeddings_sha256"])):
        refused_or_loaded(lambda: load_embeddings(project, "shapes"))


@EXAMPLES
@given(data=st.data())
def test_index_sidecar(project_root: Path, data: st.DataObject) -> None:
    sidecar = project_root / "data/shapes/search/index.json"
    with replaced(sidecar, data.draw(sidecar_edits(sidecar))):
        refused_or_loaded(lambda: load_index(sidecar.parent))


@EXAMPLES
@given(data=st.data())
@example(data=None)
def test_index_file(project_root: Path, data: st.DataObject | None) -> None:
    index = project_root / "data/shapes/search/index.faiss"
    content = None if data is None else data.draw(content_of(index))
    with replaced(index, content, vouch=(index.with_name("index.json"), ["index_sha256"])):
        refused_or_loaded(lambda: load_index(index.parent))


@EXAMPLES
@given(data=st.data())
def test_word2vec_sidecar(project_root: Path, data: st.DataObject) -> None:
    sidecar = project_root / "data/words/word2vec/word2vec.json"
    with replaced(sidecar, data.draw(sidecar_edits(sidecar))):
        refused_or_loaded(lambda: load_vectors(sidecar.parent, "words"))


@EXAMPLES
@given(name=st.sampled_from(["vectors.npy", "vocab.csv"]), data=st.data())
def test_word_vector_files(project_root: Path, name: str, data: st.DataObject) -> None:
    path = project_root / "data/words/word2vec" / name
    with replaced(path, data.draw(content_of(path)), vouch=(path.with_name("word2vec.json"), ["vector_files", name])):
        refused_or_loaded(lambda: load_vectors(path.parent, "words"))


def test_huge_sidecar_is_refused_without_reading_it(project_root: Path) -> None:
    sidecar = project_root / "data/shapes/embed/embeddings.json"
    project = load_project(project_root / "params.yaml")
    with replaced(sidecar, b"{}"):
        with open(sidecar, "r+b") as handle:
            handle.truncate(1 << 30)  # sparse: 1 GiB that takes no room
        with memory_bound(64 << 20), pytest.raises(DlpipeError, match="too large") as caught:
            load_embeddings(project, "shapes")
    assert caught.value.exit_code == 5
