"""hloc HDF5 layout: features and matches round trips, and hloc's own reading logic."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from aslfeat_cli import h5io
from aslfeat_cli.errors import UserError


def _features(rng: np.random.Generator, n: int, dim: int = 128) -> dict:
    desc = rng.standard_normal((n, dim)).astype(np.float32)
    return {
        "keypoints": (rng.random((n, 2)) * 500).astype(np.float32),
        "scores": rng.random(n).astype(np.float32),
        "descriptors": desc / np.linalg.norm(desc, axis=1, keepdims=True),
        "image_size": (640, 480),
    }


def _write(path, items: dict, **kw) -> None:
    with h5py.File(path, "a") as fh:
        for name, f in items.items():
            h5io.write_features(
                fh, name, f["keypoints"], f["scores"], f["descriptors"], f["image_size"], **kw
            )


def test_names_to_pair_layout():
    # hloc's own names_to_pair is compared in tests/test_hloc.py (the real package).
    assert h5io.names_to_pair("a/b.jpg", "c.jpg") == "a-b.jpg/c.jpg"


def test_features_round_trip_nested_names(tmp_path):
    rng = np.random.default_rng(0)
    items = {"a.jpg": _features(rng, 30), "sub/dir/b.png": _features(rng, 7)}
    path = tmp_path / "f.h5"
    _write(path, items)
    assert h5io.list_names(path) == ["a.jpg", "sub/dir/b.png"]
    for name, f in items.items():
        got = h5io.read_features(path, name)
        np.testing.assert_array_equal(got["keypoints"], f["keypoints"])
        np.testing.assert_array_equal(got["descriptors"], f["descriptors"])
        np.testing.assert_array_equal(got["image_size"], [640, 480])
        assert got["descriptors"].dtype == np.float32
    with h5py.File(path, "r") as fh:  # hloc stores descriptors D x N
        assert fh["sub/dir/b.png/descriptors"].shape == (128, 7)
        assert fh["a.jpg/keypoints"].dtype == np.float32


def test_float16_storage_and_replacement(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "f.h5"
    _write(path, {"a.jpg": _features(rng, 10)}, descriptor_dtype=np.float16)
    with h5py.File(path, "r") as fh:
        assert fh["a.jpg/descriptors"].dtype == np.float16
    assert h5io.read_features(path, "a.jpg")["descriptors"].dtype == np.float32
    _write(path, {"a.jpg": _features(rng, 4)})  # replaces, no "already exists" error
    assert len(h5io.read_features(path, "a.jpg")["keypoints"]) == 4


def test_list_names_missing_and_not_hdf5(tmp_path):
    assert h5io.list_names(tmp_path / "nope.h5") == []
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(UserError, match="not an HDF5 file"):
        h5io.list_names(bad)


def test_read_features_errors(tmp_path):
    path = tmp_path / "f.h5"
    _write(path, {"a.jpg": _features(np.random.default_rng(2), 5)})
    with pytest.raises(UserError, match="no features for image 'b.jpg'"):
        h5io.read_features(path, "b.jpg")
    with h5py.File(path, "a") as fh:  # a corrupt entry: descriptors for 3 of 5 keypoints
        del fh["a.jpg/descriptors"]
        fh["a.jpg/descriptors"] = np.zeros((128, 3), np.float32)
    with pytest.raises(UserError, match="5 keypoints but descriptors"):
        h5io.read_features(path, "a.jpg")


def test_matches_int32_and_both_directions(tmp_path):
    path = tmp_path / "m.h5"
    n0, n1 = 40000, 50
    m0 = np.full(n0, -1, np.int32)
    m0[[3, 35000, 39999]] = [7, 49, 0]  # index past int16 on the image-0 side
    s0 = np.zeros(n0, np.float32)
    s0[[3, 35000, 39999]] = [0.9, 0.8, 0.7]
    with h5py.File(path, "w") as fh:
        h5io.write_matches(fh, "x/a.jpg", "b.jpg", m0, s0, num_keypoints1=n1)
    with h5py.File(path, "r") as fh:
        assert fh["x-a.jpg/b.jpg/matches0"].dtype == np.int32
    got, scores = h5io.read_matches(path, "x/a.jpg", "b.jpg")
    np.testing.assert_array_equal(got, m0)
    flipped, fscores = h5io.read_matches(path, "b.jpg", "x/a.jpg")
    assert flipped.shape == (n1,)
    assert flipped[49] == 35000 and flipped[0] == 39999 and flipped[7] == 3
    assert (flipped >= 0).sum() == 3 and fscores[49] == pytest.approx(0.8)
    pairs, _ = h5io.read_match_pairs(path, "b.jpg", "x/a.jpg")
    np.testing.assert_array_equal(pairs, [[7, 3], [49, 35000], [0, 39999]])
    assert h5io.list_pairs(path) == [("x/a.jpg", "b.jpg")]
    with pytest.raises(UserError, match="no matches for pair"):
        h5io.read_matches(path, "x/a.jpg", "c.jpg")


def test_inliers_mask(tmp_path):
    path = tmp_path / "m.h5"
    m0 = np.array([2, -1, 0, 1], np.int32)
    with h5py.File(path, "w") as fh:
        h5io.write_matches(
            fh, "a", "b", m0, np.ones(4), inliers=np.array([True, False, False, True])
        )
    pairs, _ = h5io.read_match_pairs(path, "a", "b", inliers_only=True)
    np.testing.assert_array_equal(pairs, [[0, 2], [3, 1]])
    pairs, _ = h5io.read_match_pairs(path, "a", "b")
    assert len(pairs) == 3
