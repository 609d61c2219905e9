"""cluster, search build and search query on tiny generated data: outputs, agreement, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from typer.testing import CliRunner

from dlpipe.cli.app import app
from dlpipe.core.artifacts import sha256_file
from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.queries import search as search_query
from dlpipe.stages import cluster, embed, finetune, search
from tests.conftest import Workspace, save_hostile_npy, tree_digest
from tests.unit.test_image_models import TINY, tiny_shapes

SMALL = (*TINY, "cluster.k_max=5", "search.k=5", "search.examples=2", "cluster.thumbnails=4")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Tiny shapes, fine-tuned, embedded, clustered and indexed once for the read-only tests below."""
    workspace = Workspace(tmp_path_factory.mktemp("embedded"))
    tiny_shapes(workspace, per_class=10)
    source = tree_digest(workspace.root / "shapes")
    project = workspace.load(*SMALL)
    finetune.run(project, "shapes")
    embed.run(project, "shapes")
    cluster.run(project, "shapes")
    search.run(project, "shapes")
    assert tree_digest(workspace.root / "shapes") == source  # the stages only read the user's images
    return workspace


def copy_of(workspace: Workspace, folder: Path) -> Workspace:
    """A writable copy of a shared workspace, for tests that damage artifacts."""
    copy = Workspace(folder)
    shutil.copytree(workspace.root, copy.root)
    copy.params = workspace.params
    return copy


def manifest_rows(workspace: Workspace) -> list[dict[str, str]]:
    with open(workspace.root / "data/shapes/ingest/manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_cluster_writes_assignments_pictures_sheets_and_metrics(embedded: Workspace) -> None:
    out = embedded.root / "data/shapes/cluster"
    metrics = json.loads((embedded.root / "data/shapes/metrics/cluster.json").read_text())
    k = metrics["k"]
    record = json.loads((embedded.root / "data/shapes/cluster/cluster.json").read_text())
    assert record["params"]["k"] == "auto" and record["k"] == k and 2 <= k <= 5
    assert record["k_reason"].startswith("the best mean silhouette for k in 2..")
    silhouette = list(csv.DictReader(open(out / "silhouette.csv")))
    assert [int(row["k"]) for row in silhouette] == [2, 3, 4, 5]
    assert metrics["silhouette"] == pytest.approx(max(float(row["silhouette"]) for row in silhouette), abs=0.05)
    assignments = list(csv.DictReader(open(out / "assignments.csv")))
    truth = [row["label"] for row in manifest_rows(embedded)]
    found = [row["cluster"] for row in assignments]
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(truth, found), abs=1e-4)
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(truth, found), abs=1e-4)
    assert [row["path"] for row in assignments] == [row["path"] for row in manifest_rows(embedded)]
    assert {int(row["cluster"]) for row in assignments} == set(range(k))
    assert sum(metrics["cluster_sizes"]) == len(assignments) == metrics["count"]
    assert sorted(p.name for p in (out / "sheets").iterdir()) == [f"cluster_{c:02d}.png" for c in range(k)]
    for name in ("umap.png", "silhouette.png", "clusters.csv", "cluster.json"):
        assert (out / name).stat().st_size > 0, name
    coords = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(open(out / "umap.csv"))])
    assert coords.shape == (len(assignments), 2) and np.isfinite(coords).all()


def test_saved_umap_reducer_projects_new_points(embedded: Workspace) -> None:
    reducer = pickle.loads((embedded.root / "data/shapes/cluster/umap_reducer.pkl").read_bytes())
    vectors = np.load(embedded.root / "data/shapes/embed/embeddings.npy")
    projected = reducer.transform(vectors[:3])
    assert projected.shape == (3, 2) and np.isfinite(projected).all()


def test_fixed_k_larger_than_the_dataset_is_an_input_error(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    before = tree_digest(copy.root / "data/shapes/cluster")
    with pytest.raises(InputDataError, match="cluster.k is 500") as caught:
        cluster.run(copy.load(*SMALL, "cluster.k=500"), "shapes")
    assert caught.value.exit_code == 4
    assert tree_digest(copy.root / "data/shapes/cluster") == before


def test_search_build_sidecar_and_self_evaluation(embedded: Workspace) -> None:
    out = embedded.root / "data/shapes/search"
    info = json.loads((out / "index.json").read_text())
    embeddings = json.loads((embedded.root / "data/shapes/embed/embeddings.json").read_text())
    assert info["embeddings_sha256"] == embeddings["embeddings_sha256"]
    assert info["query_embedding"]["model_sha256"] == embeddings["model_sha256"]
    assert info["count"] == embeddings["count"] and info["dimension"] == embeddings["dimension"]
    metrics = json.loads((embedded.root / "data/shapes/metrics/search.json").read_text())
    # 40 items choose an exact index: recall against exact search is 1 by construction.
    assert json.loads((embedded.root / "data/shapes/search/index.json").read_text())["factory"] == "Flat"
    assert metrics["recall_at_k"] == 1.0
    assert metrics["queries"] == sum(row["split"] == "test" for row in manifest_rows(embedded))
    assert (out / "examples.png").stat().st_size > 0


def test_a_float16_index_answers_like_the_exact_one(embedded: Workspace, tmp_path: Path) -> None:
    """The codec auto picks for large collections, forced on the 40 items: same neighbours, scores within 1e-3."""
    copy = copy_of(embedded, tmp_path / "copy")
    params = (*SMALL, "search.index=IVF1,SQfp16")  # one list: every vector is scanned, through its float16 code
    search.run(copy.load(*params), "shapes")
    metrics = json.loads((copy.root / "data/shapes/metrics/search.json").read_text())
    assert json.loads((copy.root / "data/shapes/search/index.json").read_text())["factory"] == "IVF1,SQfp16"
    assert metrics["recall_at_k"] == 1.0
    item = manifest_rows(embedded)[7]["path"]
    exact = search_query.run(embedded.load(*SMALL), "shapes", [], [item], 5, None).answers[0].neighbours
    half = search_query.run(copy.load(*params), "shapes", [], [item], 5, None).answers[0].neighbours
    assert [n.path for n in half] == [n.path for n in exact]
    assert [n.score for n in half] == pytest.approx([n.score for n in exact], abs=1e-3)


def test_query_by_file_and_by_item_agree_and_write_a_sheet(embedded: Workspace, tmp_path: Path) -> None:
    project = embedded.load(*SMALL)
    item = manifest_rows(embedded)[7]["path"]
    result = search_query.run(project, "shapes", [embedded.root / "shapes" / item], [item], 4, tmp_path / "sheet.png")
    by_file, by_item = result.answers
    # The file is in the collection: it finds itself first, with cosine similarity 1.
    assert by_file.neighbours[0].path == item and by_file.neighbours[0].score == pytest.approx(1.0, abs=1e-4)
    # The item leaves itself out; the rest of the order is the same.
    assert [n.path for n in by_item.neighbours] == [n.path for n in by_file.neighbours[1:]] + [by_item.neighbours[-1].path]
    assert len(by_item.neighbours) == 4 and (tmp_path / "sheet.png").stat().st_size > 0


def test_query_bad_inputs(embedded: Workspace, tmp_path: Path) -> None:
    project = embedded.load(*SMALL)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    cases = [
        (([broken], [], 3), InputDataError, "cannot search with"),
        (([], ["no/such.png"], 3), InputDataError, "not in the manifest"),
        (([], [], 3), InputDataError, "nothing to search for"),
        (([], [manifest_rows(embedded)[0]["path"]], 1000), InputDataError, "k=1000"),
    ]
    for (images, items, k), error, message in cases:
        with pytest.raises(error, match=message) as caught:
            search_query.run(project, "shapes", images, items, k)
        assert caught.value.exit_code == error.exit_code


def test_index_that_disagrees_with_its_sidecar_or_is_truncated_is_refused(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    out = copy.root / "data/shapes/search"
    item = manifest_rows(copy)[0]["path"]
    info = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps(info | {"count": info["count"] + 1}))
    with pytest.raises(ArtifactError) as caught:
        search_query.run(copy.load(*SMALL), "shapes", [], [item], 3)
    assert caught.value.exit_code == 5
    (out / "index.json").write_text(json.dumps(info))
    whole = (out / "index.faiss").read_bytes()
    (out / "index.faiss").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArtifactError, match="sha256|truncated"):
        search_query.run(copy.load(*SMALL), "shapes", [], [item], 3)


def test_query_refuses_a_model_changed_after_indexing(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    finetune.run(copy.load(*SMALL, "base.seed=7"), "shapes")
    image = copy.root / "shapes" / manifest_rows(copy)[0]["path"]
    with pytest.raises(ArtifactError, match="changed after the embeddings"):
        search_query.run(copy.load(*SMALL), "shapes", [image], [], 3)


def test_nan_or_missing_embeddings_are_refused_and_outputs_kept(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    data = copy.root / "data/shapes"
    before = {name: tree_digest(data / name) for name in ("cluster", "search")}
    vectors = np.load(data / "embed/embeddings.npy")
    vectors[3, 0] = np.nan
    np.save(data / "embed/embeddings.npy", vectors)
    sidecar = json.loads((data / "embed/embeddings.json").read_text())
    (data / "embed/embeddings.json").write_text(json.dumps(sidecar | {"embeddings_sha256": sha256_file(data / "embed/embeddings.npy")}))
    for stage in (cluster, search):
        with pytest.raises(ArtifactError, match="row 3 .* NaN or inf") as caught:
            stage.run(copy.load(*SMALL), "shapes")
        assert caught.value.exit_code == 5
    np.save(data / "embed/embeddings.npy", vectors[:0])
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        search.run(copy.load(*SMALL), "shapes")
    # An empty file that its sidecar vouches for still disagrees with the manifest.
    empty = {"embeddings_sha256": sha256_file(data / "embed/embeddings.npy"), "count": 0}
    (data / "embed/embeddings.json").write_text(json.dumps(sidecar | empty))
    with pytest.raises(ArtifactError, match=r"shape \(0, \d+\).* manifest has 40 rows"):
        search.run(copy.load(*SMALL), "shapes")
    assert {name: tree_digest(data / name) for name in ("cluster", "search")} == before


def test_cli_search_query_json_and_exit_codes(embedded: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(embedded.root)
    embedded.load(*SMALL)
    runner = CliRunner()
    item = manifest_rows(embedded)[2]["path"]
    result = runner.invoke(app, ["search", "query", "--item", item, "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert answers[0]["query"] == item and [n["rank"] for n in answers[0]["neighbours"]] == [1, 2, 3]
    result = runner.invoke(app, ["search", "query", "--item", "nope.png"])
    assert result.exit_code == 4 and "not in the manifest" in result.output


def test_search_build_with_lists_on_disk_answers_like_in_memory(embedded: Workspace, tmp_path: Path) -> None:
    """The layout a collection too large for memory gets, forced on the 40 items; queried from a moved copy."""
    memory, disk = copy_of(embedded, tmp_path / "memory"), copy_of(embedded, tmp_path / "disk")
    search.run(memory.load(*SMALL, "search.index=IVF2,SQ8", "search.storage=memory"), "shapes")
    search.run(disk.load(*SMALL, "search.index=IVF2,SQ8", "search.storage=ondisk"), "shapes")
    metrics = json.loads((disk.root / "data/shapes/metrics/search.json").read_text())
    in_memory = json.loads((memory.root / "data/shapes/metrics/search.json").read_text())
    storage = {name: json.loads((copy.root / "data/shapes/search/index.json").read_text())["storage"]
               for name, copy in (("disk", disk), ("memory", memory))}
    assert storage == {"disk": "ondisk", "memory": "memory"} and metrics["shards"] == 1
    for key in ("search_params", "tuned_recall_at_k", "recall_at_k", "precision_at_k"):
        assert metrics[key] == in_memory[key], key
    out = disk.root / "data/shapes/search"
    assert sorted(path.name for path in out.iterdir()) == ["examples.png", "index.faiss", "index.ivfdata", "index.json"]
    assert json.loads((out / "index.json").read_text())["lists_bytes"] == (out / "index.ivfdata").stat().st_size
    moved = copy_of(disk, tmp_path / "moved")
    shutil.rmtree(disk.root)
    item = manifest_rows(embedded)[7]["path"]
    expected = search_query.run(memory.load(*SMALL), "shapes", [], [item], 5, None).answers[0].neighbours
    found = search_query.run(moved.load(*SMALL), "shapes", [], [item], 5, None).answers[0].neighbours
    assert found == expected
    (moved.root / "data/shapes/search/index.ivfdata").unlink()
    with pytest.raises(ArtifactError, match="inverted lists not found: .*index.ivfdata") as caught:
        search_query.run(moved.load(*SMALL), "shapes", [], [item], 5, None)
    assert caught.value.exit_code == 5


def test_cluster_with_samples_smaller_than_the_dataset_covers_every_row(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    full = json.loads((embedded.root / "data/shapes/metrics/cluster.json").read_text())
    assert full["raw_pixels_rows"] == full["umap_fit_rows"] == full["count"] == 40
    cluster.run(copy.load(*SMALL, "cluster.umap.sample=20", "cluster.baseline_sample=25"), "shapes")
    metrics = json.loads((copy.root / "data/shapes/metrics/cluster.json").read_text())
    assert metrics["umap_fit_rows"] == 20 and metrics["raw_pixels_rows"] == 25
    # k-means, its agreement with the labels and the silhouette do not depend on either sample
    for key in ("k", "nmi", "ari", "purity", "silhouette", "inertia", "cluster_sizes"):
        assert metrics[key] == full[key], key
    out = copy.root / "data/shapes/cluster"
    coords = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(open(out / "umap.csv"))])
    assert coords.shape == (40, 2) and np.isfinite(coords).all()
    reducer = pickle.loads((out / "umap_reducer.pkl").read_bytes())
    assert reducer.embedding_.shape == (20, 2)
    # the 20 fitted rows are on umap.csv with the coordinates of the fit
    fitted = {(round(float(x), 5), round(float(y), 5)) for x, y in reducer.embedding_}
    assert len(fitted & {(x, y) for x, y in coords.tolist()}) == 20


def test_artifacts_that_would_run_code_are_refused_and_run_nothing(embedded: Workspace, tmp_path: Path) -> None:
    import keras

    copy = copy_of(embedded, tmp_path / "copy")
    data = copy.root / "data/shapes"
    marker = tmp_path / "ran"
    # embeddings.npy holding a pickled object, its sidecar hash updated to vouch for it
    save_hostile_npy(data / "embed/embeddings.npy", marker)
    sidecar = json.loads((data / "embed/embeddings.json").read_text())
    (data / "embed/embeddings.json").write_text(json.dumps(sidecar | {"embeddings_sha256": sha256_file(data / "embed/embeddings.npy")}))
    for stage in (cluster, search):
        with pytest.raises(ArtifactError, match="not a readable array of numbers") as caught:
            stage.run(copy.load(*SMALL), "shapes")
        assert caught.value.exit_code == 5 and not marker.exists()
    # model.keras with a Lambda layer whose code creates the marker, model.json's hash updated
    command = f"touch '{marker}'"
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: (__import__("os").system(command), x)[1])(inputs))
    marker.unlink()  # building the model above ran the lambda once, here
    model.save(data / "model/model.keras")
    record = json.loads((data / "model/model.json").read_text())
    (data / "model/model.json").write_text(json.dumps(record | {"model_sha256": sha256_file(data / "model/model.keras")}))
    with pytest.raises(ArtifactError, match="cannot load model") as caught:
        embed.run(copy.load(*SMALL), "shapes")
    assert caught.value.exit_code == 5 and not marker.exists()


def test_commands_hold_every_file_to_ingests_limits(embedded: Workspace, tmp_path: Path) -> None:
    from PIL import Image

    from dlpipe.models.file_inputs import DEFAULT_LIMITS, FileLimits
    from dlpipe.queries import predict
    from dlpipe.stages import heatmap

    # The defaults for a model used outside its project are the shipped params' checks.
    assert FileLimits.of(embedded.load().params.ingest) == DEFAULT_LIMITS
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(big)  # 20,000 px
    tight = (*SMALL, "ingest.image.max_pixels=10000")
    with pytest.raises(InputDataError, match=r"200x100 = 20,000 px exceeds ingest.image.max_pixels=10,000"):
        search_query.run(embedded.load(*tight), "shapes", [big], [], 3)
    with pytest.raises(InputDataError, match=r"exceeds ingest.image.max_pixels=10,000"):
        heatmap.run(embedded.load(*tight, "heatmap.methods=[occlusion]"), "shapes", [big])
    model = embedded.root / "data/shapes/model"
    with pytest.raises(InputDataError, match=r"exceeds ingest.image.max_pixels=10,000"):
        predict.run(model, [str(big)], 3, limits=FileLimits(max_pixels=10_000))
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    with pytest.raises(InputDataError, match=r"8x8 px, shorter side below ingest.image.min_side=16"):
        predict.run(model, [str(tiny)], 3)
    assert predict.run(model, [str(big)], 3).predictions[0].error == ""  # within the default limits


def test_auto_k_tries_past_the_number_of_classes(embedded: Workspace, tmp_path: Path) -> None:
    copy = copy_of(embedded, tmp_path / "copy")
    result = cluster.run(copy.load(*SMALL, "cluster.k_max=2"), "shapes")  # 4 classes: k_max 2 could never find them
    tried = [int(row["k"]) for row in csv.DictReader(open(copy.root / "data/shapes/cluster/silhouette.csv"))]
    assert tried == [2, 3, 4, 5, 6]
    assert result.metrics["k_reason"] == "the best mean silhouette for k in 2..6; cluster.k_max=2 raised to 6: the labels have 4 classes"


def test_cluster_and_word2vec_load_umap_without_tensorflow_and_cache_its_compiled_code(tmp_path: Path) -> None:
    """umap-learn imports TensorFlow for its parametric module, which the UMAP maps never use; and numba
    compiles most of umap's functions in every process unless they are cached on disk."""
    code = (
        "import sys; import dlpipe.stages.cluster, dlpipe.stages.word2vec; "
        "from dlpipe.retrieval.clustering import load_umap; umap = load_umap(); "
        "assert umap.layouts.clip(9.0) == 4.0; "  # one small jitted function of umap's, compiled and kept
        "assert 'tensorflow' not in sys.modules, 'umap pulled in TensorFlow'; "
        "import tensorflow"  # and TensorFlow still imports afterwards
    )
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [path.name for path in tmp_path.rglob("layouts.clip-*.nbi")], sorted(path.name for path in tmp_path.rglob("*"))


def test_umap_still_loads_where_numba_has_no_writable_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core.dispatcher import Dispatcher

    from dlpipe.retrieval.clustering import load_umap

    def nowhere(self: Dispatcher) -> None:
        raise RuntimeError("cannot cache function: no locator available")  # what numba raises then

    load_umap()  # imported first: umap's own cache=True functions would fail the import itself there
    monkeypatch.setattr(Dispatcher, "enable_caching", nowhere)
    assert load_umap().UMAP.__name__ == "UMAP"
