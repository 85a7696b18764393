"""Synthetic pairs: geometry matches the returned homography, determinism, the fixed split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from aslfeat_cli.synthetic import (
    covisibility,
    make_pair,
    photometric,
    random_homography,
    split_photos,
    warp_points,
    zoom_at_centre,
)

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"


def _bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    xy = points.astype(np.float32)
    return cv2.remap(image, xy[:, :1], xy[:, 1:], cv2.INTER_LINEAR)[:, 0].astype(np.float64)


def test_pair_content_follows_homography() -> None:
    image = cv2.cvtColor(_bgr(), cv2.COLOR_BGR2GRAY)
    a, b, h = make_pair(image, np.random.default_rng(1), (320, 240), photometric_changes=False)
    assert a.shape == b.shape == (240, 320) and a.dtype == b.dtype == np.uint8
    ys, xs = np.mgrid[10:230:5, 10:310:5]
    pa = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    pb = warp_points(pa, h)
    seen = (pb[:, 0] > 1) & (pb[:, 0] < 318) & (pb[:, 1] > 1) & (pb[:, 1] < 238)
    assert seen.sum() > 200
    va = a[ys.ravel(), xs.ravel()][seen].astype(np.float64)
    right = np.abs(va - _sample(b, pb[seen])).mean()
    # The same points through a slightly wrong homography must disagree much more.
    wrong = np.abs(va - _sample(b, pb[seen] + 3.0)).mean()
    assert right < 3.0 and wrong > 2.5 * right


def test_pair_is_deterministic_and_colour_is_kept() -> None:
    image = _bgr()
    first = make_pair(image, np.random.default_rng(7), (256, 192))
    second = make_pair(image, np.random.default_rng(7), (256, 192))
    other = make_pair(image, np.random.default_rng(8), (256, 192))
    assert first[0].shape == (192, 256, 3)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(first[2], other[2])


def test_random_homography_ranges() -> None:
    rng = np.random.default_rng(0)
    scales, angles = [], []
    for _ in range(300):
        h = random_homography(rng, 320, 240, perspective=0.0, translation=0.0)
        affine = h[:2, :2] / h[2, 2]
        scales.append(np.sqrt(abs(np.linalg.det(affine))))
        angles.append(np.degrees(np.arctan2(affine[1, 0], affine[0, 0])))
        # The centre stays fixed without translation.
        np.testing.assert_allclose(warp_points([[159.5, 119.5]], h)[0], [159.5, 119.5], atol=1e-3)
    assert 0.59 < min(scales) < 0.7 and 1.45 < max(scales) < 1.61
    assert -20.01 < min(angles) < -15 and 15 < max(angles) < 20.01


def test_photometric_changes_look_not_shape() -> None:
    image = _bgr()[:200, :300]
    rng = np.random.default_rng(3)
    outputs = [photometric(rng, image) for _ in range(10)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
    assert any(np.abs(o.astype(int) - image).mean() > 5 for o in outputs)


def test_covisibility_of_a_shift() -> None:
    h = np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])
    mask_a, mask_b = covisibility(h, (50, 40), (50, 40))
    assert mask_a.shape == (40, 50)
    assert mask_a[:, :40].all() and not mask_a[:, 40:].any()
    assert mask_b[:, 10:].all() and not mask_b[:, :10].any()


def test_split_photos_is_fixed_ten_percent(tmp_path: Path) -> None:
    if not TRAIN.is_dir():
        pytest.skip("training photos: ../shared/data not found")
    train, val = split_photos(TRAIN)
    assert len(train) + len(val) == 780 and len(val) == 78
    assert not set(train) & set(val)
    per_folder = {p.parent.name: 0 for p in val}
    for p in val:
        per_folder[p.parent.name] += 1
    assert per_folder == {"bsds500": 50, "urban100": 10, "sun_hays80": 8, "mini_depth_100": 10}
    # Depends only on names: a copy of the tree elsewhere splits the same way.
    for p in val[:3] + train[:27]:
        target = tmp_path / p.relative_to(TRAIN)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    _, val_copy = split_photos(tmp_path)
    assert {p.relative_to(tmp_path) for p in val_copy} <= {p.relative_to(TRAIN) for p in val}


def test_zoom_spans_both_sides_and_b_stays_inside_a_large_photo() -> None:
    # The homography is drawn before the crop, so zoom-outs are kept as often as zoom-ins
    # (an earlier version redrew draws whose B left the photo: 2 % of pairs zoomed out).
    # Grey levels from 20 up, so that 0 in B can only be border (the astronaut has black).
    image = np.clip(cv2.resize(cv2.cvtColor(_bgr(), cv2.COLOR_BGR2GRAY), (1024, 1024)), 20, 255)
    rng = np.random.default_rng(3)
    zooms = []
    for _ in range(40):
        a, b, h = make_pair(image, rng, (192, 192), photometric_changes=False)
        zooms.append(zoom_at_centre(h, (192, 192)))
        # The photo has room for everything B sees: no black border.
        assert (b == 0).mean() == 0
    zooms = np.array(zooms)
    assert (zooms < 0.85).mean() > 0.2 and (zooms > 1.15).mean() > 0.2
    assert zooms.min() > 0.5 and zooms.max() < 1.9


def test_small_photo_is_upsampled_only_so_far() -> None:
    # A strong zoom-out of a photo barely larger than the crop cannot fill B: the photo is
    # upsampled at most max_upsample times and the rest of B is black (not seen by A).
    image = np.clip(cv2.cvtColor(_bgr(), cv2.COLOR_BGR2GRAY)[:260, :260], 20, 255)
    rng = np.random.default_rng(0)
    a, b, h = make_pair(
        image, rng, (256, 256), photometric_changes=False, scale_range=(0.6, 0.6), max_upsample=1.2
    )
    assert zoom_at_centre(h, (256, 256)) == pytest.approx(0.6, abs=0.1)
    _, seen_b = covisibility(h, (256, 256), (256, 256))
    black = b == 0
    assert black.mean() > 0.1
    # Black pixels of B are outside the photo, so they are not seen by A either.
    assert (black & seen_b).mean() < 0.005


def test_zoom_at_centre_of_a_known_scaling() -> None:
    centre = np.array([[1.0, 0, 159.5], [0, 1, 119.5], [0, 0, 1]])
    scale = np.diag([1.3, 1.3, 1.0])
    h = centre @ scale @ np.linalg.inv(centre)
    assert zoom_at_centre(h, (320, 240)) == pytest.approx(1.3)
