"""`aslfeat show` and the drawing functions: real HDF5 files in, PNG pictures out."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from skimage import data

from aslfeat_cli.cli import cli
from aslfeat_cli.h5io import write_features, write_matches
from aslfeat_cli.homography_eval import estimate_homography, mutual_nearest_neighbours
from aslfeat_cli.sift import SiftExtractor
from aslfeat_cli.viz import draw_keypoints, draw_matches, plot_mma

GREEN = np.array([80, 220, 40])
RED = np.array([40, 40, 235])


def _count_colour(image: np.ndarray, colour: np.ndarray, tolerance: int = 30) -> int:
    return int((np.abs(image.astype(int) - colour).max(axis=2) < tolerance).sum())


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two views of a photo (a rotation), SIFT features and verified matches in HDF5."""
    root = tmp_path_factory.mktemp("show")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:, :448]
    rotation = np.vstack([cv2.getRotationMatrix2D((224, 256), 15, 1.0), [0, 0, 1]])
    views = {"sub/a.png": photo, "b.jpg": cv2.warpPerspective(photo, rotation, (448, 512))}
    sift = SiftExtractor(800)
    feats = {}
    with h5py.File(root / "features.h5", "w") as fh:
        for name, image in views.items():
            cv2.imwrite(str(images / name), image)
            f = sift.extract(image)
            feats[name] = f
            write_features(fh, name, f.keypoints, f.scores, f.descriptors, f.image_size)
    k0, k1 = feats["sub/a.png"].keypoints, feats["b.jpg"].keypoints
    pairs = mutual_nearest_neighbours(feats["sub/a.png"].descriptors, feats["b.jpg"].descriptors)
    _, inliers = estimate_homography(k0[pairs[:, 0]], k1[pairs[:, 1]])
    matches0 = np.full(len(k0), -1, np.int32)
    matches0[pairs[:, 0]] = pairs[:, 1]
    inliers0 = np.zeros(len(k0), bool)
    inliers0[pairs[inliers, 0]] = True
    with h5py.File(root / "verified.h5", "w") as fh:
        write_matches(
            fh,
            "sub/a.png",
            "b.jpg",
            matches0,
            np.ones(len(k0)),
            inliers=inliers0,
            num_keypoints1=len(k1),
        )
    with h5py.File(root / "plain.h5", "w") as fh:
        write_matches(fh, "sub/a.png", "b.jpg", matches0, np.ones(len(k0)), num_keypoints1=len(k1))
    return {
        "root": root,
        "images": images,
        "n_matches": len(pairs),
        "n_inliers": int(inliers.sum()),
    }


def _show(scene: dict, matches: str, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "show",
            str(scene["root"] / "features.h5"),
            "--matches",
            str(scene["root"] / matches),
            "--images",
            str(scene["images"]),
            "-o",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output


def test_show_draws_keypoints_and_verified_matches(scene: dict) -> None:
    out = scene["root"] / "pictures"
    _show(scene, "verified.h5", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "keypoints/b.png",
        "keypoints/sub-a.png",
        "matches/sub-a__b.png",
    ]
    keypoints = cv2.imread(str(out / "keypoints" / "sub-a.png"))
    assert keypoints.shape[1] == 448 and keypoints.shape[0] > 512  # image + header strip
    assert scene["n_inliers"] > 50 and scene["n_matches"] > scene["n_inliers"]
    matches = cv2.imread(str(out / "matches" / "sub-a__b.png"))
    assert matches.shape[1] == 448 * 2 + 12
    assert _count_colour(matches, GREEN) > 1000 and _count_colour(matches, RED) > 20


def _bluish(image: np.ndarray) -> int:
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return int(((b > 150) & (g < 120) & (r < 100)).sum())


def test_show_unverified_matches_are_rainbow_coloured(scene: dict) -> None:
    out = scene["root"] / "plain_pictures"
    _show(scene, "plain.h5", out, "--names", "sub/a.png", "--names", "b.jpg")
    _show(scene, "verified.h5", out / "verified", "--names", "sub/a.png", "--names", "b.jpg")
    plain = cv2.imread(str(out / "matches" / "sub-a__b.png"))
    verified = cv2.imread(str(out / "verified" / "matches" / "sub-a__b.png"))
    # Without verification the lines are coloured by position (blue on the left), not green.
    assert _count_colour(plain, GREEN, 10) < 50 and _bluish(plain) > 500
    assert _bluish(verified) < 50


def test_show_errors(scene: dict, tmp_path: Path) -> None:
    features = str(scene["root"] / "features.h5")
    result = CliRunner().invoke(
        cli, ["show", features, "--images", str(tmp_path), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "cannot read the image" in result.output
    result = CliRunner().invoke(
        cli,
        [
            "show",
            features,
            "--images",
            str(scene["images"]),
            "-o",
            str(tmp_path / "o"),
            "--names",
            "missing.jpg",
        ],
    )
    assert result.exit_code == 1 and "no features for missing.jpg" in result.output
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("hello")
    result = CliRunner().invoke(
        cli, ["show", str(not_h5), "--images", str(scene["images"]), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "not an HDF5 file" in result.output


def test_draw_keypoints_marks_the_points() -> None:
    image = np.full((100, 120), 128, np.uint8)
    points = np.array([[20.0, 30.0], [90.0, 70.0]], np.float32)
    picture = draw_keypoints(image, points, np.array([0.1, 0.9]))
    body = picture[picture.shape[0] - 100 :]
    # Circles around the points (radius 2..6 px), untouched grey far from them.
    for x, y in points.astype(int):
        ring = body[y - 7 : y + 8, x - 7 : x + 8].astype(int)
        assert (np.abs(ring - ring[0, 0]).sum(axis=2) > 60).any()
    assert (body[50, 55] == body[0, 0]).all()


def test_draw_matches_limits_lines_and_scales_large_images() -> None:
    image = np.zeros((2000, 3000, 3), np.uint8)
    kpts = np.random.default_rng(0).uniform(0, 1999, size=(1000, 2)).astype(np.float32)
    pairs = np.stack([np.arange(1000), np.arange(1000)], axis=1)
    picture = draw_matches(image, image, kpts, kpts, pairs, max_lines=50, max_dim=600)
    assert picture.shape[1] == 600 * 2 + 12


def test_plot_mma_draws_each_method() -> None:
    curves = {
        "a": {"overall": [0.1 * i for i in range(1, 11)]},
        "b": {"overall": [0.5] * 10, "viewpoint": [0.4] * 10},
    }
    plot = plot_mma(curves, list(range(1, 11)))
    assert plot.shape[1] == 2 * 420  # overall and viewpoint panels; no illumination data
    flat = plot.reshape(-1, 3)
    assert (np.abs(flat.astype(int) - [200, 110, 30]).max(axis=1) < 10).sum() > 100
    assert (np.abs(flat.astype(int) - [30, 130, 240]).max(axis=1) < 10).sum() > 100
