"""``--pool-scales``: descriptors pooled over the network's passes at several input scales.

Known answers: pooling is exactly "the detection pass's unit descriptor plus the other
passes' samples at the same points, L2-normalised", keypoints and scores untouched; the
scales are checked against ``--upscale`` and ``--multi-scale``; the CLI records the setting
and refuses a resume with another. Behaviour: on a real pair more matches land within 1 px.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aslfeat_cli import images
from aslfeat_cli.extractor import Extractor, to_gray
from aslfeat_cli.keypoints import sample_descriptors
from aslfeat_cli.scale_pooling import check_pool_scales, format_pool_scales, parse_pool_scales

from .conftest import extract_option_runs, shared_data


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return cv2.resize(to_gray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)), (320, 240))


def test_pooled_descriptors_are_the_normalised_sum_of_each_pass(photo):
    settings = {"num_keypoints": 800, "backend": "onnxruntime", "upscale": 2.0}
    plain = Extractor(**settings).extract(photo)
    pooled = Extractor(**settings, pool_scales=(1.0, 0.5)).extract(photo)
    np.testing.assert_array_equal(pooled.keypoints, plain.keypoints)
    np.testing.assert_array_equal(pooled.scores, plain.scores)

    network = Extractor(backend="onnxruntime")
    total = plain.descriptors.astype(np.float64)
    for size in ((320, 240), (160, 120)):
        _, descriptor_map = network.dense(images.resize_image(photo, size))
        at = images.scale_keypoints(plain.keypoints, (320, 240), size)[:, ::-1]
        total += sample_descriptors(descriptor_map, np.ascontiguousarray(at))
    expected = total / np.linalg.norm(total, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled.descriptors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pooled.descriptors, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(pooled.descriptors, plain.descriptors, atol=0.05)


def test_scales_are_checked_against_upscale_and_multi_scale():
    assert check_pool_scales([1, 0.5], 2.0) == (1.0, 0.5)
    assert check_pool_scales([0.5], 1.0) == (0.5,)
    with pytest.raises(ValueError, match=r"between 0.25 and 1 .*got 2"):
        check_pool_scales([2.0], 1.0)  # larger than the network input the memory check counts
    with pytest.raises(ValueError, match="between 0.25 and 2 .*got 0.2"):
        check_pool_scales([0.2], 2.0)
    with pytest.raises(ValueError, match="detection pass"):
        check_pool_scales([2.0], 2.0)
    with pytest.raises(ValueError, match="repeat"):
        check_pool_scales([0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match="do not combine"):
        Extractor(pool_scales=(0.5,), multi_scale=True)
    assert parse_pool_scales("none") == parse_pool_scales(" ") == ()
    assert parse_pool_scales("1,0.5") == (1.0, 0.5)
    with pytest.raises(ValueError, match="comma-separated numbers"):
        parse_pool_scales("1;0.5")
    assert format_pool_scales(()) == "none" and format_pool_scales((1.0, 0.5)) == "1,0.5"


def test_pooling_matches_held_out_zoomed_pairs_more_precisely():
    """10 synthetic pairs (zoom 0.6-1.6, rotation, perspective, photometric changes) of the
    held-out photos: pooling the descriptors of the image as given and at half size with
    --upscale 2's lifts MMA@1 and MMA@3 (fewer matches to the wrong neighbour)."""
    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.synthetic import make_pair, split_photos

    _, held_out = split_photos(shared_data("train"))
    rng = np.random.default_rng(7)
    pairs = []
    for index, path in enumerate(held_out[:10]):
        a, b, h = make_pair(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), rng, (480, 360))
        pairs.append(he.ArrayPair(f"syn{index}", a, b, h))
    settings = {"num_keypoints": 2000, "backend": "onnxruntime", "upscale": 2.0}
    methods = [
        he.extractor_method("u2", Extractor(**settings)),
        he.extractor_method("pooled", Extractor(**settings, pool_scales=(1.0, 0.5))),
    ]
    results = he.evaluate(pairs, methods, progress=False)
    mean = {
        name: np.mean([r.metrics.mma for r in results if r.method == name], axis=0)
        for name in ("u2", "pooled")
    }
    # Measured (onnxruntime, 2026-12-06): MMA@1 0.509 -> 0.530, MMA@3 0.839 -> 0.887.
    assert mean["pooled"][0] > mean["u2"][0] + 0.01
    assert mean["pooled"][2] > mean["u2"][2] + 0.025


def test_cli_refuses_bad_scales_and_records_the_setting(tmp_path: Path, photo):
    import h5py

    bad, again, out = extract_option_runs(tmp_path, photo, "--pool-scales", "2", "0.5", "0.5,0.25")
    assert bad.exit_code == 2 and "--pool-scales" in bad.output and "got 2" in bad.output
    with h5py.File(out) as fh:
        assert fh.attrs["pool_scales"] == "0.5"
        assert np.allclose(np.linalg.norm(fh["a.png"]["descriptors"][:], axis=0), 1.0, atol=1e-3)
    assert again.exit_code != 0 and "pool_scales=0.5 (now 0.5,0.25)" in again.output
