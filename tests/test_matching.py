"""Mutual nearest-neighbour matching, the matching run (resume, bad input) and verification."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from aslfeat_cli.errors import UserError
from aslfeat_cli.matching import MatchOptions, match_pairs, mutual_nn_match, normalize
from aslfeat_cli.verification import VerifyOptions

H_TRUE = np.array([[0.9, 0.08, 30.0], [-0.06, 0.95, 20.0], [1e-4, -5e-5, 1.0]])


def _reference(d0, d1, ratio=None, max_distance=None):
    """Brute force: nearest neighbours both ways from the full distance matrix."""
    dist = np.sqrt(np.maximum(2 - 2 * d0 @ d1.T, 0))
    out = np.full(len(d0), -1)
    for i, j in enumerate(dist.argmin(1)):
        if dist[:, j].argmin() != i:
            continue
        if max_distance is not None and dist[i, j] > max_distance:
            continue
        if ratio is not None:
            row, col = np.sort(dist[i]), np.sort(dist[:, j])
            if row[0] > ratio * row[1] or col[0] > ratio * col[1]:
                continue
        out[i] = j
    return out


@pytest.mark.parametrize("ratio,max_distance", [(None, None), (0.85, None), (None, 0.8), (0.9, 1)])
@pytest.mark.parametrize("block_bytes", [4 * 150 * 7, 1 << 26])
def test_mutual_nn_equals_brute_force(ratio, max_distance, block_bytes):
    rng = np.random.default_rng(0)
    d0 = normalize(rng.standard_normal((230, 32)))
    d1 = normalize(rng.standard_normal((150, 32)))
    d1[:80] = normalize(d0[:80] + 0.15 * rng.standard_normal((80, 32)))
    m0, s0 = mutual_nn_match(d0, d1, MatchOptions(ratio, max_distance), block_bytes=block_bytes)
    np.testing.assert_array_equal(m0, _reference(d0, d1, ratio, max_distance))
    assert m0.dtype == np.int32 and s0.dtype == np.float32
    valid = m0 >= 0
    np.testing.assert_allclose(s0[valid], (np.sum(d0[valid] * d1[m0[valid]], 1) + 1) / 2, 1e-5)
    assert np.all(s0[~valid] == 0)


_THREADS_SCRIPT = """
import sys
import numpy as np
from aslfeat_cli.matching import mutual_nn_match, normalize
rng = np.random.default_rng(0)
d0 = normalize(rng.standard_normal((3000, 128)).astype(np.float32))
d1 = normalize(d0[::-1] + 0.3 * rng.standard_normal((3000, 128)).astype(np.float32))
m0, s0 = mutual_nn_match(d0, d1)
sys.stdout.buffer.write(m0.tobytes() + s0.tobytes())
"""


def test_matches_do_not_depend_on_the_blas_thread_count():
    """A one-thread Ray actor must write the same bytes as a two-thread run: OpenBLAS's float32
    products differ in the last bits between 1 and 2 threads (seen with OpenBLAS 0.3.31 on an
    Intel Xeon), and the stored scores came straight from them."""
    import os
    import subprocess
    import sys

    outputs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        run = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, check=True
        )
        outputs.append(run.stdout)
    assert len(outputs[0]) == 3000 * 8
    assert outputs[0] == outputs[1]


def test_empty_and_single_keypoint_sets():
    d = normalize(np.random.default_rng(1).standard_normal((5, 8)))
    m0, s0 = mutual_nn_match(np.zeros((0, 8), np.float32), d)
    assert m0.shape == (0,) and s0.shape == (0,)
    m0, _ = mutual_nn_match(d, np.zeros((0, 8), np.float32))
    assert np.all(m0 == -1)
    m0, _ = mutual_nn_match(d[:1], d, MatchOptions(ratio=0.99))
    assert m0[0] == 0


def test_option_validation():
    with pytest.raises(UserError, match="--ratio"):
        MatchOptions(ratio=1.5)
    with pytest.raises(UserError, match="--max-distance"):
        MatchOptions(max_distance=3)
    with pytest.raises(UserError, match="unknown verification model"):
        VerifyOptions(model="essential")


def _sift(image: np.ndarray, n: int = 1500):
    kps, desc = cv2.SIFT_create(n).detectAndCompute(image, None)
    xy = np.array([k.pt for k in kps], np.float32)
    desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-12))  # RootSIFT
    return xy, np.array([k.response for k in kps], np.float32), desc


@pytest.fixture(scope="module")
def homography_features(tmp_path_factory):
    """SIFT features of skimage's astronaut and a known homography warp of it."""
    path = tmp_path_factory.mktemp("feats") / "features.h5"
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    warped = cv2.warpPerspective(image, H_TRUE, (image.shape[1], image.shape[0]))
    with h5py.File(path, "w") as fh:
        for name, img in (("a/astronaut.png", image), ("b/warped.png", warped)):
            xy, scores, desc = _sift(img)
            h5io.write_features(fh, name, xy, scores, desc, img.shape[::-1])
        h5io.write_features(  # an image where the detector found nothing
            fh, "blank.png", np.zeros((0, 2)), np.zeros(0), np.zeros((0, 128)), (64, 64)
        )
    return path


def test_match_pairs_with_homography_verification(homography_features, tmp_path):
    out = tmp_path / "matches.h5"
    pairs = [("a/astronaut.png", "b/warped.png"), ("a/astronaut.png", "blank.png")]
    summary = match_pairs(
        homography_features, pairs, out, verify=VerifyOptions("homography", 3.0), progress=False
    )
    assert summary.n_matched == 2 and summary.n_empty == 1
    with h5py.File(out, "r") as fh:
        grp = fh[h5io.names_to_pair(*pairs[0])]
        assert grp["matches0"].dtype == np.int32 and "inliers0" in grp
    matches, _ = h5io.read_match_pairs(out, *pairs[0], inliers_only=True)
    kp0 = h5io.read_features(homography_features, pairs[0][0])["keypoints"]
    kp1 = h5io.read_features(homography_features, pairs[0][1])["keypoints"]
    projected = cv2.perspectiveTransform(kp0[matches[:, 0]][None].astype(np.float64), H_TRUE)[0]
    error = np.linalg.norm(projected - kp1[matches[:, 1]], axis=1)
    assert len(matches) > 200
    assert np.mean(error < 3.0) > 0.98  # the inliers agree with the true homography
    m0, _ = h5io.read_matches(out, *pairs[1])
    assert np.all(m0 == -1)


def test_resume_skips_pairs_already_matched(homography_features, tmp_path):
    out = tmp_path / "matches.h5"
    pair = ("a/astronaut.png", "b/warped.png")
    match_pairs(homography_features, [pair], out, progress=False)
    with h5py.File(out, "a") as fh:  # mark the stored result so that a rewrite would show
        fh[h5io.names_to_pair(*pair)].attrs["marker"] = 1
    summary = match_pairs(homography_features, [pair[::-1]], out, progress=False)
    assert summary.n_skipped == 1 and summary.n_matched == 0
    with h5py.File(out, "r") as fh:
        assert fh[h5io.names_to_pair(*pair)].attrs["marker"] == 1
    summary = match_pairs(homography_features, [pair], out, overwrite=True, progress=False)
    assert summary.n_matched == 1


def test_pairs_with_missing_images_write_nothing(homography_features, tmp_path):
    out = tmp_path / "matches.h5"
    with pytest.raises(UserError, match="have no features: 'missing.jpg'"):
        match_pairs(homography_features, [("a/astronaut.png", "missing.jpg")], out)
    assert not out.exists()


def test_mismatched_descriptor_sizes_write_nothing(tmp_path):
    feats = tmp_path / "f.h5"
    rng = np.random.default_rng(4)
    with h5py.File(feats, "w") as fh:
        for name, dim in (("a.jpg", 128), ("b.jpg", 64)):
            h5io.write_features(
                fh, name, rng.random((10, 2)), np.ones(10), rng.random((10, dim)), (9, 9)
            )
    out = tmp_path / "m.h5"
    with pytest.raises(UserError, match="descriptor sizes differ: 'a.jpg' has 128, 'b.jpg' has 64"):
        match_pairs(feats, [("a.jpg", "b.jpg")], out)
    assert not out.exists()


def test_empty_features_file(tmp_path):
    feats = tmp_path / "f.h5"
    h5py.File(feats, "w").close()
    with pytest.raises(UserError, match="holds no features"):
        match_pairs(feats, [("a", "b")], tmp_path / "m.h5")


def test_match_command_summary_and_resume(homography_features, tmp_path):
    out = tmp_path / "m.h5"
    args = ["match", str(homography_features), "-o", str(out), "--exhaustive", "--ratio", "0.9"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # status goes to stderr
    assert "3 pair(s) matched" in result.stderr
    result = CliRunner().invoke(cli, args)
    assert "3 already in" in result.stderr
    assert len(h5io.list_pairs(out)) == 3
