"""`aslfeat extract` end to end: image discovery, outputs, resume, bad input, safety.

The extraction tests run the real onnxruntime model (weights/aslfeat.onnx) on small
synthetic images from skimage.data, so they stay quick on two CPU cores.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

from aslfeat_cli.cli import cli
from aslfeat_cli.errors import UserError
from aslfeat_cli.extraction import find_images
from aslfeat_cli.images import scale_keypoints

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "weights" / "aslfeat.onnx"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _samples() -> dict[str, np.ndarray]:
    """Small, textured BGR/grey pictures (quick to run through the network)."""
    rgb = {
        "astronaut.jpg": skimage.data.astronaut()[::2, ::2],
        "coffee.png": skimage.data.coffee()[::2, ::2],
        "chelsea.jpg": skimage.data.chelsea()[::2, ::2],
    }
    out = {name: cv2.cvtColor(img, cv2.COLOR_RGB2BGR) for name, img in rgb.items()}
    out["camera.png"] = skimage.data.camera()[::2, ::2]
    return out


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    for name, image in _samples().items():
        _write(folder / name, image)
    return folder


def _exif_orientation_segment(orientation: int) -> bytes:
    """A minimal APP1 EXIF segment holding only the Orientation tag (as in test_images)."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _run(*args: str | Path) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _names(path: Path) -> list[str]:
    from aslfeat_cli.h5io import list_names

    return list_names(path)


# --------------------------------------------------------------------------- find_images


def test_find_images_folder_names_relative_with_slashes(tmp_path: Path) -> None:
    img = np.zeros((20, 20), np.uint8)
    for name in ["b.JPG", "a.png", "sub/c.Jpeg", "sub/deep/d.tiff"]:
        _write(tmp_path / "imgs" / name, img)
    (tmp_path / "imgs" / "readme.txt").write_text("not an image")
    found = find_images([tmp_path / "imgs"])
    assert [n for _, n in found] == ["a.png", "b.JPG", "sub/c.Jpeg", "sub/deep/d.tiff"]
    assert all(p.is_file() and p.as_posix().endswith(n) for p, n in found)


def test_find_images_several_inputs_share_the_deepest_common_folder(tmp_path: Path) -> None:
    img = np.zeros((20, 20), np.uint8)
    a = _write(tmp_path / "set" / "left" / "1.jpg", img)
    _write(tmp_path / "set" / "right" / "2.jpg", img)
    found = find_images([tmp_path / "set" / "right", a, a])  # duplicates kept once
    assert [n for _, n in found] == ["right/2.jpg", "left/1.jpg"]
    # Single files: their folder is the root, whatever their extension.
    odd = tmp_path / "set" / "left" / "photo.raw"
    odd.write_bytes(b"x")
    assert [n for _, n in find_images([odd])] == ["photo.raw"]


def test_find_images_image_root(tmp_path: Path) -> None:
    img = np.zeros((20, 20), np.uint8)
    _write(tmp_path / "root" / "seq" / "1.png", img)
    found = find_images([tmp_path / "root" / "seq"], image_root=tmp_path / "root")
    assert [n for _, n in found] == ["seq/1.png"]
    _write(tmp_path / "elsewhere" / "2.png", img)
    with pytest.raises(UserError, match="not inside the image root"):
        find_images([tmp_path / "elsewhere"], image_root=tmp_path / "root")


def test_find_images_image_list(tmp_path: Path) -> None:
    img = np.zeros((20, 20), np.uint8)
    _write(tmp_path / "root" / "a" / "1.png", img)
    _write(tmp_path / "root" / "2.png", img)
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\na/1.png\n\n  2.png  \n")
    found = find_images([], image_list=listing, image_root=tmp_path / "root")
    assert [n for _, n in found] == ["a/1.png", "2.png"]
    # Without --image-root, names are relative to the list's folder.
    local = tmp_path / "root" / "list.txt"
    local.write_text("2.png\na/1.png\n")
    assert [n for _, n in find_images([], image_list=local)] == ["2.png", "a/1.png"]
    listing.write_text("a/1.png\nmissing.png\n")
    with pytest.raises(UserError, match=r"1 image\(s\) in .*list.txt not found: .*missing.png"):
        find_images([], image_list=listing, image_root=tmp_path / "root")


def test_find_images_empty_folder_and_missing_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    with pytest.raises(UserError, match="no images found in"):
        find_images([tmp_path / "empty"])
    with pytest.raises(UserError, match="no such file or folder"):
        find_images([tmp_path / "nope"])


# --------------------------------------------------------------------------- extraction


def _features(path: Path, name: str) -> dict[str, np.ndarray]:
    from aslfeat_cli.h5io import read_features

    return read_features(path, name)


@needs_model
def test_extract_folder_to_hloc_h5(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    result = _run("extract", image_dir, "-o", out, "--num-keypoints", 300)
    assert result.exit_code == 0, result.output
    assert "4 image(s) extracted" in result.stderr and "images/s" in result.stderr
    assert result.stdout == ""  # status goes to stderr only
    assert _names(out) == sorted(_samples())
    with h5py.File(out, "r") as fh:
        assert fh.attrs["num_keypoints"] == 300
        assert fh.attrs["model"] == "aslfeat.onnx" and "variant" in fh.attrs
        assert float(fh.attrs["score_threshold"]) == 0.5 and int(fh.attrs["nms_size"]) == 3
        grp = fh["camera.png"]  # hloc's layout: descriptors D x N, float32 keypoints
        n = grp["keypoints"].shape[0]
        assert grp["keypoints"].dtype == np.float32 and grp["descriptors"].shape[1] == n
    for name, image in _samples().items():
        feats = _features(out, name)
        h, w = image.shape[:2]
        assert tuple(feats["image_size"]) == (w, h)
        kp = feats["keypoints"]
        assert 0 < len(kp) <= 300
        assert kp.min() >= -0.5 and (kp[:, 0] <= w - 0.5).all() and (kp[:, 1] <= h - 0.5).all()
        np.testing.assert_allclose(np.linalg.norm(feats["descriptors"], axis=1), 1, atol=1e-3)


@needs_model
def test_resume_skips_done_and_overwrite_redoes(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    first = sorted(image_dir.iterdir())[0]
    assert _run("extract", first, "-o", out, "--num-keypoints", 100).exit_code == 0
    assert _names(out) == [first.name]
    before = _features(out, first.name)["keypoints"]
    result = _run("extract", image_dir, "-o", out, "--num-keypoints", 100)
    assert result.exit_code == 0
    assert "3 image(s) extracted, 1 already done" in result.stderr
    assert _names(out) == sorted(_samples())
    np.testing.assert_array_equal(_features(out, first.name)["keypoints"], before)
    # Settings changed without --overwrite: refused (test_settings.py has the details).
    result = _run("extract", image_dir, "-o", out, "--num-keypoints", 50)
    assert result.exit_code == 1 and "num_keypoints=100 (now 50)" in result.stderr
    result = _run("extract", image_dir, "-o", out, "--num-keypoints", 50, "--overwrite")
    assert result.exit_code == 0 and "4 image(s) extracted" in result.stderr
    assert len(_features(out, first.name)["keypoints"]) <= 50


@needs_model
def test_bad_images_are_listed_and_exit_non_zero(image_dir: Path, tmp_path: Path) -> None:
    good = cv2.imencode(".jpg", _samples()["astronaut.jpg"])[1].tobytes()
    (image_dir / "empty.jpg").write_bytes(b"")
    (image_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    (image_dir / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (image_dir / "text.JPG").write_text("I am not a picture")
    _write(image_dir / "tiny.png", np.full((8, 40), 200, np.uint8))
    (image_dir / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "feats.h5"
    result = _run("extract", image_dir, "-o", out, "--num-keypoints", 50)
    assert result.exit_code == 1
    err = result.stderr
    assert "4 image(s) extracted, 5 FAILED" in err
    assert "failed: empty.jpg: empty file (0 bytes)" in err
    assert "failed: corrupt.png: not a readable image" in err
    assert "failed: truncated.jpg: truncated JPEG" in err
    assert "failed: text.JPG: not a readable image" in err
    assert "failed: tiny.png: image too small (40x8)" in err
    assert "Error: 5 of 9 image(s) failed" in err and "notes.txt" not in err
    assert _names(out) == sorted(_samples())  # the good ones are all there


@needs_model
def test_png_variants_and_exif_rotated_jpeg(tmp_path: Path) -> None:
    rgb = skimage.data.coffee()[::2, ::2]  # 200 x 300
    folder = tmp_path / "images"
    deep = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257).astype(np.uint16)
    _write(folder / "deep16.png", deep)
    _write(folder / "rgba.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    _write(folder / "grey.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    (folder / "rotated.jpg").write_bytes(jpeg[:2] + _exif_orientation_segment(6) + jpeg[2:])
    out = tmp_path / "f.h5"
    result = _run("extract", folder, "-o", out, "--num-keypoints", 200)
    assert result.exit_code == 0, result.stderr
    feats = {n: _features(out, n) for n in _names(out)}
    assert sorted(feats) == ["deep16.png", "grey.png", "rgba.png", "rotated.jpg"]
    for name, f in feats.items():
        # The EXIF tag asks for a 90° turn; raw pixels (300 wide) are used, like hloc/COLMAP.
        assert tuple(f["image_size"]) == (300, 200), name
        assert len(f["keypoints"]) > 0 and (f["keypoints"][:, 0] > 199.5).any()
    # 16-bit scaled to 0..255 is the same picture as the 8-bit one: the same keypoints.
    np.testing.assert_allclose(feats["deep16.png"]["keypoints"], feats["grey.png"]["keypoints"])


@needs_model
def test_max_dim_keypoints_in_original_pixels(tmp_path: Path) -> None:
    from aslfeat_cli.extractor import Extractor

    big = cv2.resize(skimage.data.camera(), (640, 480), interpolation=cv2.INTER_CUBIC)
    path = _write(tmp_path / "big.png", big)
    out = tmp_path / "f.h5"
    # One stream, as the Extractor below (bfloat16 differs by ~0.03 px between stream layouts).
    result = _run(
        "extract", path, "-o", out, "--max-dim", 320, "--num-keypoints", 200, "--streams", 1
    )
    assert result.exit_code == 0, result.stderr
    feats = _features(out, "big.png")
    assert tuple(feats["image_size"]) == (640, 480)
    small = cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA)
    direct = Extractor(MODEL, num_keypoints=200).extract(small)
    expected = scale_keypoints(direct.keypoints, (320, 240), (640, 480))
    np.testing.assert_allclose(feats["keypoints"], expected, atol=1e-3)
    assert feats["keypoints"][:, 0].max() > 320  # not left in the small image's pixels


@needs_model
def test_huge_image_downscaled_with_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 2.4 MP: over the automatic pixel limit (2 MP), downscaled to 2191 x 913.
    wide = cv2.resize(skimage.data.camera()[200:300], (2400, 1000))
    path = _write(tmp_path / "wide.png", wide)
    out = tmp_path / "f.h5"
    result = _run("extract", path, "-o", out, "--num-keypoints", 200)
    assert result.exit_code == 0, result.stderr
    assert "images above 2.0 MP are downscaled to 2.0 MP" in caplog.text
    caplog.clear()
    auto = _features(out, "wide.png")
    assert tuple(auto["image_size"]) == (2400, 1000)
    same = tmp_path / "g.h5"
    result = _run("extract", path, "-o", same, "--num-keypoints", 200, "--max-dim", 2191)
    assert "are downscaled to" not in caplog.text  # asked for: no notice
    np.testing.assert_array_equal(auto["keypoints"], _features(same, "wide.png")["keypoints"])


@needs_model
def test_descriptor_dtype_float16(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    args = ("--num-keypoints", 50, "--descriptor-dtype", "float16")
    assert _run("extract", image_dir / "camera.png", "-o", out, *args).exit_code == 0
    with h5py.File(out, "r") as fh:
        assert fh["camera.png/descriptors"].dtype == np.float16
        assert fh.attrs["descriptor_dtype"] == "float16"


@needs_model
def test_image_list_names_relative_to_root(image_dir: Path, tmp_path: Path) -> None:
    _write(image_dir / "sub" / "cam.png", _samples()["camera.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("sub/cam.png\ncoffee.png\n")
    out = tmp_path / "f.h5"
    args = ("--image-list", listing, "--image-root", image_dir, "--num-keypoints", 30)
    result = _run("extract", "-o", out, *args)
    assert result.exit_code == 0, result.stderr
    assert _names(out) == ["coffee.png", "sub/cam.png"]  # nested groups, hloc style


# --------------------------------------------------------------------------- bad setup


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run("extract", tmp_path / "empty", "-o", tmp_path / "f.h5")
    assert result.exit_code == 1 and "Error: no images found in" in result.stderr
    assert not (tmp_path / "f.h5").exists()


def test_missing_model_file(image_dir: Path, tmp_path: Path) -> None:
    result = _run("extract", image_dir, "-o", tmp_path / "f.h5", "--model", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_model_file_that_is_not_onnx(image_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("definitely not a protobuf")
    result = _run("extract", image_dir, "-o", tmp_path / "f.h5", "--model", fake)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "model.onnx" in lines[0]
    assert not (tmp_path / "f.h5").exists()


@needs_model
def test_output_folders(image_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a folder should be")
    result = _run("extract", image_dir, "-o", blocker / "sub" / "f.h5")
    assert result.exit_code == 1
    assert "Error: cannot create output folder" in result.stderr
    # A missing folder is created.
    out = tmp_path / "new" / "deeper" / "f.h5"
    result = _run("extract", image_dir / "camera.png", "-o", out, "--num-keypoints", 20)
    assert result.exit_code == 0 and _names(out) == ["camera.png"]


@needs_model
def test_output_that_is_not_hdf5_is_left_alone(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "notes.h5"
    out.write_text("my precious notes")
    for extra in ([], ["--overwrite"]):
        result = _run("extract", image_dir, "-o", out, *extra)
        assert result.exit_code == 1 and "is not an HDF5 file" in result.stderr
        assert out.read_text() == "my precious notes"


def test_option_checks(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    for args, hint in [
        (["--single-camera"], "--single-camera"),
        (["--nms-size", "4"], "--nms-size"),
        (["--num-keypoints", "-3"], "--num-keypoints"),
        (["--device", "tpu"], "--device"),
    ]:
        result = _run("extract", image_dir, "-o", out, *args)
        assert result.exit_code == 2 and hint in result.stderr, args
    result = _run("extract", "-o", out)
    assert result.exit_code == 2 and "--image-list" in result.stderr


# --------------------------------------------------------------------------- COLMAP


@needs_model
def test_colmap_database_matches_h5(image_dir: Path, tmp_path: Path) -> None:
    import pycolmap

    from aslfeat_cli.colmap_db import read_colmap_descriptors

    h5 = tmp_path / "f.h5"
    db = tmp_path / "database.db"
    assert _run("extract", image_dir, "-o", h5, "--num-keypoints", 150).exit_code == 0
    result = _run("extract", image_dir, "-o", db, "--num-keypoints", 150)
    assert result.exit_code == 0, result.stderr
    database = pycolmap.Database.open(db)
    try:
        images = {image.name: image for image in database.read_all_images()}
        assert sorted(images) == sorted(_samples())
        assert database.num_cameras() == 4
        for name, image in images.items():
            ours = _features(h5, name)
            kp = np.asarray(database.read_keypoints(image.image_id))[:, :2]
            np.testing.assert_allclose(kp - 0.5, ours["keypoints"], atol=1e-4)  # COLMAP's +0.5
            camera = database.read_camera(image.camera_id)
            assert (camera.width, camera.height) == tuple(ours["image_size"])
    finally:
        database.close()
    desc = read_colmap_descriptors(db, "camera.png")
    np.testing.assert_allclose(desc, _features(h5, "camera.png")["descriptors"])
    # Resume: nothing to add the second time.
    result = _run("extract", image_dir, "-o", db, "--num-keypoints", 150)
    assert result.exit_code == 0 and "4 already done" in result.stderr
    # --overwrite starts a new database (COLMAP images cannot be replaced in place).
    result = _run("extract", image_dir / "camera.png", "-o", db, "--overwrite")
    assert result.exit_code == 0 and "1 image(s) extracted" in result.stderr
    database = pycolmap.Database.open(db)
    try:
        assert [image.name for image in database.read_all_images()] == ["camera.png"]
    finally:
        database.close()


@needs_model
def test_colmap_single_camera(tmp_path: Path) -> None:
    import pycolmap

    folder = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        _write(folder / name, np.roll(skimage.data.camera()[::4, ::4], 10 * i, axis=1))
    db = tmp_path / "database.db"
    result = _run("extract", folder, "-o", db, "--single-camera", "--num-keypoints", 50)
    assert result.exit_code == 0, result.stderr
    database = pycolmap.Database.open(db)
    try:
        assert database.num_cameras() == 1 and database.num_images() == 3
    finally:
        database.close()


# --------------------------------------------------------------------------- safety


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("HDF5_USE_FILE_LOCKING", None)
    return env


@needs_model
def test_kill_minus_nine_then_resume(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    base = skimage.data.astronaut()[::2, ::2]
    for i in range(24):
        _write(folder / f"{i:02d}.jpg", np.roll(base, 7 * i, axis=1))
    out = tmp_path / "f.h5"
    cmd = [sys.executable, "-m", "aslfeat_cli", "-q", "extract", str(folder), "-o", str(out)]
    cmd += ["--workers", "1"]
    proc = subprocess.Popen(cmd, env=_subprocess_env(), stderr=subprocess.PIPE)
    done: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:  # the writer holds the file: read without HDF5's lock, retry on a torn read
            with h5py.File(out, "r", locking=False) as fh:
                done = [k for k in fh if "image_size" in fh[k]]
        except (OSError, KeyError, RuntimeError):
            continue
        if len(done) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    names = _names(out)  # still a readable HDF5 file
    assert 2 <= len(names) < 24
    for name in names:
        _features(out, name)
    result = _run("extract", folder, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"{24 - len(names)} image(s) extracted, {len(names)} already done" in result.stderr
    assert _names(out) == [f"{i:02d}.jpg" for i in range(24)]


_NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    from aslfeat_cli.cli import cli
    try:
        cli(sys.argv[1:], prog_name="aslfeat")
    finally:
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    """
)


@needs_model
def test_extract_without_torch(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.h5"
    for args in (["extract", str(image_dir), "-o", str(out), "--num-keypoints", "50"], ["info"]):
        proc = subprocess.run(
            [sys.executable, "-c", _NO_TORCH, *args],
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    assert _names(out) == sorted(_samples())


# --------------------------------------------------------------------------- info / version


def test_version() -> None:
    from aslfeat_cli import __version__

    result = _run("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


@needs_model
def test_info_prints_device_providers_and_metadata() -> None:
    import onnxruntime as ort

    from aslfeat_cli.extractor import Extractor

    result = _run("info", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"onnxruntime: {ort.__version__}" in out
    assert "CPUExecutionProvider" in out and "device: CPU" in out
    assert str(MODEL.resolve()) in out
    for key, value in Extractor(MODEL, device="cpu").model_metadata.items():
        assert f"  {key}: {value}" in out


def test_prefetch_leaves_the_last_images_to_finish() -> None:
    # The inference threads take an image's decode after the prefetch loop has moved on: the
    # loop running out of images must not cancel decodes still in flight (it did:
    # "CancelledError" for the last image of a folder, with --streams 2).
    import threading

    from aslfeat_cli.extraction import _prefetch

    release = threading.Event()

    def job(path: Path) -> str:
        release.wait(5)
        return path.name

    items = [(Path(f"{i}.jpg"), f"{i}.jpg") for i in range(3)]
    futures = []
    generator = _prefetch(items, job, workers=1)
    for _, _, future in generator:
        futures.append(future)
        if len(futures) == 3:
            release.set()  # the last ones finish only once the loop has seen them all
    assert [f.result(timeout=5) for f in futures] == ["0.jpg", "1.jpg", "2.jpg"]


@needs_model
def test_colmap_given_camera(tmp_path: Path) -> None:
    from aslfeat_cli.colmap_db import read_cameras

    folder = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.png"]):
        _write(folder / name, np.roll(skimage.data.camera()[::4, ::4], 10 * i, axis=1))
    db = tmp_path / "database.db"
    base = ["extract", folder, "-o", db, "--single-camera", "--num-keypoints", 50]
    base += ["--camera-model", "OPENCV", "--camera-params"]
    result = _run(*base, "150,151,64.5,63.5,0.01,0,0,0")
    assert result.exit_code == 0, result.stderr
    (camera,) = read_cameras(db)
    assert camera.model.name == "OPENCV"
    np.testing.assert_array_equal(camera.params, [150, 151, 64.5, 63.5, 0.01, 0, 0, 0])
    result = _run(*base, "150,151,64,64,0,0,0,0")  # other cameras than the database's
    assert result.exit_code == 1 and "holds a OPENCV camera" in result.stderr
    h5 = ["extract", folder, "-o", tmp_path / "f.h5", "--camera-model", "PINHOLE"]
    result = _run(*h5)
    assert result.exit_code == 2 and "only applies to --format colmap" in result.stderr
