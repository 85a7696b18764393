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


# --- hloc's reading functions, re-implemented minimally from hloc/utils/{io,parsers}.py ----


def hloc_names_to_pair(name0, name1, separator="/"):
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def hloc_names_to_pair_old(name0, name1):
    return hloc_names_to_pair(name0, name1, separator="_")


def hloc_list_h5_names(path):
    names = []
    with h5py.File(str(path), "r", libver="latest") as fd:

        def visit_fn(_, obj):
            if isinstance(obj, h5py.Dataset):
                names.append(obj.parent.name.strip("/"))

        fd.visititems(visit_fn)
    return list(set(names))


def hloc_get_keypoints(path, name):
    with h5py.File(str(path), "r", libver="latest") as hfile:
        return hfile[name]["keypoints"].__array__()


def hloc_find_pair(hfile, name0, name1):
    pair = hloc_names_to_pair(name0, name1)
    if pair in hfile:
        return pair, False
    pair = hloc_names_to_pair(name1, name0)
    if pair in hfile:
        return pair, True
    pair = hloc_names_to_pair_old(name0, name1)
    if pair in hfile:
        return pair, False
    pair = hloc_names_to_pair_old(name1, name0)
    if pair in hfile:
        return pair, True
    raise ValueError(f"Could not find pair {(name0, name1)}")


def hloc_get_matches(path, name0, name1):
    with h5py.File(str(path), "r", libver="latest") as hfile:
        pair, reverse = hloc_find_pair(hfile, name0, name1)
        matches = hfile[pair]["matches0"].__array__()
        scores = hfile[pair]["matching_scores0"].__array__()
    idx = np.where(matches != -1)[0]
    matches = np.stack([idx, matches[idx]], -1)
    if reverse:
        matches = np.flip(matches, -1)
    scores = scores[idx]
    return matches, scores


# ------------------------------------------------------------------------------------------


def test_names_to_pair_matches_hloc():
    assert h5io.names_to_pair("a/b.jpg", "c.jpg") == hloc_names_to_pair("a/b.jpg", "c.jpg")
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


def test_hloc_reading_logic_opens_our_files(tmp_path):
    """hloc's list_h5_names / get_keypoints / get_matches read what we write."""
    rng = np.random.default_rng(3)
    feats = tmp_path / "f.h5"
    items = {"seq/0001.jpg": _features(rng, 20), "seq/0002.jpg": _features(rng, 25)}
    _write(feats, items)
    assert sorted(hloc_list_h5_names(feats)) == sorted(items)
    np.testing.assert_array_equal(
        hloc_get_keypoints(feats, "seq/0002.jpg"), items["seq/0002.jpg"]["keypoints"]
    )
    matches = tmp_path / "m.h5"
    m0 = np.full(20, -1, np.int32)
    m0[[1, 5]] = [24, 3]
    with h5py.File(matches, "w") as fh:
        h5io.write_matches(fh, "seq/0001.jpg", "seq/0002.jpg", m0, np.full(20, 0.5), None, 25)
    got, scores = hloc_get_matches(matches, "seq/0001.jpg", "seq/0002.jpg")
    np.testing.assert_array_equal(got, [[1, 24], [5, 3]])
    got, _ = hloc_get_matches(matches, "seq/0002.jpg", "seq/0001.jpg")
    np.testing.assert_array_equal(got, [[24, 1], [3, 5]])
    assert scores.dtype == np.float32


def test_hloc_package_reads_our_files(tmp_path):
    """hloc's own readers, when hloc is installed (it is not on PyPI)."""
    hloc_io = pytest.importorskip(
        "hloc.utils.io",
        reason="hloc not installed (not on PyPI: pip install git+https://github.com/cvg/"
        "Hierarchical-Localization); its reading logic is re-implemented in the test above",
    )
    rng = np.random.default_rng(5)
    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    _write(feats, {"a.jpg": _features(rng, 9), "b.jpg": _features(rng, 4)})
    m0 = np.array([1, -1, 0, -1, -1, -1, -1, -1, 3], np.int32)
    with h5py.File(matches, "w") as fh:
        h5io.write_matches(fh, "a.jpg", "b.jpg", m0, np.ones(9), None, 4)
    assert hloc_io.get_keypoints(feats, "b.jpg").shape == (4, 2)
    got, _ = hloc_io.get_matches(matches, "b.jpg", "a.jpg")
    np.testing.assert_array_equal(got, [[1, 0], [0, 2], [3, 8]])
