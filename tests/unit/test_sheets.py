"""Contact sheets: grid geometry, determinism, borders, empty input, top-losses selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlpipe.reports.sheets import Tile, contact_sheet, top_losses_tiles


def _image(seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def _geometry(tile_size: int, lines: int, title: bool) -> tuple[int, int, int, int]:
    """The layout documented in dlpipe.reports.sheets: (pad, cell width, cell height, title height)."""
    pad = max(4, tile_size // 16)
    font = max(10, min(16, tile_size // 10))
    line = round(font * 1.25)
    title_h = round((font + 4) * 1.25) + 2 * pad if title else 0
    return pad, tile_size + 2 * pad, pad + tile_size + pad + lines * line + pad // 2, title_h


@pytest.mark.parametrize(
    ("n", "columns", "tile_size", "title"),
    [(12, 5, 64, "grid"), (12, 4, 64, None), (12, 8, 128, "Top losses"), (3, 8, 96, None), (7, 1, 48, None)],
)
def test_sheet_size_follows_grid_arithmetic(tmp_path: Path, n: int, columns: int, tile_size: int, title: str | None) -> None:
    tiles = [Tile(_image(i), f"item {i}\nsecond line") for i in range(n)]
    path = contact_sheet(tiles, tmp_path / "sheet.png", columns=columns, tile_size=tile_size, title=title)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    _, cell_w, cell_h, title_h = _geometry(tile_size, 2, bool(title))
    with Image.open(path) as image:
        assert image.size == (cols * cell_w, title_h + rows * cell_h)
        assert image.mode == "RGB"


def test_sheet_is_deterministic_and_array_equals_pil(tmp_path: Path) -> None:
    arrays = [_image(i, (50 + 10 * i, 40)) for i in range(6)]
    tiles = [Tile(a, f"true: c{i}\npred: c{i} 0.9", (255, 0, 0) if i % 2 else None) for i, a in enumerate(arrays)]
    first = contact_sheet(tiles, tmp_path / "a.png", columns=3, title="same").read_bytes()
    second = contact_sheet(tiles, tmp_path / "b.png", columns=3, title="same").read_bytes()
    assert first == second
    pil_tiles = [Tile(Image.fromarray(t.image), t.caption, t.color) for t in tiles]
    assert contact_sheet(pil_tiles, tmp_path / "c.png", columns=3, title="same").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]  # no temporary leftovers


def test_coloured_border_is_drawn_around_the_image(tmp_path: Path) -> None:
    blue = np.zeros((64, 64, 3), dtype=np.uint8)
    blue[..., 2] = 255
    tiles = [Tile(blue, "plain"), Tile(blue, "wrong", (255, 0, 0))]
    tile_size = 64
    path = contact_sheet(tiles, tmp_path / "s.png", columns=2, tile_size=tile_size)
    pad, cell_w, _, _ = _geometry(tile_size, 1, False)
    with Image.open(path) as image:
        pixels = image.convert("RGB")
        mid = pad + tile_size // 2
        # Second tile: just outside the image slot on each side, the border is red.
        x_left, x_right = cell_w + pad - 1, cell_w + pad + tile_size
        for xy in [(x_left, mid), (x_right, mid), (cell_w + mid, pad - 1), (cell_w + mid, pad + tile_size)]:
            assert pixels.getpixel(xy) == (255, 0, 0), xy
        # The image itself is untouched and the first tile has no border.
        assert pixels.getpixel((cell_w + mid, mid)) == (0, 0, 255)
        assert pixels.getpixel((pad - 1, mid)) != (255, 0, 0)


def test_image_keeps_aspect_ratio_and_is_centred(tmp_path: Path) -> None:
    wide = np.zeros((50, 200, 3), dtype=np.uint8)  # 4:1, black
    path = contact_sheet([Tile(wide, "wide")], tmp_path / "s.png", tile_size=64)
    pad = _geometry(64, 1, False)[0]
    with Image.open(path) as image:
        px = image.convert("RGB")
        assert px.getpixel((pad + 32, pad + 32)) == (0, 0, 0)  # centre: image
        assert px.getpixel((pad + 32, pad + 2)) != (0, 0, 0)  # top of the slot: background (image is 64x16)
        assert px.getpixel((pad + 1, pad + 32)) == (0, 0, 0)  # full width


def test_empty_tiles_still_write_a_sheet(tmp_path: Path) -> None:
    path = contact_sheet([], tmp_path / "deep" / "empty.png", title="Cluster 3")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= 200 and image.size[1] >= 100
        # Something (the "(no images)" note) is drawn below the title bar.
        _, _, _, title_h = _geometry(128, 1, True)
        body = np.asarray(image.convert("L"))[title_h:]
        assert body.min() < 200


def test_contact_sheet_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        contact_sheet([Tile(_image(0), "x")], tmp_path / "s.png", columns=0)
    with pytest.raises(ValueError):
        contact_sheet([Tile(np.zeros((4, 4, 5), dtype=np.uint8), "x")], tmp_path / "s.png")


def test_top_losses_tiles_picks_highest_losses_in_order() -> None:
    images = [f"img{i}" for i in range(6)]
    true = ["circle", "star", "square", "star", "circle", "square"]
    pred = ["circle", "circle", "square", "star", "star", "circle"]
    probs = [0.9, 0.93, 0.6, 0.55, 0.71, 0.8]
    losses = [0.1, 2.5, 0.7, 0.7, 1.9, float("nan")]
    tiles = top_losses_tiles(images, true, pred, probs, losses, k=4)
    # Highest first; 2 and 3 tie at 0.7 -> lower index first; NaN sorts last.
    assert [t.image for t in tiles] == ["img1", "img4", "img2", "img3"]
    assert tiles[0].caption == "true: star\npred: circle 0.93"
    assert tiles[2].caption == "true: square\npred: square 0.60"
    red, green = tiles[0].color, tiles[2].color
    assert red is not None and green is not None
    assert red[0] > 150 and red[1] < 100 and green[1] > 120 and green[0] < 100
    assert [t.color for t in tiles] == [red, red, green, green]
    assert len(top_losses_tiles(images, true, pred, probs, losses, k=50)) == 6
    assert top_losses_tiles(images, true, pred, probs, losses, k=0) == []
    with pytest.raises(ValueError, match="losses"):
        top_losses_tiles(images, true, pred, probs, losses[:3], k=2)
