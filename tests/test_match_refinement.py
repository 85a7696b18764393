"""``--refine-matches``: matched keypoints moved towards their match's descriptor.

Known answers: on a descriptor map that is a smooth function of position, a point started
1–5 network pixels away from where the target descriptor was sampled comes back to it (within
a quarter of the search step, re-centring past the window); tracks are the connected
components of the match graph with the most matched keypoint as root; the evaluation's MMA
uses the moved points.
Behaviour: on boat 1->2 (real zoom and rotation) MMA@1 rises past SIFT's; in SfM the database's
matched keypoints move and the model is built; the options refuse what cannot help.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import homography_eval as he
from aslfeat_cli.cli import cli
from aslfeat_cli.extractor import Extractor
from aslfeat_cli.keypoints import sample_descriptors
from aslfeat_cli.match_refinement import (
    SEARCH_STEP,
    _root_descriptors,
    check_refinement,
    refine_pair,
    refine_towards,
    refine_two_view,
    track_roots,
    zoom_between,
)

from .conftest import shared_data


def smooth_descriptor_map(height: int = 40, width: int = 50, dim: int = 64) -> np.ndarray:
    """A (h, w, dim) map, stride 4 in network pixels: radial bumps around random centres, so
    the descriptor changes smoothly and uniquely with position."""
    rng = np.random.default_rng(0)
    centres = rng.uniform([0, 0], [height * 4, width * 4], size=(dim, 2))
    rows, cols = np.meshgrid(np.arange(height) * 4.0, np.arange(width) * 4.0, indexing="ij")
    grid = np.stack([rows, cols], -1)[:, :, None, :]
    return np.exp(-((grid - centres) ** 2).sum(-1) / (2 * 12.0**2)).astype(np.float32)


@pytest.mark.parametrize("offset", [(0.7, -0.4), (1.6, 1.1), (-4.5, 2.5)])
def test_points_move_to_where_the_target_was_sampled(offset):
    descriptor_map = smooth_descriptor_map()
    truth = np.array([[60.3, 50.6], [101.2, 80.9], [140.8, 37.4]])  # x, y (network px)
    targets = sample_descriptors(descriptor_map, truth[:, ::-1].copy())
    start = truth + np.array(offset)
    refined = refine_towards(targets, start, descriptor_map)
    error = np.linalg.norm(refined - truth, axis=1)
    # The quadratic fit works on a bilinearly interpolated surface: within a quarter step.
    assert error.max() < SEARCH_STEP / 4, (error, np.linalg.norm(offset))
    # The similarity at the refined point is at least that of the start.
    at = sample_descriptors(descriptor_map, refined[:, ::-1].copy())
    before = sample_descriptors(descriptor_map, start[:, ::-1].copy())
    assert ((at * targets).sum(1) >= (before * targets).sum(1)).all()


def test_refine_pair_works_in_image_pixels():
    descriptor_map = smooth_descriptor_map()  # a 2x-enlarged 100x80 image: network 200x160
    truth = np.array([[30.25, 25.5], [50.0, 40.75]])  # x, y in the image's pixels
    on_network = (truth + 0.5) * 2 - 0.5
    targets = sample_descriptors(descriptor_map, on_network[:, ::-1].copy())
    refined = refine_pair(truth + [0.8, -0.6], targets, (descriptor_map, (200, 160)), (100, 80))
    np.testing.assert_allclose(refined, truth, atol=0.05)


def test_tracks_root_at_the_most_matched_keypoint():
    counts = {"a": 4, "b": 3, "c": 3}
    matches = [
        ("a", "b", np.array([[0, 1], [3, 2]])),
        ("b", "c", np.array([[1, 2]])),
        ("a", "c", np.array([[2, 0]])),
    ]
    roots = track_roots(counts, matches)
    # Track {a0, b1, c2}: b1 has two matches, so it is the root (node 4 + 1 = 5).
    # Tracks {a3, b2} and {a2, c0} tie: the first node (a3 = 3, a2 = 2) is the root.
    np.testing.assert_array_equal(roots["a"], [5, -1, -1, -1])
    np.testing.assert_array_equal(roots["b"], [-1, -1, 3])
    np.testing.assert_array_equal(roots["c"], [2, -1, 5])
    # The movers' targets are their roots' descriptors, each root image read once.
    descriptors = {
        n: np.arange(c * 2, dtype=np.float32).reshape(c, 2) + 100 * i
        for i, (n, c) in enumerate(counts.items())
    }
    reads = []
    targets = _root_descriptors(roots, counts, lambda n: reads.append(n) or descriptors[n])
    np.testing.assert_array_equal(targets["a"], descriptors["b"][[1]])
    np.testing.assert_array_equal(targets["b"], descriptors["a"][[3]])
    np.testing.assert_array_equal(targets["c"], [descriptors["a"][2], descriptors["b"][1]])
    assert sorted(reads) == ["a", "b"]


def test_evaluate_pair_scores_the_refined_points():
    rng = np.random.default_rng(1)
    kpts0 = rng.uniform(10, 90, size=(50, 2))
    desc = np.eye(50, dtype=np.float32)
    shift = np.array([20.0, 5.0])
    homography = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]], float)
    kpts1 = kpts0 + shift + rng.choice([-1, 1], size=(50, 2)) * 1.5  # ~2.1 px off
    args = (kpts0, desc, kpts1, desc, homography, (100, 100), (130, 110))
    plain = he.evaluate_pair(*args)
    assert plain.mma[0] == 0.0 and plain.mma[2] == 1.0

    def to_truth(points0, points1, targets0, targets1):  # noqa: ANN001, ANN202
        index = targets0.argmax(1)  # one-hot descriptors name the keypoint
        assert np.allclose(points0, kpts0[index]) and np.allclose(points1, kpts1[index])
        return points0, kpts0[index] + shift

    refined = he.evaluate_pair(*args, refine=to_truth)
    assert refined.mma[0] == 1.0 and refined.corner_error < 1e-6
    assert refined.repeatability == plain.repeatability  # detection metrics stay unrefined


def test_zoom_between_is_robust_to_wrong_matches():
    rng = np.random.default_rng(3)
    points0 = rng.uniform(0, 400, size=(300, 2))
    points1 = 1.7 * points0 + [30, -12]
    points1[:100] = rng.uniform(0, 600, size=(100, 2))  # a third wrong
    assert zoom_between(points0, points1) == pytest.approx(1.7, rel=0.05)
    assert zoom_between(points1[100:], points0[100:]) == pytest.approx(1 / 1.7, rel=0.01)
    assert zoom_between(points0[:1], points1[:1]) == 1.0


@pytest.mark.parametrize("zoom", [0.6, 1.6])
def test_two_view_refinement_moves_the_view_where_the_scene_is_smaller(zoom):
    descriptor_map = smooth_descriptor_map()  # both views' map; net size = image size x 2
    rng = np.random.default_rng(4)
    truth = rng.uniform(20, 70, size=(30, 2))  # x, y in the moving view's pixels
    net = (truth + 0.5) * 2 - 0.5
    targets = sample_descriptors(descriptor_map, net[:, ::-1].copy())
    detected = truth + rng.uniform(-1, 1, size=truth.shape)
    calls = []

    def dense(view: str):  # noqa: ANN202
        return lambda: calls.append(view) or (descriptor_map, (200, 160))

    if zoom > 1:  # view 1 larger: view 0 moves, towards view 1's descriptors
        p0, p1 = refine_two_view(
            detected, detected * zoom, None, targets, dense("0"), dense("1"), (100, 80), (100, 80)
        )
        np.testing.assert_allclose(p0, truth, atol=0.1)  # image px: 0.2 network px
        np.testing.assert_array_equal(p1, detected * zoom)
    else:  # view 1 smaller: view 1 moves
        p0, p1 = refine_two_view(
            detected / zoom, detected, targets, None, dense("0"), dense("1"), (100, 80), (100, 80)
        )
        np.testing.assert_allclose(p1, truth, atol=0.1)
        np.testing.assert_array_equal(p0, detected / zoom)
    assert calls == (["0"] if zoom > 1 else ["1"])


def test_refinement_needs_an_enlarged_single_scale_input():
    check_refinement(2.0)
    check_refinement(3.0)
    with pytest.raises(ValueError, match="needs --upscale 2"):
        check_refinement(1.0)
    with pytest.raises(ValueError, match="multi-scale"):
        check_refinement(2.0, multi_scale=True)
    with pytest.raises(ValueError, match="pool-scales"):
        check_refinement(2.0, pool_scales=(1.0,))
    result = CliRunner().invoke(cli, ["evaluate", ".", "--refine-matches", "--no-sift"])
    assert result.exit_code == 2 and "needs --upscale 2" in result.output


def test_descriptor_map_is_the_one_extract_samples():
    photo = np.random.default_rng(2).uniform(0, 255, (120, 160)).astype(np.float32)
    photo = cv2.GaussianBlur(photo, (0, 0), 2)
    extractor = Extractor(num_keypoints=200, backend="onnxruntime", upscale=2.0)
    feats = extractor.extract(photo)
    descriptor_map, size = extractor.descriptor_map(photo)
    assert size == (320, 240)
    on_network = (feats.keypoints.astype(np.float64) + 0.5) * 2 - 0.5
    sampled = sample_descriptors(descriptor_map, on_network[:, ::-1].copy())
    np.testing.assert_allclose(sampled, feats.descriptors, atol=1e-5)


def test_boat_mma1_rises_past_sift():
    from aslfeat_cli.hpatches import load_homography_pairs

    pairs = [p for p in load_homography_pairs(shared_data("pairs")) if p.sequence == "boat_1_2"]
    settings = {"num_keypoints": 2000, "backend": "onnxruntime", "upscale": 2.0}
    methods = [
        he.ours_method(name="plain", **settings),
        he.ours_method(name="refined", refine_matches=True, **settings),
        he.sift_method(2000),
    ]
    results = {r.method: r.metrics for r in he.evaluate(pairs, methods, progress=False)}
    before, after, sift = results["plain"], results["refined"], results["sift"]
    print(f"\nboat MMA@1: {before.mma[0]:.3f} -> {after.mma[0]:.3f} (SIFT {sift.mma[0]:.3f})")
    assert after.mma[0] >= before.mma[0] + 0.05
    assert after.mma[0] > sift.mma[0]
    assert after.mma[2] >= before.mma[2]
    assert after.n_matches == before.n_matches  # the same matches, moved


@pytest.mark.slow
def test_reconstruct_refines_the_verified_keypoints_in_the_database(tmp_path):
    pytest.importorskip("pycolmap")
    from aslfeat_cli import colmap_db, h5io
    from aslfeat_cli.match_refinement import MAX_RECENTRES, SEARCH_RADIUS, SEARCH_STEP
    from aslfeat_cli.reconstruct import run_reconstruction

    folder = shared_data("sfm", "fountain-P11", "images")
    images = [(p, p.name) for p in sorted(folder.glob("*.jpg"))[3:7]]
    extractor = Extractor(num_keypoints=2000, max_dim=480, upscale=2.0)
    out = tmp_path / "sfm"
    settings = {"single_camera": True, "progress": False, "num_threads": 2}
    stats = run_reconstruction(images, out, extractor, refine_matches=True, **settings)
    assert stats.registered == 4 and stats.refine_seconds > 0
    database = out / "database.db"
    verified = colmap_db.read_verified_matches(database)
    assert len(verified) >= 3
    features = {n: h5io.read_features(out / "features.h5", n) for _, n in images}
    # Pairs come back in the database's order: their stored descriptors agree.
    for a, b, pairs in verified:
        similarity = (
            features[a]["descriptors"][pairs[:, 0]] * features[b]["descriptors"][pairs[:, 1]]
        ).sum(1)
        assert np.median(similarity) > 0.7, (a, b)
    # How far a keypoint can move: the search's reach in network pixels, in the image's pixels
    # (the network sees the image fitted to 480 px and enlarged twice), along the diagonal.
    width = int(features[images[0][1]]["image_size"][0])
    reach = (SEARCH_RADIUS * (MAX_RECENTRES + 1) + SEARCH_STEP) * width / (2 * 480) * 2**0.5
    matched = {n: set() for n in features}
    for a, b, pairs in verified:
        matched[a].update(pairs[:, 0].tolist())
        matched[b].update(pairs[:, 1].tolist())
    moved_total = 0
    for name, feats in features.items():
        stored = colmap_db.read_colmap_keypoints(database, name)
        shift = np.linalg.norm(stored - feats["keypoints"], axis=1)
        unmatched = np.setdiff1d(np.arange(len(shift)), sorted(matched[name]))
        assert shift[unmatched].max() < 1e-4  # only matched keypoints move
        assert shift.max() <= reach + 1e-3
        moved_total += int((shift > 1e-4).sum())
    assert moved_total > 100
    # A rerun into the same folder rebuilds the database (it holds refined keypoints).
    again = run_reconstruction(images, out, extractor, refine_matches=True, **settings)
    assert again.registered == 4


def test_evaluate_cli_records_the_refined_method(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    photo = cv2.resize(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY), (200, 160))
    pair = tmp_path / "pairs" / "shifted"
    pair.mkdir(parents=True)
    homography = np.array([[1, 0, -6.0], [0, 1, -4.0], [0, 0, 1]])
    cv2.imwrite(str(pair / "A.png"), photo)
    cv2.imwrite(str(pair / "B.png"), cv2.warpAffine(photo, homography[:2], (200, 160)))
    np.savetxt(pair / "H_A_to_B.txt", homography)
    out = tmp_path / "eval"
    args = ["-q", "evaluate", str(tmp_path / "pairs"), "-o", str(out), "--no-sift"]
    args += ["--backend", "onnxruntime", "--upscale", "2", "--refine-matches"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["refine_matches"] is True
    assert record["settings"]["methods"] == ["aslfeat-u2-r"]
    assert "aslfeat-u2-r" in result.stdout


def test_reconstruct_cli_refuses_refinement_it_cannot_do(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.zeros((64, 64), np.uint8))
    runner = CliRunner()
    base = ["reconstruct", str(images), "-o", str(tmp_path / "sfm"), "--refine-matches"]
    result = runner.invoke(cli, base)
    assert result.exit_code == 2 and "needs --upscale 2" in result.output
    features = tmp_path / "f.h5"
    features.touch()
    result = runner.invoke(cli, [*base, "--upscale", "2", "--features", str(features)])
    assert result.exit_code == 2 and "drop --features" in result.output
    assert not (tmp_path / "sfm" / "database.db").exists()
