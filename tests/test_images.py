"""Image decoding conventions and bad-input handling of aslfeat_cli.images (real files)."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from aslfeat_cli.images import (
    MIN_SIDE,
    ImageError,
    downscale_to_fit,
    fit_size,
    read_image,
    scale_keypoints,
    walk_images,
)


def _jpeg_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _exif_orientation_segment(orientation: int) -> bytes:
    """A minimal APP1 EXIF segment holding only the Orientation tag (0x0112)."""
    tiff = b"II*\x00" + struct.pack("<I", 8)  # little-endian header, IFD0 at offset 8
    tiff += struct.pack("<H", 1)  # one entry
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, count 1, padded
    tiff += struct.pack("<I", 0)  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def test_walk_images_recursive_case_insensitive_and_skips_non_images(tmp_path: Path) -> None:
    image = _jpeg_bytes(skimage.data.camera()[:64, :64])
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ["b.JPG", "a.jpeg", "sub/c.Png", "sub/deeper/d.tif"]:
        (tmp_path / name).write_bytes(image)
    for name in ["notes.txt", "sub/features.h5", "sub/.DS_Store", "noext"]:
        (tmp_path / name).write_bytes(b"not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in walk_images(tmp_path)]
    assert found == ["a.jpeg", "b.JPG", "sub/c.Png", "sub/deeper/d.tif"]


def test_walk_images_empty_folder(tmp_path: Path) -> None:
    assert list(walk_images(tmp_path)) == []


def test_eight_bit_grey_png_is_read_unchanged(tmp_path: Path) -> None:
    grey = skimage.data.camera()
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, grey)


def test_colour_jpeg_becomes_grey(tmp_path: Path) -> None:
    bgr = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    (tmp_path / "c.jpg").write_bytes(_jpeg_bytes(bgr))
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == bgr.shape[:2] and out.dtype == np.uint8
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(out.astype(np.float32) - expected).mean() < 3.0  # JPEG loss only


def test_sixteen_bit_png_keeps_precision_scaled_to_255(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), ramp)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.float32 and out.shape == (48, 64)
    np.testing.assert_allclose(out, ramp.astype(np.float32) * 255.0 / 65535.0, atol=1e-3)
    assert out.min() == 0.0 and out.max() == pytest.approx(255.0)
    # Sub-8-bit steps survive (an 8-bit decode would have collapsed them).
    assert len(np.unique(out)) > 256


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgb = skimage.data.coffee()[:100, :120]
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = np.random.default_rng(0).integers(0, 256, bgra.shape[:2], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    cv2.imwrite(str(tmp_path / "rgb.png"), bgra[..., :3])
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == rgb.shape[:2]
    # Same as the picture without alpha; libpng's grey conversion rounds within 1 of OpenCV's.
    np.testing.assert_array_equal(out, read_image(tmp_path / "rgb.png"))
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    """Raw pixels, as hloc and COLMAP use: a 'rotate 90°' EXIF tag must not turn the image."""
    grey = skimage.data.camera()[:200, :300]  # landscape, 300 x 200
    jpeg = _jpeg_bytes(grey)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg[:2] + _exif_orientation_segment(6) + jpeg[2:])
    # The tag is real: OpenCV's default decode honours it and returns a portrait image.
    assert cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape == (300, 200)
    out = read_image(path)
    assert out.shape == (200, 300)
    assert np.abs(out.astype(np.float32) - grey).mean() < 3.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is a text file, not a picture\n" * 20, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a readable image"),
    ],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _jpeg_bytes(skimage.data.astronaut())
    for cut in (len(data) // 2, len(data) - 2):  # half the scan; only the end marker missing
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        with pytest.raises(ImageError, match="truncated"):
            read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".png", skimage.data.camera())
    data = buf.tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "cut.png")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_tiny_images_rejected_and_minimum_accepted(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((MIN_SIDE - 1, 40), 128, np.uint8))
    with pytest.raises(ImageError, match=rf"too small \(40x{MIN_SIDE - 1}\)"):
        read_image(tmp_path / "tiny.png")
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((MIN_SIDE, MIN_SIDE), 128, np.uint8))
    assert read_image(tmp_path / "ok.png").shape == (MIN_SIDE, MIN_SIDE)


def test_non_ascii_file_name(tmp_path: Path) -> None:
    path = tmp_path / "säcré cœur.png"
    ok, buf = cv2.imencode(".png", skimage.data.camera()[:32, :32])
    path.write_bytes(buf.tobytes())
    assert read_image(path).shape == (32, 32)


def test_fit_size_and_downscale() -> None:
    assert fit_size(640, 480, 1024) == (640, 480)
    assert fit_size(2048, 1536, 1024) == (1024, 768)
    assert fit_size(1000, 3000, 1500) == (500, 1500)
    image = np.zeros((1536, 2048), np.uint8)
    assert downscale_to_fit(image, 1024).shape == (768, 1024)
    assert downscale_to_fit(image, None) is image
    assert downscale_to_fit(image, 4096) is image  # never upscaled


def test_scale_keypoints_uses_pixel_centres() -> None:
    # A bright 2x2 block at pixels 10..11 becomes pixel 5 after halving; mapped back, that
    # pixel's centre must land on the block's centre (10.5), not on 10.
    image = np.zeros((64, 64), np.uint8)
    image[20:22, 10:12] = 255
    small = downscale_to_fit(image, 32)
    y, x = np.unravel_index(np.argmax(small), small.shape)
    assert (x, y) == (5, 10)
    back = scale_keypoints(np.array([[x, y]], np.float32), (32, 32), (64, 64))
    np.testing.assert_allclose(back, [[10.5, 20.5]])
    # Round trip is exact and the image corners stay corners.
    pts = np.array([[-0.5, -0.5], [31.5, 31.5], [7.25, 3.0]], np.float32)
    there = scale_keypoints(pts, (32, 32), (100, 80))
    np.testing.assert_allclose(there[:2], [[-0.5, -0.5], [99.5, 79.5]])
    np.testing.assert_allclose(scale_keypoints(there, (100, 80), (32, 32)), pts, atol=1e-5)
