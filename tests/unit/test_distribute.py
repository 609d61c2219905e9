"""finetune.distribute: mirrored on CPU with two logical devices: it trains, matches one device, records itself.

Logical devices must be configured before TensorFlow initialises, so every run here happens in
a fresh Python process (``RUNNER``) that splits the CPU in two and then calls the stages' run().
The models it writes are loaded back in this process, outside any strategy.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dlpipe.core.config import SampleImagesConfig
from dlpipe.data.sample import generate_images
from dlpipe.queries import predict
from dlpipe.stages import ingest
from tests.conftest import MOBILENET_FILE, REPO, Workspace
from tests.unit.test_text_models import SMALL, two_corpora

RUNNER = """
import json, shutil, sys, time
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras

from dlpipe.core.config import load_project
from dlpipe.core.errors import DlpipeError
from dlpipe.stages import finetune, finetune_text


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch:
            raise KeyboardInterrupt


results = []
for job in json.loads(Path(sys.argv[1]).read_text()):
    stage = finetune_text if job["text"] else finetune
    callbacks = [] if job["interrupt"] is None else [Interrupt(job["interrupt"])]
    started = time.perf_counter()
    try:
        result = stage.run(load_project(job["params"], job["overrides"]), job["dataset"], extra_callbacks=callbacks)
    except KeyboardInterrupt:
        results.append({"interrupted": True})
        continue
    except DlpipeError as exc:
        results.append({"error": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code})
        continue
    if job["keep"]:
        shutil.copytree(result.model_dir, job["keep"])
    results.append({
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": result.metrics,
        "resumed_from_epoch": result.resumed_from_epoch,
        "sidecar": json.loads((result.model_dir / "model.json").read_text()),
        "log": (result.model_dir / "training_log.csv").read_text(),
    })
Path(sys.argv[2]).write_text(json.dumps(results))
"""

# The bar test_pretrained.py sets for one device on the same data: a frozen MobileNet 0.25 with a new head
# on 4 × 30 sample shapes. By path at 128 px (the 224 px file loads at any size) to keep both runs quick.
PRETRAINED = (
    "finetune.backbone.name=mobilenet",
    "finetune.backbone.alpha=0.25",
    "finetune.backbone.image_size=128",
    "finetune.head_epochs=15",
    "finetune.head_lr=0.01",
    "finetune.batch_size=16",
    "finetune.top_losses=4",
)
SINGLE_DEVICE_BAR = 0.85
# With the base frozen (BatchNorm in inference mode) two half-batches average to the whole batch's gradient;
# what differs is the order of floating-point sums and one more reshuffle of the training split (Keras
# reads a first batch to build): one of the 16 test images is 0.0625.
TOLERANCE = 0.1
# small_cnn from scratch: BatchNormalization learns from each replica's share of the batch.
SMALL_CNN = ("finetune.backbone.image_size=32", "finetune.batch_size=8", "finetune.head_epochs=3", "finetune.top_losses=4")


def job(
    workspace: Workspace,
    *overrides: str,
    dataset: str = "shapes",
    text: bool = False,
    interrupt: int | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """One stage run for RUNNER: the params file, the dataset, --set overrides, an epoch to interrupt, a folder to copy the model to."""
    return {
        "params": str(workspace.write_params()),
        "dataset": dataset,
        "overrides": list(overrides),
        "text": text,
        "interrupt": interrupt,
        "keep": str(keep) if keep else None,
    }


def run_jobs(workspace: Workspace, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the jobs in order in one fresh process with two logical CPU devices; their results."""
    script, spec, out = (workspace.root / name for name in ("runner.py", "jobs.json", "results.json"))
    script.write_text(RUNNER, encoding="utf-8")
    spec.write_text(json.dumps(jobs), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script), str(spec), str(out)], cwd=workspace.root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8"))


def losses(log: str) -> list[float]:
    """Every loss and val_loss of a training_log.csv."""
    rows = list(csv.DictReader(log.splitlines()))
    return [float(row[key]) for row in rows for key in ("loss", "val_loss")]


def split_sizes(workspace: Workspace, dataset: str) -> dict[str, int]:
    """Items per split of an ingested dataset."""
    with open(workspace.root / f"data/{dataset}/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        splits = [row["split"] for row in csv.DictReader(handle)]
    return {split: splits.count(split) for split in ("train", "val", "test")}


def test_mirrored_reaches_the_single_device_accuracy_and_records_its_replicas(workspace: Workspace, shared_weights_dir: Path) -> None:
    generate_images(workspace.root / "shapes", SampleImagesConfig(per_class=30, size=96, jpeg_fraction=0.5), seed=5)
    workspace.add_dataset("shapes", "image", "shapes")
    ingest.run(workspace.load(), "shapes")
    weights = f"finetune.backbone.weights={shared_weights_dir / MOBILENET_FILE}"
    kept = workspace.root / "mirrored_model"
    single, mirrored = run_jobs(
        workspace,
        [
            job(workspace, *PRETRAINED, weights, "finetune.distribute=none"),
            job(workspace, *PRETRAINED, weights, "finetune.distribute=mirrored", keep=kept),
        ],
    )
    assert single["sidecar"]["distribute"] == {"strategy": "none", "replicas": 1, "devices": ["/device:CPU:0"]}
    assert single["metrics"]["replicas"] == 1
    assert mirrored["sidecar"]["distribute"] == {"strategy": "mirrored", "replicas": 2, "devices": ["/device:CPU:0", "/device:CPU:1"]}
    assert mirrored["metrics"]["replicas"] == 2 and mirrored["sidecar"]["params"]["distribute"] == "mirrored"
    # Measured on 2 cores: both 1.0 (16 of 16 test images); 9 s on one device, 21 s on two logical ones.
    accuracy = mirrored["metrics"]["test_accuracy"]
    assert single["metrics"]["test_accuracy"] >= SINGLE_DEVICE_BAR
    assert accuracy >= SINGLE_DEVICE_BAR and accuracy >= single["metrics"]["test_accuracy"] - TOLERANCE, (single, mirrored)

    # The saved model needs no strategy: predict loads it here, on the default device, and agrees with finetune.
    with open(workspace.root / "data/shapes/ingest/manifest.csv", newline="", encoding="utf-8") as handle:
        test_rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    answers = predict.run(kept, [str(workspace.root / "shapes" / row["path"]) for row in test_rows], k=1).predictions
    right = sum(answer.answer.labels[0] == row["label"] for answer, row in zip(answers, test_rows, strict=True))
    assert math.isclose(right / len(test_rows), accuracy, abs_tol=1e-6)


def test_mirrored_survives_uneven_batches_resumes_and_trains_text(workspace: Workspace) -> None:
    generate_images(workspace.root / "shapes", SampleImagesConfig(per_class=10, size=48, jpeg_fraction=0.5), seed=3)
    next((workspace.root / "shapes/circle").glob("circle_0001.*")).unlink()
    workspace.add_dataset("shapes", "image", "shapes")
    ingest.run(workspace.load(), "shapes")
    # 25 training images in batches of 8 end with a batch of one (a replica would get none), and the 7
    # validation and 7 test images make one batch each that two replicas cannot share evenly.
    assert split_sizes(workspace, "shapes") == {"train": 25, "val": 7, "test": 7}
    two_corpora(workspace)
    mirrored = "finetune.distribute=mirrored"
    odd_batch, single, text, interrupted = run_jobs(
        workspace,
        [
            job(workspace, *SMALL_CNN, mirrored, "finetune.batch_size=7"),
            job(workspace, *SMALL_CNN, "finetune.distribute=none", "finetune.head_epochs=1"),
            job(workspace, *SMALL, "finetune.text.epochs=4", mirrored, dataset="corpora", text=True),
            job(workspace, *SMALL_CNN, mirrored, interrupt=1),  # last: the process ends here, as after Ctrl-C
        ],
    )
    (resumed,) = run_jobs(workspace, [job(workspace, *SMALL_CNN, mirrored)])
    assert (odd_batch["error"], odd_batch["exit_code"]) == ("ConfigError", 3)
    assert "finetune.batch_size: 7 does not split evenly between the 2 replicas" in odd_batch["message"]

    assert interrupted == {"interrupted": True}
    assert resumed["resumed_from_epoch"] == 1 and resumed["metrics"]["epochs"] == 3
    assert resumed["sidecar"]["distribute"]["replicas"] == 2
    # An empty share of a training batch would have put NaN into BatchNormalization's statistics.
    assert all(math.isfinite(value) for value in losses(resumed["log"])), resumed["log"]
    assert single["sidecar"]["distribute"] == {"strategy": "none", "replicas": 1, "devices": ["/device:CPU:0"]}

    # The text classifier honours the key too, and reaches test_text_models.py's one-device bar
    # (measured 1.0 of 60 test documents after 4 epochs, on one device and on two).
    assert text["sidecar"]["distribute"]["strategy"] == "mirrored" and text["metrics"]["replicas"] == 2
    assert text["sidecar"]["params"]["finetune"]["distribute"] == "mirrored"
    assert text["metrics"]["test_accuracy"] >= 0.9, text["metrics"]
