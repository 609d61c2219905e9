"""Demo datasets with numeric targets: road scenes labelled with a steering angle, triangles with their corners.

Both are drawn procedurally from ``seed`` (one generator per image, seeded with ``(seed, kind,
item)``, as :mod:`dlpipe.data.sample` does), supersampled 4x and shrunk with antialiasing, and
written with a targets CSV beside them (``steering.csv``, ``corners.csv``) in the form ingest reads
for ``task: regression`` and ``task: keypoints``.

The road is a lane of random curvature, heading and offset seen through a pinhole camera; its
label is the pure-pursuit steering angle that brings the car back to the lane centre at a fixed
look-ahead distance, so it is a function of what the picture shows. Mirroring a scene mirrors
the road and negates the angle, which is why the demo declares ``flip_negate: [steering]``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dlpipe.core.artifacts import atomic_dir, write_csv
from dlpipe.core.config import SampleSceneConfig
from dlpipe.data.sample import SampleResult, blend, contrasting_colour, downsample, gradient_background, line_coverage, save_image

STEERING_FILE = "steering.csv"
CORNERS_FILE = "corners.csv"
CORNER_NAMES = ("top", "left", "right")

_SUPERSAMPLE = 4
_KIND_ROAD, _KIND_TRIANGLES = 2, 3
# The camera and the car (metres): height of the camera, focal length as a share of the image side.
_CAMERA_HEIGHT = 1.4
_FOCAL = 0.9
_LANE_WIDTH = 3.6
_LOOKAHEAD = 9.0
_WHEELBASE = 2.7
_NEAR, _FAR = 2.0, 80.0
_NAME_MARGIN = 0.12


def generate_road(out: Path, cfg: SampleSceneConfig, seed: int) -> SampleResult:
    """Write ``out/road_0001.png ...`` lane scenes and ``out/steering.csv`` (path, steering in degrees, right positive)."""
    out = Path(out)
    rows = []
    with atomic_dir(out) as staging:
        for item in range(1, cfg.count + 1):
            rng = np.random.default_rng([seed, _KIND_ROAD, item])
            pixels, angle = _road_scene(rng, cfg.size)
            relative = f"road_{item:04d}.png"
            save_image(staging / relative, pixels, "png")
            rows.append({"path": relative, "steering": round(angle, 4)})
        write_csv(staging / STEERING_FILE, ("path", "steering"), rows)
    return SampleResult("road", out, len(rows), {})


def generate_triangles(out: Path, cfg: SampleSceneConfig, seed: int) -> SampleResult:
    """Write ``out/triangle_0001.png ...`` and ``out/corners.csv``: the corners top (highest), left and right, in pixels."""
    out = Path(out)
    rows = []
    columns = ("path", *(f"{name}_{axis}" for name in CORNER_NAMES for axis in ("x", "y")))
    with atomic_dir(out) as staging:
        for item in range(1, cfg.count + 1):
            rng = np.random.default_rng([seed, _KIND_TRIANGLES, item])
            pixels, corners = _triangle_scene(rng, cfg.size)
            relative = f"triangle_{item:04d}.png"
            save_image(staging / relative, pixels, "png")
            rows.append(dict(zip(columns, (relative, *(round(float(v), 3) for v in corners.reshape(-1))), strict=True)))
        write_csv(staging / CORNERS_FILE, columns, rows)
    return SampleResult("triangles", out, len(rows), {})


# ---------------------------------------------------------------- road


def _road_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """One lane scene and the steering angle (degrees) that keeps the car in its lane."""
    offset = rng.uniform(-1.1, 1.1)  # the car's distance right of the lane centre
    heading = rng.uniform(-0.09, 0.09)  # the lane's direction against the car's, radians
    curvature = rng.uniform(-0.012, 0.012)  # 1/m

    def centre(z: np.ndarray) -> np.ndarray:  # the lane centre's lateral position at distance z, in car coordinates
        return -offset + heading * z + 0.5 * curvature * z**2

    big = size * _SUPERSAMPLE
    horizon = big * rng.uniform(0.34, 0.42)
    focal = big * _FOCAL

    def screen(x: np.ndarray, z: np.ndarray) -> list[tuple[float, float]]:
        return list(zip((big / 2 + focal * x / z).tolist(), (horizon + focal * _CAMERA_HEIGHT / z).tolist(), strict=True))

    z = np.geomspace(_NEAR, _FAR, 60)
    sky = np.array([rng.uniform(90, 170), rng.uniform(140, 200), rng.uniform(200, 255)])
    ground = np.array([rng.uniform(40, 110), rng.uniform(90, 160), rng.uniform(30, 80)])
    asphalt = rng.uniform(70, 120) + rng.uniform(-10, 10, size=3)
    canvas = Image.new("RGB", (big, big), tuple(int(c) for c in ground))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, big, horizon), fill=tuple(int(c) for c in sky))
    for _ in range(int(rng.integers(0, 4))):  # distant hills
        x0 = rng.uniform(-0.2, 1.0) * big
        draw.ellipse(
            (x0, horizon - big * 0.08, x0 + big * rng.uniform(0.2, 0.5), horizon + big * 0.08), fill=tuple(int(c * 0.8) for c in ground)
        )
    half = _LANE_WIDTH / 2 + 0.6  # shoulders beyond the edge lines
    draw.polygon(screen(centre(z) - half, z) + screen(centre(z) + half, z)[::-1], fill=tuple(int(c) for c in asphalt))
    for side in (-1, 1):  # the solid edge lines
        edge = centre(z) + side * _LANE_WIDTH / 2
        draw.polygon(screen(edge - 0.08, z) + screen(edge + 0.08, z)[::-1], fill=(235, 235, 225))
    for start in np.arange(rng.uniform(0, 6), _FAR, 6.0):  # dashed marks of a neighbouring lane's divider
        dash = np.linspace(start, start + 2.5, 4)
        dash = dash[dash > _NEAR]
        if len(dash) > 1:
            edge = centre(dash) - _LANE_WIDTH / 2 - 0.3
            draw.polygon(screen(edge - 0.05, dash) + screen(edge + 0.05, dash)[::-1], fill=(210, 200, 120))
    _distractors(rng, draw, screen, centre, big, horizon)
    pixels = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    pixels = pixels * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(2, 9), size=pixels.shape)
    lateral = float(centre(np.array([_LOOKAHEAD]))[0])
    angle = math.degrees(math.atan(2 * _WHEELBASE * lateral / (_LOOKAHEAD**2 + lateral**2)))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), angle


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, screen, centre, big: int, horizon: float) -> None:
    """Roadside trees, shadows across the road and a car ahead now and then: things the angle does not depend on."""
    for _ in range(int(rng.integers(0, 6))):
        z = rng.uniform(6, 50)
        side = rng.choice([-1, 1])
        x = centre(np.array([z]))[0] + side * rng.uniform(3.5, 9)
        ((sx, sy),) = screen(np.array([x]), np.array([z]))
        height = big * _FOCAL * rng.uniform(3, 7) / z
        draw.rectangle((sx - height * 0.05, sy - height * 0.5, sx + height * 0.05, sy), fill=(90, 60, 30))
        draw.ellipse((sx - height * 0.3, sy - height, sx + height * 0.3, sy - height * 0.4), fill=(30, int(rng.uniform(80, 130)), 30))
    for _ in range(int(rng.integers(0, 3))):
        z0 = rng.uniform(4, 30)
        band = np.linspace(z0, z0 + rng.uniform(1, 4), 3)
        draw.polygon(screen(centre(band) - 6, band) + screen(centre(band) + 6, band)[::-1], fill=(40, 45, 40))
    if rng.random() < 0.3:
        z = rng.uniform(15, 45)
        ((sx, sy),) = screen(centre(np.array([z])), np.array([z]))
        width = big * _FOCAL * 1.8 / z
        draw.rectangle((sx - width / 2, sy - width * 0.7, sx + width / 2, sy), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))


# ---------------------------------------------------------------- triangles


def _triangle_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One filled triangle on a busy background; its corners (3, 2) in pixels, ordered top, left, right."""
    background = gradient_background(rng, size)
    for _ in range(rng.integers(0, 3)):
        background = blend(background, rng.integers(0, 256, size=3), line_coverage(rng, size) * rng.uniform(0.12, 0.3))
    corners = _corners(rng, size)
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in corners * _SUPERSAMPLE], fill=255)
    mask = downsample(canvas, size)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    colour = contrasting_colour(rng, background[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
    image = blend(background, colour, mask) + rng.normal(0, rng.uniform(2, 8), size=(size, size, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), corners


def _corners(rng: np.random.Generator, size: int) -> np.ndarray:
    """Three corners of a triangle with no angle under 25 degrees, inside the image with a margin, named by position.

    The names must be unambiguous from the picture: the top corner is clearly higher than the
    other two, and of those the left one clearly left of the right one (by ``_NAME_MARGIN`` of the side).
    """
    margin = 0.06 * size
    while True:
        points = rng.uniform(margin, size - margin, size=(3, 2))
        sides = [points[(i + 1) % 3] - points[i] for i in range(3)]
        area = abs(sides[0][0] * sides[1][1] - sides[0][1] * sides[1][0]) / 2
        angles = [
            math.degrees(
                math.acos(np.clip(np.dot(-sides[i - 1], sides[i]) / (np.linalg.norm(sides[i - 1]) * np.linalg.norm(sides[i])), -1, 1))
            )
            for i in range(3)
        ]
        top = int(points[:, 1].argmin())
        rest = sorted((i for i in range(3) if i != top), key=lambda i: points[i, 0])
        clear = (
            points[rest, 1].min() - points[top, 1] >= _NAME_MARGIN * size and points[rest[1], 0] - points[rest[0], 0] >= _NAME_MARGIN * size
        )
        if area >= 0.08 * size * size and min(angles) >= 25 and clear:
            return points[[top, *rest]]
