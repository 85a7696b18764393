"""``--upscale F``: the network runs on the image enlarged by F, keypoints come back in the
image's pixels.

Known answers: upscaling is exactly "enlarge, extract, map the keypoints back with the
pixel-centre convention"; the memory check sees the enlarged input; the CLI refuses factors
outside 1-4 and records the setting. Behaviour: on a real pair the keypoints are more precise
at 1 px (the network's 3x3 windows and 2-/4-pixel lattices are finer in original pixels).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aslfeat_cli import images
from aslfeat_cli.extractor import Extractor, to_gray

from .conftest import boat_metrics, extract_option_runs


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return cv2.resize(to_gray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)), (320, 240))


def test_upscale_image_sizes_and_range():
    image = np.zeros((240, 321), np.float32)
    assert images.upscale_image(image, 1.0) is image
    assert images.upscale_image(image, 2.0).shape == (480, 642)
    assert images.upscale_image(image, 1.5).shape == (360, 482)  # 481.5 rounds to even
    for bad in (0.5, 4.5):
        with pytest.raises(ValueError, match="upscale must be between 1 and 4"):
            images.upscale_image(image, bad)
    with pytest.raises(ValueError, match="upscale must be between 1 and 4"):
        Extractor(upscale=0.9)


def test_upscale_is_extraction_of_the_enlarged_image_mapped_back(photo):
    plain = Extractor(num_keypoints=1000, backend="onnxruntime")
    enlarged = Extractor(num_keypoints=1000, backend="onnxruntime", upscale=2)
    features = enlarged.extract(photo)
    big = cv2.resize(photo, (640, 480), interpolation=cv2.INTER_LINEAR)
    reference = plain.extract(big)
    expected = images.scale_keypoints(reference.keypoints, (640, 480), (320, 240))
    np.testing.assert_array_equal(features.keypoints, expected)
    np.testing.assert_array_equal(features.descriptors, reference.descriptors)
    assert features.image_size == (320, 240)
    # Pixel-centre convention: x' = (x + 0.5) / 2 - 0.5, so the 640-px image's corner pixels
    # (0 and 639) land at -0.25 and 319.25, inside the 320-px image's extent.
    assert features.keypoints.min() >= -0.25 and features.keypoints[:, 0].max() <= 319.25


def test_memory_check_sees_the_enlarged_input(tmp_path: Path, monkeypatch, photo):
    from aslfeat_cli.extraction import _load

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), photo.astype(np.uint8))
    one = images.memory_estimate((320, 240), None)
    two = images.memory_estimate((640, 480), None)
    monkeypatch.setattr(images, "available_memory", lambda: (one + two) // 2)
    assert _load(path, None, tile_pixels=None, upscale=1.0).image.shape == (240, 320)
    with pytest.raises(images.ImageError, match="640x480 needs about"):
        _load(path, None, tile_pixels=None, upscale=2.0)


def test_upscale_matches_a_real_pair_more_precisely():
    settings = {"num_keypoints": 2000, "backend": "onnxruntime"}
    results = boat_metrics({f"u{f:g}": Extractor(**settings, upscale=f) for f in (1.0, 2.0)})
    # MMA@1 at 2,000 keypoints, shipped weights: 0.558 -> 0.618 (onnxruntime), 0.563 -> 0.616
    # (OpenVINO bf16); MMA@3 0.905 -> 0.905.
    assert results["u2"].mma[0] > results["u1"].mma[0] + 0.03
    assert results["u2"].mma[2] >= results["u1"].mma[2] - 0.01


def test_cli_refuses_other_factors_and_records_the_setting(tmp_path: Path, photo):
    import h5py

    bad, again, out = extract_option_runs(tmp_path, photo, "--upscale", "0.5", "2", "1.5")
    assert bad.exit_code == 2 and "1.0<=x<=4.0" in bad.output
    with h5py.File(out) as fh:
        assert float(fh.attrs["upscale"]) == 2.0
        assert fh["a.png"]["keypoints"][:].max() < 320
        # hloc's keypoint noise is 1 px of the network's input: half a pixel of the image.
        assert fh["a.png"]["keypoints"].attrs["uncertainty"] == 0.5
    # Resuming with another setting is refused (the file's keypoints were made otherwise).
    assert again.exit_code != 0 and "upscale=2.0 (now 1.5)" in again.output
