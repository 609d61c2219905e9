"""ingest on image datasets: every bad input gets its exact outcome, the source is never touched."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlpipe.core.errors import InputDataError
from dlpipe.data.media.images import load_rgb
from dlpipe.stages import ingest
from tests.conftest import Workspace, image_bytes, tree_digest


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def outcome(result: ingest.Result, relpath: str) -> dict[str, str]:
    """The manifest or rejected.csv row of one file."""
    for name in ("manifest.csv", "rejected.csv"):
        for row in read_csv(result.out_dir / name):
            if row["path"] == relpath:
                return row | {"table": name}
    raise AssertionError(f"{relpath} is in neither manifest.csv nor rejected.csv")


def ingest_with(workspace: Workspace, source: Path, files: dict[str, bytes], *overrides: str) -> ingest.Result:
    """Add ``files`` to the dataset, ingest it and check the source stayed byte-identical."""
    for relpath, data in files.items():
        (source / relpath).parent.mkdir(parents=True, exist_ok=True)
        (source / relpath).write_bytes(data)
    before = tree_digest(source)
    result = ingest.run(workspace.load(*overrides), "imgs")
    assert tree_digest(source) == before
    return result


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("cat/zero.jpg", b"", "empty_file"),
        ("cat/notes.jpg", b"this is plain text, not a JPEG\n" * 4, "not_an_image"),
        ("cat/truncated.jpg", image_bytes("JPEG", (64, 64))[:600], "truncated_or_corrupt"),
        ("cat/truncated.png", image_bytes("PNG", (64, 64))[:400], "truncated_or_corrupt"),
        ("cat/tiny.png", image_bytes("PNG", (8, 8)), "too_small"),
    ],
)
def test_bad_image_is_rejected_with_reason(workspace: Workspace, name: str, data: bytes, reason: str) -> None:
    source = workspace.image_dataset()
    result = ingest_with(workspace, source, {name: data})
    row = outcome(result, name)
    assert (row["table"], row["reason"]) == ("rejected.csv", reason)
    assert result.accepted == 12 and result.rejected == 1


def test_image_over_pixel_limit_is_rejected_before_decoding(workspace: Workspace) -> None:
    source = workspace.image_dataset()
    result = ingest_with(workspace, source, {"dog/huge.png": image_bytes("PNG", (200, 150))}, "ingest.image.max_pixels=10000")
    row = outcome(result, "dog/huge.png")
    assert row["reason"] == "too_many_pixels"
    assert "30,000 px" in row["detail"]


@pytest.mark.parametrize(
    ("mode", "save", "conversion"),
    [
        ("RGBA", {}, "RGBA->RGB over white"),
        ("P", {"transparency": 0}, "P->RGBA;RGBA->RGB over white"),
        ("P", {}, "P->RGB"),
        ("LA", {}, "LA->RGB over white"),
        ("CMYK", {}, "CMYK->RGB"),
        ("I;16", {}, "I;16->RGB (16-bit range / 257)"),
    ],
)
def test_image_modes_are_converted_and_recorded(workspace: Workspace, mode: str, save: dict, conversion: str) -> None:
    source = workspace.image_dataset()
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    name = f"cat/mode_{mode.replace(';', '')}.{fmt.lower()}"
    result = ingest_with(workspace, source, {name: image_bytes(fmt, (40, 30), mode=mode, seed=7, **save)})
    row = outcome(result, name)
    assert row["table"] == "manifest.csv"
    assert (row["mode"], row["conversion"], row["width"], row["height"]) == (mode, conversion, "40", "30")
    rgb = load_rgb(source / name, max_pixels=10**6)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)


def test_sixteen_bit_grey_maps_full_range(tmp_path: Path) -> None:
    ramp = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    assert np.asarray(load_rgb(path, 100))[0, :, 0].tolist() == [0, 128, 255]


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red, fully transparent except the first pixel
    pixels[0, 0, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(pixels).save(path)
    rgb = np.asarray(load_rgb(path, 100))
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[3, 3].tolist() == [255, 255, 255]


def test_exif_rotated_jpeg_is_oriented(workspace: Workspace) -> None:
    # Stored 60 wide × 40 high with a red marker top-left; orientation 6 means "rotate 90° clockwise to display".
    pixels = np.full((40, 60, 3), 40, dtype=np.uint8)
    pixels[:10, :10] = (255, 0, 0)
    stored = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    source = workspace.image_dataset()
    result = ingest_with(workspace, source, {"cat/rotated.jpg": buffer.getvalue()})
    row = outcome(result, "cat/rotated.jpg")
    assert (row["width"], row["height"], row["conversion"]) == ("40", "60", "exif_orientation_6")
    displayed = np.asarray(load_rgb(source / "cat/rotated.jpg", 10**6)).astype(int)
    # After a clockwise quarter turn the top-left marker sits at the top-right.
    assert displayed[5, 34, 0] > 200 and displayed[5, 34, 1] < 60
    assert displayed[5, 5, 0] < 100


def test_hidden_files_and_stray_top_level_files_are_ignored(workspace: Workspace) -> None:
    source = workspace.image_dataset()
    files = {
        "cat/.DS_Store": b"\x00\x00\x00\x01Bud1",
        ".DS_Store": b"Bud1",
        "cat/._cat_0.png": b"AppleDouble",
        ".thumbs/cat.png": image_bytes("PNG"),
        "labels.txt": b"cat\ndog\n",
    }
    result = ingest_with(workspace, source, files)
    reasons = {path: outcome(result, path)["reason"] for path in files}
    assert reasons == {
        "cat/.DS_Store": "hidden_file",
        ".DS_Store": "hidden_file",
        "cat/._cat_0.png": "hidden_file",
        ".thumbs/cat.png": "hidden_file",
        "labels.txt": "outside_class_folder",
    }
    assert (result.accepted, result.rejected, result.ignored) == (12, 0, 5)
    assert result.metrics["reject_fraction"] == 0.0


def test_non_ascii_and_space_names_are_kept_verbatim(workspace: Workspace) -> None:
    source = workspace.image_dataset()
    names = ["cat/chat noir été.png", "dog/собака 1.jpg", "dog/犬.png"]
    result = ingest_with(workspace, source, {name: image_bytes("PNG", seed=500 + i) for i, name in enumerate(names)})
    for name in names:
        row = outcome(result, name)
        assert row["table"] == "manifest.csv" and row["label"] == name.split("/")[0]


def test_duplicates_are_kept_once_and_label_conflicts_reported(workspace: Workspace) -> None:
    source = workspace.image_dataset(per_class=8)
    same_label = (source / "cat/cat_0.png").read_bytes()
    across = (source / "cat/cat_2.png").read_bytes()
    result = ingest_with(workspace, source, {"cat/copy_of_0.png": same_label, "dog/also_cat_2.png": across})
    assert outcome(result, "cat/cat_0.png")["table"] == "manifest.csv"
    assert outcome(result, "cat/copy_of_0.png")["reason"] == "duplicate"
    assert outcome(result, "cat/cat_2.png")["reason"] == "label_conflict"
    assert outcome(result, "dog/also_cat_2.png")["reason"] == "label_conflict"
    assert (result.metrics["duplicates"], result.metrics["label_conflicts"]) == (1, 2)
    manifest = read_csv(result.out_dir / "manifest.csv")
    assert len({row["sha256"] for row in manifest}) == len(manifest)


def test_split_is_stratified_seeded_and_name_independent(workspace: Workspace) -> None:
    source = workspace.image_dataset(classes=("a", "b", "c"), per_class=20)
    first = {row["sha256"]: row["split"] for row in read_csv(ingest.run(workspace.load(), "imgs").out_dir / "manifest.csv")}
    for label in ("a", "b", "c"):
        counts = {split: 0 for split in ("train", "val", "test")}
        for row in read_csv(workspace.root / "data/imgs/ingest/manifest.csv"):
            if row["label"] == label:
                counts[row["split"]] += 1
        assert counts == {"train": 14, "val": 3, "test": 3}
    # Renaming files keeps every item in its split; another seed moves some.
    for path in sorted(source.rglob("*.png")):
        path.rename(path.with_name("renamed_" + path.name))
    again = {row["sha256"]: row["split"] for row in read_csv(ingest.run(workspace.load(), "imgs").out_dir / "manifest.csv")}
    assert again == first
    other = {
        row["sha256"]: row["split"]
        for row in read_csv(ingest.run(workspace.load("base.seed=7"), "imgs").out_dir / "manifest.csv")
    }
    assert other != first and sorted(other.values()) == sorted(first.values())


def test_parallel_ingest_matches_serial(workspace: Workspace) -> None:
    workspace.image_dataset(per_class=24)
    serial = (ingest.run(workspace.load("ingest.workers=1"), "imgs").out_dir / "manifest.csv").read_bytes()
    parallel = (ingest.run(workspace.load("ingest.workers=2"), "imgs").out_dir / "manifest.csv").read_bytes()
    assert parallel == serial


def test_csv_source_of_path_and_label(workspace: Workspace) -> None:
    folder = workspace.root / "flat"
    folder.mkdir()
    rows = ["path,label"]
    for i in range(8):
        (folder / f"img{i}.png").write_bytes(image_bytes("PNG", seed=i))
        rows.append(f"img{i}.png,{'odd' if i % 2 else 'even'}")
    rows.append("missing.png,even")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    workspace.add_dataset("imgs", "image", "flat/labels.csv")
    result = ingest.run(workspace.load(), "imgs")
    assert result.classes == {"even": 4, "odd": 4}
    assert outcome(result, "missing.png")["reason"] == "missing_file"


def test_manifest_has_the_contract_columns(workspace: Workspace) -> None:
    workspace.image_dataset()
    result = ingest.run(workspace.load(), "imgs")
    header = (result.out_dir / "manifest.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["path", "label", "split", "sha256", "size_bytes", "width", "height", "format", "mode", "conversion"]
    assert (result.out_dir / "manifest.json").is_file() and result.metrics_path.is_file()


# --- dataset-level failures: a clear InputDataError, earlier artifacts intact ----------------------


def assert_fails_and_keeps_artifacts(workspace: Workspace, match: str, *overrides: str) -> None:
    manifest = workspace.root / "data/imgs/ingest/manifest.csv"
    before = manifest.read_bytes() if manifest.exists() else None
    source = workspace.root / workspace.params["datasets"]["imgs"]["source"]
    source_before = tree_digest(source) if source.exists() else None
    with pytest.raises(InputDataError, match=match) as caught:
        ingest.run(workspace.load(*overrides), "imgs")
    assert caught.value.exit_code == 4
    if before is not None:
        assert manifest.read_bytes() == before
    if source_before is not None:
        assert tree_digest(source) == source_before
    leftovers = [p.name for p in (workspace.root / "data/imgs").glob(".ingest.partial-*")] if source.exists() else []
    assert leftovers == []


def test_empty_class_folder_fails(workspace: Workspace) -> None:
    source = workspace.image_dataset()
    ingest.run(workspace.load(), "imgs")
    (source / "bird").mkdir()
    assert_fails_and_keeps_artifacts(workspace, "class folder.*with no files: bird")


def test_single_class_fails(workspace: Workspace) -> None:
    workspace.image_dataset(classes=("cat",))
    assert_fails_and_keeps_artifacts(workspace, "only one class")


def test_class_with_no_usable_file_fails(workspace: Workspace) -> None:
    source = workspace.image_dataset(per_class=6)
    ingest.run(workspace.load(), "imgs")
    (source / "bird").mkdir()
    (source / "bird/broken.jpg").write_bytes(b"not an image")
    assert_fails_and_keeps_artifacts(workspace, "no usable file: bird")


def test_too_many_rejections_fail(workspace: Workspace) -> None:
    source = workspace.image_dataset(per_class=4)
    ingest.run(workspace.load(), "imgs")
    for i in range(3):
        (source / f"cat/bad{i}.jpg").write_bytes(b"")
    assert_fails_and_keeps_artifacts(workspace, r"3 of 11 items rejected.*empty_file: 3", "ingest.max_reject_fraction=0.2")


def test_missing_source_fails(workspace: Workspace) -> None:
    workspace.add_dataset("imgs", "image", "src/nowhere")
    assert_fails_and_keeps_artifacts(workspace, "source not found")


def test_empty_source_folder_fails(workspace: Workspace) -> None:
    (workspace.root / "src/empty").mkdir(parents=True)
    workspace.add_dataset("imgs", "image", "src/empty")
    assert_fails_and_keeps_artifacts(workspace, "no files found")
