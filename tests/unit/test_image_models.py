"""finetune, embed and predict on tiny generated data: outputs, determinism, resume, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.models.inputs import load_image_array
from dlpipe.models.store import load_trained_model
from dlpipe.queries import predict
from dlpipe.stages import embed, finetune, ingest
from tests.conftest import Workspace, tree_digest

# Small enough to train in seconds: accuracy is not the point of these tests.
TINY = (
    "finetune.backbone.image_size=32",
    "finetune.head_epochs=3",
    "finetune.batch_size=16",
    "finetune.top_losses=4",
    "embed.batch_size=8",
)


def tiny_shapes(workspace: Workspace, per_class: int = 8) -> None:
    """Generated shapes (4 classes) at 48 px, ingested."""
    from dlpipe.core.config import SampleImagesConfig
    from dlpipe.data.sample import generate_images

    generate_images(workspace.root / "shapes", SampleImagesConfig(per_class=per_class, size=48, jpeg_fraction=0.5), seed=3)
    workspace.add_dataset("shapes", "image", "shapes")
    ingest.run(workspace.load(), "shapes")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One tiny fine-tuned project shared by the read-only tests below."""
    workspace = Workspace(tmp_path_factory.mktemp("trained"))
    tiny_shapes(workspace)
    finetune.run(workspace.load(*TINY), "shapes")
    return workspace


def weights_of(model_dir: Path) -> list[np.ndarray]:
    return load_trained_model(model_dir).model.get_weights()


def test_finetune_writes_model_sidecar_plots_and_metrics(trained: Workspace) -> None:
    data = trained.root / "data/shapes"
    sidecar = json.loads((data / "model/model.json").read_text())
    assert sidecar["classes"] == ["circle", "square", "star", "triangle"]
    assert (sidecar["image_size"], sidecar["preprocessing"], sidecar["embedding_layer"]) == (32, "unit", "embedding")
    assert sidecar["backbone"]["name"] == "small_cnn" and sidecar["embedding_dim"] > 0
    for name in ("confusion.png", "confusion.csv", "history.png", "top_losses.png", "live/plots/metrics/train/loss.tsv"):
        assert (data / "plots/finetune" / name).is_file(), name
    metrics = json.loads((data / "metrics/finetune.json").read_text())
    assert metrics["epochs"] == 3 and set(metrics["test_per_class"]) == set(sidecar["classes"])
    confusion = (data / "plots/finetune/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) - 1 == metrics["test_count"]
    # (three epochs on 40 images are chance level; tests/unit/test_demo_quality.py sets the accuracy bar)
    right = sum(actual == predicted for actual, predicted in (line.split(",") for line in confusion[1:]))
    assert metrics["test_accuracy"] == pytest.approx(right / metrics["test_count"], abs=1e-6)
    assert not (data / ".finetune-resume").exists() or not any((data / ".finetune-resume").iterdir())


def test_same_seed_gives_identical_weights_and_metrics(workspace: Workspace) -> None:
    tiny_shapes(workspace)
    first = finetune.run(workspace.load(*TINY), "shapes")
    weights = weights_of(first.model_dir)
    second = finetune.run(workspace.load(*TINY), "shapes")
    assert all(np.array_equal(a, b) for a, b in zip(weights, weights_of(second.model_dir), strict=True))
    volatile = {"train_seconds", "train_images_per_second"}
    assert {k: v for k, v in first.metrics.items() if k not in volatile} == {
        k: v for k, v in second.metrics.items() if k not in volatile
    }
    other = finetune.run(workspace.load(*TINY, "base.seed=43"), "shapes")
    assert not all(np.array_equal(a, b) for a, b in zip(weights, weights_of(other.model_dir), strict=True))


class Interrupt(keras.callbacks.Callback):
    """Raises in the middle of the given epoch, as a Ctrl-C or a killed job would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch
        self.current = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.current == self.epoch and batch == 0:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_and_keeps_earlier_model(workspace: Workspace) -> None:
    tiny_shapes(workspace)
    overrides = (*TINY, "finetune.head_epochs=4")
    first = finetune.run(workspace.load(*overrides, "finetune.head_epochs=1"), "shapes")
    model_before = (first.model_dir / "model.keras").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        finetune.run(workspace.load(*overrides), "shapes", extra_callbacks=[Interrupt(epoch=2)])
    # The earlier model is untouched and no half-written folder is left beside it.
    assert (first.model_dir / "model.keras").read_bytes() == model_before
    assert not list(first.model_dir.parent.glob(".model.partial-*"))
    resumed = finetune.run(workspace.load(*overrides), "shapes")
    assert resumed.resumed_from_epoch == 2
    assert resumed.metrics["epochs"] == 4
    log = (resumed.model_dir / "training_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["0", "1", "2", "3"]
    # Changed params do not resume from another run's checkpoint.
    with pytest.raises(KeyboardInterrupt):
        finetune.run(workspace.load(*overrides), "shapes", extra_callbacks=[Interrupt(epoch=1)])
    fresh = finetune.run(workspace.load(*overrides, "finetune.dropout=0.3"), "shapes")
    assert fresh.resumed_from_epoch == 0


def test_class_missing_from_training_split(workspace: Workspace) -> None:
    # ingest always keeps one item of each class for training, so write such a manifest by hand
    # (as a user-supplied split would) and re-seal it with its sidecar hash.
    from dlpipe.core.artifacts import sha256_file

    tiny_shapes(workspace)
    folder = workspace.root / "data/shapes/ingest"
    lines = (folder / "manifest.csv").read_text().splitlines()
    moved = [line.replace(",train,", ",val,") if line.startswith("star/") else line for line in lines]
    (folder / "manifest.csv").write_text("\n".join(moved) + "\n")
    sidecar = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(sidecar | {"manifest_sha256": sha256_file(folder / "manifest.csv")}))
    with pytest.raises(InputDataError, match="star have no item in the training split") as caught:
        finetune.run(workspace.load(*TINY), "shapes")
    assert caught.value.exit_code == 4


def test_hand_edited_manifest_is_refused(workspace: Workspace) -> None:
    tiny_shapes(workspace)
    manifest = workspace.root / "data/shapes/ingest/manifest.csv"
    manifest.write_text(manifest.read_text().replace(",train,", ",test,", 1))
    with pytest.raises(ArtifactError, match="changed after ingest wrote it") as caught:
        finetune.run(workspace.load(*TINY), "shapes")
    assert caught.value.exit_code == 5


def test_embed_from_finetuned_model_matches_direct_forward_pass(trained: Workspace) -> None:
    result = embed.run(trained.load(*TINY), "shapes")
    vectors = np.load(result.out_dir / "embeddings.npy", mmap_mode="r")
    manifest = (trained.root / "data/shapes/ingest/manifest.csv").read_text().splitlines()[1:]
    assert vectors.dtype == np.float32 and vectors.shape == (len(manifest), result.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sidecar = json.loads((result.out_dir / "embeddings.json").read_text())
    assert (sidecar["source"], sidecar["count"], sidecar["metric"]) == ("finetuned", len(manifest), "inner_product")
    # Row 5 is the embedding of the manifest's 5th image.
    from dlpipe.models.network import embedding_model

    model = embedding_model(load_trained_model(trained.root / "data/shapes/model").model)
    path = trained.root / "shapes" / manifest[5].split(",")[0]
    direct = model.predict(load_image_array(path, 32)[None], verbose=0)[0]
    assert np.allclose(vectors[5], direct / np.linalg.norm(direct), atol=1e-4)


def test_embed_refuses_a_manifest_changed_after_training(trained: Workspace, tmp_path: Path) -> None:
    copy = Workspace(tmp_path / "copy")
    shutil.copytree(trained.root, copy.root)
    copy.params = trained.params
    sorted((copy.root / "shapes/circle").iterdir())[0].unlink()
    ingest.run(copy.load(), "shapes")
    with pytest.raises(ArtifactError, match="re-ingested after the model") as caught:
        embed.run(copy.load(*TINY), "shapes")
    assert caught.value.exit_code == 5


def test_predict_top_k_and_folder_csv(trained: Workspace, tmp_path: Path) -> None:
    images = trained.root / "shapes"
    before = tree_digest(images)
    single = predict.run(trained.root / "data/shapes/model", [sorted((images / "star").iterdir())[0]], k=3)
    (prediction,) = single.predictions
    assert len(prediction.answer.labels) == 3 and prediction.answer.probabilities == sorted(prediction.answer.probabilities, reverse=True)
    folder = tmp_path / "mixed"
    shutil.copytree(images / "circle", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "predictions.csv"
    result = predict.run(trained.root / "data/shapes/model", [folder], k=2, csv_path=out)
    rows = out.read_text().splitlines()
    assert rows[0] == "path,label_1,probability_1,label_2,probability_2,error"
    assert len(rows) - 1 == len(result.predictions) == 9
    broken = [p for p in result.predictions if p.path.endswith("broken.jpg")]
    assert broken[0].error.startswith("not_an_image")
    assert tree_digest(images) == before


def test_predict_undecodable_named_image_is_an_input_error(trained: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(InputDataError, match="cannot predict .*photo.jpg") as caught:
        predict.run(trained.root / "data/shapes/model", [bad], k=1)
    assert caught.value.exit_code == 4


def test_predict_text_for_an_image_model_is_an_input_error(trained: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="no such file or folder: a film about shapes") as caught:
        predict.run(trained.root / "data/shapes/model", ["a film about shapes"], k=1)
    assert caught.value.exit_code == 4 and "documents go to a model trained on a labelled text dataset" in caught.value.hint
    (tmp_path / "lines.txt").write_text("one document\n", encoding="utf-8")
    with pytest.raises(InputDataError, match=r"--file .*lines\.txt: .* is an image model"):
        predict.run(trained.root / "data/shapes/model", [], k=1, documents_file=tmp_path / "lines.txt")


def test_missing_corrupt_or_inconsistent_model_is_refused(trained: Workspace, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    with pytest.raises(ArtifactError, match="model not found"):
        load_trained_model(model_dir)
    shutil.copytree(trained.root / "data/shapes/model", model_dir)
    sidecar_path = model_dir / "model.json"
    sidecar = json.loads(sidecar_path.read_text())

    sidecar_path.write_text(json.dumps(sidecar | {"classes": ["a", "b"]}))
    with pytest.raises(ArtifactError, match="2 output classes|lists 2"):
        load_trained_model(model_dir)

    sidecar_path.unlink()
    with pytest.raises(ArtifactError, match="model sidecar not found"):
        load_trained_model(model_dir)

    data = (model_dir / "model.keras").read_bytes()
    (model_dir / "model.keras").write_bytes(data[: len(data) // 2])
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        load_trained_model(model_dir)
    from dlpipe.core.artifacts import sha256_file

    sidecar_path.write_text(json.dumps(sidecar | {"model_sha256": sha256_file(model_dir / "model.keras")}))
    with pytest.raises(ArtifactError, match="cannot load model"):
        load_trained_model(model_dir)


def test_phase_b_unfreezes_only_the_top_and_keeps_batchnorm_statistics(workspace: Workspace, tmp_path: Path) -> None:
    """A base 'pretrained' from a weights file: its bottom and every BatchNorm stay exactly as loaded."""
    from dlpipe.core.config import BackboneConfig
    from dlpipe.models.backbones import build_base

    backbone = BackboneConfig(name="small_cnn", weights="none", alpha=1.0, image_size=32)
    start = build_base(backbone)
    start.save_weights(tmp_path / "start.weights.h5")
    tiny_shapes(workspace)
    result = finetune.run(
        workspace.load(
            *TINY,
            f"finetune.backbone.weights={tmp_path / 'start.weights.h5'}",
            "finetune.fine_tune_lr=0.001",
            "finetune.head_epochs=1",
            "finetune.fine_tune_epochs=2",
            "finetune.unfreeze_top=6",
        ),
        "shapes",
    )
    assert (result.metrics["epochs"], result.metrics["head_epochs_run"]) == (3, 1)
    base = load_trained_model(result.model_dir).model.get_layer("small_cnn")
    changed = {
        layer.name
        for layer, before in zip(base.layers, start.layers, strict=True)
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before.get_weights(), strict=True))
    }
    top = {layer.name for layer in base.layers[-6:] if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
    assert changed == top
