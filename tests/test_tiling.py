"""Large images run in tiles: the plan covers the image on the network's grid, the graph pass
that takes the standardisation out is exact, tiles give the whole image's keypoints, and an
uncapped 4.3 MP photo stays under 0.6 GB per megapixel (4.8 GB before tiles)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from aslfeat_cli.standardization import EPS, remove_from_graph, standardize
from aslfeat_cli.tiling import TILE_MARGIN, TILE_PIXELS, plan_tiles

from .conftest import ROOT

MODEL = ROOT / "weights" / "aslfeat.onnx"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")


def _photo(width: int, height: int) -> np.ndarray:
    """scikit-image's astronaut in grey, resized to ``width`` x ``height``."""
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize(
    "height,width,tile_pixels",
    [
        (1225, 1633, TILE_PIXELS),
        (3000, 4000, TILE_PIXELS),
        (1023, 1537, 600_000),
        (1801, 2399, 700_000),
        (20, 100_000, TILE_PIXELS),
        (6325, 6325, TILE_PIXELS),
    ],
)
def test_plan_covers_the_image_on_the_network_grid(height: int, width: int, tile_pixels: int):
    tiles = plan_tiles(height, width, tile_pixels)
    assert len(tiles) > 1
    covered = np.zeros((height, width), np.int32)
    for rows, cols in tiles:
        covered[rows.core_start : rows.core_stop, cols.core_start : cols.core_stop] += 1
        for span, length in ((rows, height), (cols, width)):
            assert span.start % 4 == 0 and span.core_start % 4 == 0
            assert (span.stop - span.start) % 4 == length % 4  # SAME padding as the whole
            assert span.core_stop % 4 == 0 or span.core_stop == length
            # a full margin of context wherever the core does not touch the border
            assert span.start == 0 or span.core_start - span.start >= TILE_MARGIN
            assert span.stop == length or span.stop - span.core_stop >= TILE_MARGIN
        assert (rows.stop - rows.start) * (cols.stop - cols.start) <= tile_pixels
    assert (covered == 1).all()


def test_small_images_are_one_tile_and_impossible_plans_refused() -> None:
    assert len(plan_tiles(1024, 1536)) == 1  # the SfM tests' photos run whole
    with pytest.raises(ValueError, match="raise the tile size"):
        plan_tiles(2000, 2000, tile_pixels=100_000)


@needs_model
def test_graph_pass_is_exact() -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    proto = onnx.load(str(MODEL))
    eps = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "val_8"]
    assert eps and float(eps[0]) == EPS  # the epsilon the numpy side uses is the graph's
    assert remove_from_graph(proto)
    assert not remove_from_graph(proto)  # nothing left to remove
    assert "image" in [n.input[0] for n in proto.graph.node if n.op_type == "Conv"]
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    passed = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for image in (_photo(640, 480).astype(np.float32), np.full((64, 96), 255, np.float32)):
        want = original.run(None, {"image": image[None, None]})
        got = passed.run(None, {"image": standardize(image)[None, None]})
        for a, b in zip(want, got, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=0, atol=2e-4 * max(1.0, np.abs(a).max()))


@needs_model
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_tiles_give_the_whole_image_keypoints(backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    from scipy.spatial import cKDTree

    from aslfeat_cli import Extractor

    image = _photo(1536, 1024)
    whole = Extractor(backend=backend, precision="fp32", tile_pixels=None)
    tiled = Extractor(backend=backend, precision="fp32", tile_pixels=600_000)
    assert tiled.session.standardized_input
    a, b = whole.extract(image), tiled.extract(image)
    assert abs(len(a) - len(b)) <= 0.005 * len(a)
    distance, index = cKDTree(b.keypoints).query(a.keypoints)
    near = distance < 0.5
    assert near.mean() >= 0.995, near.mean()
    cosine = np.sum(a.descriptors[near] * b.descriptors[index[near]], axis=1)
    assert np.median(cosine) > 0.9999 and np.quantile(cosine, 0.01) > 0.99


def _peak_of_extract(tmp_path: Path, image: Path, *args: str) -> int:
    """Peak resident bytes of one `aslfeat extract` process (VmHWM, not ru_maxrss: Linux
    carries the parent's (pytest's) peak into ru_maxrss at exec)."""
    code = (
        "import sys\n"
        "from aslfeat_cli.cli import main\n"
        "sys.argv = ['aslfeat'] + sys.argv[1:]\n"
        "try:\n    main()\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    print('maxrss', hwm.split()[1], file=sys.stderr)\n"
    )
    out = tmp_path / "f.h5"
    done = subprocess.run(
        [sys.executable, "-c", code, "extract", str(image), "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("maxrss")[-1].split()[0]) * 1024


@needs_model
def test_uncapped_large_photo_stays_under_0_6_gb_per_megapixel(tmp_path: Path) -> None:
    width, height = 2400, 1800
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), _photo(width, height))
    peak = _peak_of_extract(tmp_path, path, "--max-dim", "100000")
    bound = 0.6e9 * width * height / 1e6
    assert peak <= bound, f"peak {peak / 1e9:.2f} GB > {bound / 1e9:.2f} GB"


@needs_model
def test_default_settings_stay_under_2_gb_on_a_12_mp_photo(tmp_path: Path) -> None:
    path = tmp_path / "phone.png"
    cv2.imwrite(str(path), _photo(4000, 3000))
    peak = _peak_of_extract(tmp_path, path)
    assert peak <= 2e9, f"peak {peak / 1e9:.2f} GB"  # 2.52 GB before tiles (old code, this photo)
