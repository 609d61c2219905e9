"""``heatmap``: where the fine-tuned model looks, as occlusion and Grad-CAM maps, and whether it is right.

For each chosen image (``per_class`` test images of each class plus the ``top_losses`` test
images with the highest loss, or the paths given) and a target class (the predicted one, or a
named class), every method in ``heatmap.methods`` makes a map at the model's input resolution.
The maps are judged by the deletion metric (against a random map) and, where the sample data's
``boxes.csv`` gives the object's box, by the pointing game; both go to ``metrics/heatmap.json``.
The folder holds an overlay PNG per image, one grid sheet, the raw maps (``maps/<method>.npy``,
N × size × size float32, the order of ``images.csv``), the mean deletion curves and a sidecar.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, library_versions, sidecar, stage_lock, write_csv, write_metrics
from dlpipe.core.config import HeatmapConfig, Project
from dlpipe.core.console import progress
from dlpipe.core.errors import ConfigError, InputDataError
from dlpipe.core.layout import BOXES_COLUMNS, BOXES_FILE, HEATMAP_SIDECAR
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import Manifest, load_image_manifest
from dlpipe.data.media import Rejected
from dlpipe.explain import evidence, gradcam, occlusion
from dlpipe.models.inputs import image_dataset, load_image_array, needs_pillow
from dlpipe.models.store import TrainedModel, load_model_trained_on
from dlpipe.reports.heatmap_plots import Explained, write_grid, write_overlay

STAGE = "heatmap"
_BATCH = 64  # images per plain forward pass and per Grad-CAM pass
_MEAN_SAMPLE = 1000  # training images averaged for the mean fill colour


@dataclass(frozen=True)
class Result(StageResult):
    """What a heatmap run produced."""

    images: int


@dataclass(frozen=True)
class _Chosen:
    """An image to explain: its file, how captions name it, and what the dataset knows about it."""

    path: Path
    name: str
    label: str  # "?" for a file outside the manifest
    row: dict[str, str] | None


def run(project: Project, dataset: str, images: Sequence[Path] | None = None, target_class: str | None = None) -> Result:
    """Explain chosen images of ``dataset`` (or ``images``) with every method in ``heatmap.methods``.

    Args:
        project: validated params and the project root.
        dataset: an ingested image dataset with a fine-tuned model.
        images: image files to explain instead of the test-split choice.
        target_class: explain this class for every image (default: each image's predicted class).

    Raises:
        ConfigError: a patch larger than the model input, an unknown class, or Grad-CAM asked of a
            model without a convolutional feature map (or with an unknown ``gradcam_layer``).
        InputDataError: an image that does not decode, or nothing to explain.
        ArtifactError: no model or manifest, or a model trained on another manifest.
    """
    cfg = project.params.heatmap
    manifest = load_image_manifest(project, dataset)
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    metrics_path = layout.metrics(STAGE)
    with stage_lock(layout.root, STAGE):
        trained = load_model_trained_on(layout.model_dir, manifest)
        size = trained.image_size
        cfg = cfg.for_input(size)
        target_index = _check_request(cfg, trained, target_class)
        chosen = _choose_from_paths(images, manifest) if images else _choose_from_test(cfg, trained, manifest)
        limits = project.params.ingest.image
        pixels = np.stack([_load(item.path, size, limits.min_side, limits.max_pixels) for item in chosen])
        probabilities = trained.model.predict(pixels, batch_size=_BATCH, verbose=0)
        predicted, confidence = trained.head.explained_units(probabilities)
        targets = predicted if target_index is None else np.full(len(chosen), target_index)
        fills = _fills(cfg.fill, cfg.patch_size, manifest, pixels, size)
        probe = occlusion.make_probe(trained.model, size, occlusion.batch_for(size, cfg.memory_mb), trained.head.explained_score)
        maps, seconds = _make_maps(cfg, trained, probe, pixels, fills, targets, probabilities)
        boxes = _boxes(manifest, chosen, size)
        deletion_fills = fills if cfg.deletion_fill == cfg.fill else _fills(cfg.deletion_fill, cfg.patch_size, manifest, pixels, size)
        scores, curves = _evidence(
            probe, pixels, deletion_fills, targets, probabilities, maps, boxes, cfg.patch_size, project.params.base.seed
        )
        items = [
            Explained(
                image=pixels[i],
                name=item.name,
                true_label=item.label,
                predicted=trained.classes[predicted[i]],
                probability=float(confidence[i]),
                target=trained.classes[targets[i]],
                maps={method: maps[method][i] for method in cfg.methods},
                box=boxes[i],
            )
            for i, item in enumerate(chosen)
        ]
        with atomic_dir(out_dir) as staging:
            _write_folder(staging, items, maps, scores, curves, cfg, dataset)
            atomic_write_json(
                staging / HEATMAP_SIDECAR,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    model=trained.recorded_path,
                    model_sha256=trained.sidecar["model_sha256"],
                    manifest_sha256=manifest.sha256,
                    classes=trained.classes,
                    image_size=size,
                    target=target_class or "predicted",
                    score=trained.head.score_name,
                    params=cfg.model_dump(),
                    seed=project.params.base.seed,
                    maps={method: f"maps/{method}.npy" for method in cfg.methods},
                    order="images.csv",
                    versions=library_versions("tensorflow", "keras", "numpy"),
                ),
            )
        metrics = _metrics(dataset, cfg, size, target_class, len(chosen), scores, seconds)
        metrics["score"] = trained.head.score_name
        write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, images=len(chosen))


def _check_request(cfg: HeatmapConfig, trained: TrainedModel, target_class: str | None) -> int | None:
    """Refuse impossible requests before any work; return the target class index (None: predicted)."""
    size = trained.image_size
    if cfg.patch_size > size:
        raise ConfigError(
            f"heatmap.patch_size: {cfg.patch_size} is larger than the model's {size} x {size} input",
            f"use a patch of at most {size} pixels (about {max(1, size // 8)} is a good start)",
        )
    if "gradcam" in cfg.methods:
        gradcam.find_target_layer(trained.model, cfg.gradcam_layer)
    return trained.class_index(target_class)


def _load(path: Path, size: int, min_side: int, max_pixels: int) -> np.ndarray:
    """An image for the model, meeting ingest's checks (``ingest.image``) like every file the pipeline reads."""
    try:
        return load_image_array(path, size, min_side, max_pixels)
    except OSError as error:  # missing, a folder, unreadable
        raise InputDataError(f"cannot explain {path}: {error.strerror or error}", "pass an existing image file") from None
    except Rejected as rejection:
        raise InputDataError(f"cannot explain {path}: {rejection.reason}: {rejection.detail}", "pass a decodable image file") from None


def _choose_from_paths(images: Sequence[Path], manifest: Manifest) -> list[_Chosen]:
    """Files named by the user; those that are manifest items keep their label (and box)."""
    rows = {manifest.resolve(row["path"]).resolve(): row for row in manifest.rows}
    chosen = []
    for path in images:
        row = rows.get(Path(path).resolve())
        chosen.append(_Chosen(Path(path), str(path), row["label"] if row else "?", row))
    return chosen


def _choose_from_test(cfg: HeatmapConfig, trained: TrainedModel, manifest: Manifest) -> list[_Chosen]:
    """``per_class`` test images of each class (manifest order), then the ``top_losses`` highest-loss others."""
    test = manifest.split("test")
    if not test:
        raise InputDataError(
            f"dataset '{manifest.dataset}' has no test-split images to explain", "pass image paths, or set ingest.test_fraction > 0"
        )
    if cfg.per_class == 0 and cfg.top_losses == 0:
        raise ConfigError("heatmap.per_class and heatmap.top_losses are both 0: no image to explain", "set one of them above 0")
    picked: list[int] = []
    for label in manifest.classes:
        picked.extend([i for i in test if manifest.rows[i]["label"] == label][: cfg.per_class])
    if cfg.top_losses:
        losses = _test_losses(trained, manifest, test)
        taken = set(picked)
        others = [i for i in np.asarray(test)[np.argsort(-losses, kind="stable")] if i not in taken]
        picked.extend(int(i) for i in others[: cfg.top_losses])
    rows = manifest.rows
    return [_Chosen(manifest.resolve(rows[i]["path"]), rows[i]["path"], rows[i]["label"], rows[i]) for i in picked]


def _test_losses(trained: TrainedModel, manifest: Manifest, test: list[int]) -> np.ndarray:
    """The head's loss of each test image under the model (streamed, in manifest order).

    The model was trained on this manifest (``_trained`` checks), so every label is one of its classes.
    """
    rows = [manifest.rows[i] for i in test]
    paths = [manifest.resolve(row["path"]) for row in rows]
    batches = image_dataset(paths, [needs_pillow(row) for row in rows], trained.image_size, _BATCH)
    outputs = np.concatenate([trained.model.predict_on_batch(batch) for batch in batches])
    return trained.head.item_losses(outputs, trained.head.targets(rows, trained.classes))


def _fills(fill: str, patch_size: int, manifest: Manifest, pixels: np.ndarray, size: int) -> np.ndarray:
    """What covers a patch (``fill``: mean, zero or blur), per image: (N, size, size, 3)."""
    if fill == "zero":
        return np.zeros_like(pixels)
    if fill == "blur":
        return np.stack([occlusion.blurred_fill(image, patch_size / 2) for image in pixels])
    return np.broadcast_to(occlusion.mean_fill(size, _mean_colour(manifest, size)), pixels.shape).copy()


def _mean_colour(manifest: Manifest, size: int) -> np.ndarray:
    """Mean RGB of (up to ``_MEAN_SAMPLE``) training images, resized as the model sees them."""
    rows = [manifest.rows[i] for i in (manifest.split("train") or range(len(manifest.rows)))][:_MEAN_SAMPLE]
    batches = image_dataset([manifest.resolve(row["path"]) for row in rows], [needs_pillow(row) for row in rows], size, _BATCH)
    total = sum(tf.reduce_sum(batch, axis=(0, 1, 2)).numpy().astype(np.float64) for batch in batches)
    return (total / (len(rows) * size * size)).astype(np.float32)


def _make_maps(
    cfg: HeatmapConfig,
    trained: TrainedModel,
    probe: occlusion.Probe,
    pixels: np.ndarray,
    fills: np.ndarray,
    targets: np.ndarray,
    probabilities: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each method's maps, (N, size, size), and its seconds per image."""
    maps, seconds = {}, {}
    for method in cfg.methods:
        start = time.perf_counter()
        with progress(len(pixels), f"heatmap {method}", "images") as advance:
            if method == "occlusion":
                masks = occlusion.patch_masks(trained.image_size, cfg.patch_size, cfg.stride)
                result = []
                nothing = np.zeros((1, *masks.shape[1:]), dtype=np.float32)
                for image, fill, target, outputs in zip(pixels, fills, targets, probabilities, strict=True):
                    # The score of the unoccluded image: the class probability, or the IoU of a box with itself.
                    base = float(probe(image, fill, nothing, int(target), outputs)[0])
                    result.append(occlusion.occlusion_map(probe, image, fill, int(target), masks, base, outputs))
                    advance(1)
                maps[method] = np.stack(result)
            else:
                parts = []
                for i in range(0, len(pixels), _BATCH):
                    parts.append(gradcam.gradcam_maps(trained.model, pixels[i : i + _BATCH], targets[i : i + _BATCH], cfg.gradcam_layer))
                    advance(len(parts[-1]))
                maps[method] = np.concatenate(parts)
        seconds[method] = (time.perf_counter() - start) / len(pixels)
    return maps, seconds


def _boxes(manifest: Manifest, chosen: list[_Chosen], size: int) -> list[evidence.Box | None]:
    """Each image's object box in model-input pixels, from the source's boxes.csv (None where unknown)."""
    path = manifest.source_root / BOXES_FILE
    if not path.is_file():
        return [None] * len(chosen)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != BOXES_COLUMNS:
            raise InputDataError(f"{path}: expected the columns {','.join(BOXES_COLUMNS)}", "regenerate it with `dlpipe sample images`")
        table = {row["path"]: tuple(float(row[key]) for key in BOXES_COLUMNS[2:]) for row in reader}
    boxes = []
    for item in chosen:
        box = table.get(item.row["path"]) if item.row else None
        source = (int(item.row["width"]), int(item.row["height"])) if item.row else None
        boxes.append(evidence.scale_box(box, source, size) if box and source else None)
    return boxes


def _evidence(
    probe: occlusion.Probe, pixels: np.ndarray, fills: np.ndarray, targets: np.ndarray, outputs: np.ndarray,
    maps: dict[str, np.ndarray], boxes: list[evidence.Box | None], cell: int, seed: int,
) -> tuple[dict[str, dict[str, list]], dict[str, np.ndarray]]:
    """Per method (and a random map): deletion AUC and pointing hit per image; mean deletion curves."""
    size = pixels.shape[1]
    cells = evidence.cell_masks(size, cell)
    rng = np.random.default_rng([seed, 5])
    candidates = {**maps, "random": rng.random((len(pixels), size, size)).astype(np.float32)}
    scores: dict[str, dict[str, list]] = {}
    curves = {}
    with progress(len(pixels) * len(candidates), "heatmap evidence", "maps") as advance:
        for method, method_maps in candidates.items():
            aucs, hits, all_curves = [], [], []
            for i, (image, fill, target) in enumerate(zip(pixels, fills, targets, strict=True)):
                curve = evidence.deletion_curve(probe, image, fill, int(target), method_maps[i], cells, outputs[i])
                all_curves.append(curve)
                aucs.append(evidence.area_under(curve))
                box = boxes[i]
                if box is None:
                    hits.append(None)
                elif method == "random":
                    hits.append(box.area_fraction(size))  # a random point's chance to hit, not one draw
                else:
                    hits.append(evidence.pointing_hit(method_maps[i], box))
                advance(1)
            scores[method] = {"deletion_auc": aucs, "pointing": hits}
            curves[method] = np.mean(all_curves, axis=0)
    return scores, curves


def _safe_name(index: int, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).with_suffix("").as_posix())[-60:]
    return f"{index:03d}_{stem}.png"


def _write_folder(
    folder: Path, items: list[Explained], maps: dict[str, np.ndarray], scores: dict[str, dict[str, list]],
    curves: dict[str, np.ndarray], cfg: HeatmapConfig, dataset: str,
) -> None:
    (folder / "maps").mkdir()
    for method, method_maps in maps.items():
        np.save(folder / "maps" / f"{method}.npy", method_maps.astype(np.float32))
    overlays = []
    with progress(len(items), "heatmap overlays", "images") as advance:
        for index, item in enumerate(items):
            overlays.append(f"overlays/{_safe_name(index, item.name)}")
            write_overlay(item, folder / overlays[-1])
            advance(1)
    write_grid(items, cfg.methods, folder / "grid.png", f"{dataset}: {', '.join(cfg.methods)} ({len(items)} images)")
    columns = ["index", "path", "label", "predicted", "probability", "target", "overlay"]
    for method in scores:
        columns += [f"{method}_deletion_auc", f"{method}_pointing"]
    rows = []
    for index, item in enumerate(items):
        row = {"index": index, "path": item.name, "label": item.true_label, "predicted": item.predicted,
               "probability": round(item.probability, 6), "target": item.target, "overlay": overlays[index]}
        for method, values in scores.items():
            hit = values["pointing"][index]
            row[f"{method}_deletion_auc"] = round(values["deletion_auc"][index], 6)
            row[f"{method}_pointing"] = "" if hit is None else (round(hit, 6) if method == "random" else int(hit))
        rows.append(row)
    write_csv(folder / "images.csv", columns, rows)
    steps = len(next(iter(curves.values())))
    write_csv(
        folder / "deletion.csv",
        ["removed_fraction", *curves],
        (
            {"removed_fraction": round(step / (steps - 1), 6), **{m: round(float(c[step]), 6) for m, c in curves.items()}}
            for step in range(steps)
        ),
    )


def _metrics(
    dataset: str, cfg: HeatmapConfig, size: int, target_class: str | None, count: int,
    scores: dict[str, dict[str, list]], seconds: dict[str, float],
) -> dict[str, Any]:
    """Flat figures for DVC: per method (and random) the mean deletion AUC and the pointing-game hit rate."""
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "images": count,
        "image_size": size,
        "target": target_class or "predicted",
        "methods": list(cfg.methods),
        "fill": cfg.fill,
        "deletion_fill": cfg.deletion_fill,
    }
    if "occlusion" in cfg.methods:
        metrics["occluded_copies_per_image"] = len(occlusion.patch_starts(size, cfg.patch_size, cfg.stride)) ** 2
    for method, values in scores.items():
        metrics[f"{method}_deletion_auc"] = round(float(np.mean(values["deletion_auc"])), 6)
    pointed = [value for value in scores["random"]["pointing"] if value is not None]
    metrics["pointing_images"] = len(pointed)
    for method, values in scores.items():
        known = [float(v) for v in values["pointing"] if v is not None]
        metrics[f"{method}_pointing_game"] = round(float(np.mean(known)), 6) if known else None
    for method, value in seconds.items():
        metrics[f"{method}_seconds_per_image"] = round(value, 5)
    return metrics
