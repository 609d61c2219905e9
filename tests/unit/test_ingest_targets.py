"""ingest of a targets CSV: every bad row has its reason, EXIF-rotated images are measured as displayed, splits spread the range."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlpipe.core.errors import ConfigError, InputDataError
from dlpipe.stages import ingest
from tests.conftest import Workspace, image_bytes, tree_digest


def write_rows(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def box_dataset(workspace: Workspace, rows: list[list[object]], name: str = "boxes", task: str = "bbox", images: int = 12) -> Path:
    """``images`` 40x30 PNGs and a boxes.csv with the given rows (path, x_min, y_min, x_max, y_max)."""
    folder = workspace.root / "src" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        (folder / f"img_{i:02d}.png").write_bytes(image_bytes("PNG", size=(40, 30), seed=i))
    write_rows(folder / "boxes.csv", ["path", "x_min", "y_min", "x_max", "y_max"], rows)
    workspace.add_dataset(name, "image", f"src/{name}/boxes.csv")
    workspace.params["datasets"][name]["task"] = task
    workspace.write_params()
    return folder


def rejected(project, dataset: str) -> dict[str, str]:
    with open(project.layout(dataset).ingest_dir / "rejected.csv", newline="", encoding="utf-8") as handle:
        return {row["path"]: row["reason"] for row in csv.DictReader(handle)}


def test_every_bad_row_gets_its_reason_and_the_good_rows_their_pixels(workspace: Workspace):
    good = [[f"img_{i:02d}.png", 2, 3, 20 + i, 25] for i in range(6)]
    bad = [
        ["img_06.png", "", 3, 20, 25],  # missing
        ["img_07.png", "left", 3, 20, 25],  # not a number
        ["img_08.png", 2, "inf", 20, 25],  # not finite
        ["img_09.png", 20, 3, 20, 25],  # x_max <= x_min
        ["img_10.png", 2, 3, 41, 25],  # beyond the 40 px width
        ["img_00.png", 1, 1, 5, 5],  # a second row for img_00
        ["gone.png", 1, 1, 5, 5],  # no such image
    ]
    source = box_dataset(workspace, good + bad)
    workspace.params["ingest"]["max_reject_fraction"] = 0.9
    before = tree_digest(source)
    project = workspace.load()
    result = ingest.run(project, "boxes")
    assert result.accepted == 6
    assert rejected(project, "boxes") == {
        "img_06.png": "missing_target",
        "img_07.png": "non_numeric_target",
        "img_08.png": "non_finite_target",
        "img_09.png": "empty_box",
        "img_10.png": "target_outside_image",
        "img_00.png": "duplicate_row",
        "gone.png": "missing_file",
        "img_11.png": "no_target_row",  # an image no row names
    }
    with open(project.layout("boxes").ingest_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["path"], float(r["x_max"])) for r in rows] == [(f"img_{i:02d}.png", 20.0 + i) for i in range(6)]
    sidecar = json.loads((project.layout("boxes").ingest_dir / "manifest.json").read_text())
    assert sidecar["task"] == "bbox" and sidecar["target_columns"] == ["x_min", "y_min", "x_max", "y_max"]
    assert tree_digest(source) == before  # the user's folder is only read


def test_a_csv_without_the_named_columns_is_refused_naming_them(workspace: Workspace):
    box_dataset(workspace, [["img_00.png", 1, 1, 5, 5]])
    workspace.params["datasets"]["boxes"]["targets"] = {"columns": ["left", "top", "right", "bottom"]}
    with pytest.raises(InputDataError, match=r"boxes\.csv: missing column\(s\) left, top, right, bottom") as error:
        ingest.run(workspace.load(), "boxes")
    assert error.value.exit_code == 4  # bad input data


def test_task_params_are_checked_before_any_work(workspace: Workspace):
    box_dataset(workspace, [["img_00.png", 1, 1, 5, 5]])
    for change, message in [
        ({"task": "regression"}, "regression needs targets.columns"),
        ({"task": "keypoints"}, "keypoints needs targets.points"),
        ({"task": "bbox", "targets": {"columns": ["a", "b", "c"]}}, "needs 4 targets.columns"),
        ({"task": "bbox", "modality": "audio"}, "needs images"),
        ({"task": "classification", "targets": {"columns": ["a"]}}, "only a task other than classification"),
        ({"task": "regression", "targets": {"columns": ["a"], "flip_negate": ["b"]}}, r"flip_negate: \['b'\] are not in"),
        ({"task": "keypoints", "targets": {"points": ["l", "r"], "flip_pairs": [["l", "x"]]}}, "flip_pairs"),
    ]:
        entry = {"modality": "image", "source": "src/boxes/boxes.csv", **change}
        workspace.params["datasets"]["boxes"] = entry
        with pytest.raises(ConfigError, match=message):
            workspace.load()


def rotated_jpeg(stored: tuple[int, int], orientation: int) -> bytes:
    """A JPEG stored ``stored`` (w, h) with a white block in its stored top-left corner and an EXIF orientation tag."""
    pixels = np.zeros((stored[1], stored[0], 3), dtype=np.uint8)
    pixels[: stored[1] // 4, : stored[0] // 4] = 255
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_a_rotated_jpeg_is_measured_and_scaled_as_displayed(workspace: Workspace):
    # Stored 80x40, orientation 6 (rotate 90 degrees clockwise to display): displayed 40x80, and the stored
    # top-left block shows at the displayed top-right corner: x 30..40, y 0..20.
    folder = workspace.root / "src" / "rot"
    folder.mkdir(parents=True)
    (folder / "rotated.jpg").write_bytes(rotated_jpeg((80, 40), 6))
    (folder / "wide.jpg").write_bytes(rotated_jpeg((80, 40), 6))
    write_rows(
        folder / "boxes.csv", ["path", "x_min", "y_min", "x_max", "y_max"], [["rotated.jpg", 30, 0, 40, 20], ["wide.jpg", 30, 0, 60, 20]]
    )
    workspace.add_dataset("rot", "image", "src/rot/boxes.csv")
    workspace.params["datasets"]["rot"]["task"] = "bbox"
    workspace.params["ingest"]["val_fraction"] = 0.0
    workspace.params["ingest"]["test_fraction"] = 0.0
    project = workspace.load()
    ingest.run(project, "rot")
    # x_max 60 fits the stored width (80) but not the displayed one (40): rejected.
    assert rejected(project, "rot") == {"wide.jpg": "target_outside_image"}
    from dlpipe.data.manifest import load_manifest
    from dlpipe.models.heads.bbox import BoxHead
    from dlpipe.models.inputs import load_image_array, needs_pillow

    manifest = load_manifest(project, "rot")
    row = manifest.rows[0]
    assert (row["width"], row["height"]) == ("40", "80") and needs_pillow(row)
    box = BoxHead().targets([row], [])[0]
    assert np.allclose(box, [0.75, 0.0, 1.0, 0.25])
    # In the square network input the box still frames the white block.
    pixels = load_image_array(folder / "rotated.jpg", 64)[..., 0]
    x0, y0, x1, y1 = (box * 64).round().astype(int)
    assert pixels[y0:y1, x0:x1].mean() > 200 and pixels[:, : x0 - 2].mean() < 30


def test_numeric_targets_are_split_by_quantile_bins(workspace: Workspace):
    folder = workspace.root / "src" / "angles"
    folder.mkdir(parents=True)
    rows = []
    for i in range(200):
        (folder / f"img_{i:03d}.png").write_bytes(image_bytes("PNG", size=(16, 16), seed=i))
        rows.append([f"img_{i:03d}.png", float(i)])  # the angle grows with the index
    write_rows(folder / "angles.csv", ["path", "angle"], rows)
    workspace.add_dataset("angles", "image", "src/angles/angles.csv")
    workspace.params["datasets"]["angles"].update({"task": "regression", "targets": {"columns": ["angle"]}})
    project = workspace.load()
    ingest.run(project, "angles")
    with open(project.layout("angles").ingest_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        manifest = list(csv.DictReader(handle))
    test = sorted(float(r["angle"]) for r in manifest if r["split"] == "test")
    assert len(test) == 30
    # Ten bins of twenty: three test items in each, so the test split spans the whole range.
    assert [sum(20 * b <= v < 20 * (b + 1) for v in test) for b in range(10)] == [3] * 10
