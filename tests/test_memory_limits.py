"""No input may take the machine down: pixel limits checked from headers, a default pixel cap,
a refusal when the network would not fit in memory, and thin strips that stay usable."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from aslfeat_cli.extraction import _load, _OnceNotice
from aslfeat_cli.images import (
    AUTO_MAX_PIXELS,
    MAP_BYTES_PER_PIXEL,
    MAX_DECODE_PIXELS,
    MIN_SIDE,
    NETWORK_BYTES_PER_PIXEL,
    ImageError,
    available_memory,
    check_memory,
    fit_pixels,
    fit_size,
    header_size,
)

from .conftest import ROOT

MODEL = ROOT / "weights" / "aslfeat.onnx"


def _zero_png(path: Path, width: int, height: int) -> Path:
    """An all-zero 8-bit grey PNG written row block by row block (never held decoded)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    zc = zlib.compressobj(9)
    rows = b"\0" * ((width + 1) * 1000)
    idat = b"".join(zc.compress(rows) for _ in range(height // 1000))
    idat += zc.compress(b"\0" * ((width + 1) * (height % 1000))) + zc.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _extract(*args: str, limit_gb: float = 3.0) -> subprocess.CompletedProcess:
    """`aslfeat extract` in a subprocess whose address space is capped (so a regression
    cannot take the machine down; it fails inside its own limit instead)."""
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({int(limit_gb * 2**30)},) * 2); "
        "from aslfeat_cli.cli import main; sys.argv = ['aslfeat'] + sys.argv[1:]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "extract", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_header_size_of_common_formats(tmp_path: Path) -> None:
    image = np.zeros((37, 53), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".pgm"):
        ok, data = cv2.imencode(ext, image)
        assert header_size(data.tobytes()) == (53, 37), ext
    assert header_size(b"not an image at all") is None


def test_fit_pixels_and_thin_strips() -> None:
    assert fit_pixels(640, 480, AUTO_MAX_PIXELS) == (640, 480)
    w, h = fit_pixels(4000, 3000, AUTO_MAX_PIXELS)  # a 12 MP phone photo
    assert w * h <= AUTO_MAX_PIXELS * 1.001 and abs(w / h - 4 / 3) < 0.01
    assert fit_pixels(20000, 20, AUTO_MAX_PIXELS) == (20000, 20)  # 0.4 MP: untouched
    # The long-side rule keeps the short side at MIN_SIDE (was 4096 x 4, then refused).
    assert fit_size(20000, 20, 4096) == (16000, MIN_SIDE)
    assert min(fit_pixels(400000, 20, AUTO_MAX_PIXELS)) == MIN_SIDE


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    bomb = _zero_png(tmp_path / "bomb.png", 30000, 30000)  # 900 MP, under 1 MB on disk
    assert bomb.stat().st_size < 2_000_000
    done = _extract(str(bomb), "-o", str(tmp_path / "f.h5"), "--max-dim", "320", limit_gb=2)
    assert done.returncode == 1
    assert "above the decoding limit" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_large_jpeg_is_decoded_reduced(tmp_path: Path) -> None:
    # 8000 x 6000 = 48 MP > MAX_DECODE_PIXELS: libjpeg decodes it at 1/2 scale.
    big = np.tile(np.arange(256, dtype=np.uint8), (6000, 32))[:, :8000]
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big)
    del big
    loaded = _load(path, None)
    assert loaded.original_size == (8000, 6000)
    h, w = loaded.image.shape
    assert w * h <= AUTO_MAX_PIXELS * 1.001
    assert 8000 * 6000 > MAX_DECODE_PIXELS


def test_downscale_notice_once_per_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notice = _OnceNotice()
    for i in range(3):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.zeros((1500, 2000), np.uint8))  # 3 MP
        with caplog.at_level(logging.WARNING):
            loaded = _load(path, None, notice)
        assert loaded.original_size == (2000, 1500)
    assert caplog.text.count("downscaled to 2.0 MP") == 1


def test_memory_refusal_uses_what_is_available() -> None:
    free = available_memory()
    assert free is not None and free > 0
    side = int((free / MAP_BYTES_PER_PIXEL) ** 0.5 * 1.5)  # estimate above free memory
    with pytest.raises(ImageError, match="GB available; use a smaller --max-dim"):
        check_memory((side, side))
    check_memory((640, 480))
    # A model that cannot run in tiles (no standardisation to take out) needs far more.
    untiled = int((free / NETWORK_BYTES_PER_PIXEL) ** 0.5 * 1.5)
    check_memory((untiled, untiled))
    with pytest.raises(ImageError, match="GB available"):
        check_memory((untiled, untiled), tile_pixels=None)


@pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")
@pytest.mark.parametrize("max_dim", [None, "4096"])
def test_thin_strip_is_extracted(tmp_path: Path, max_dim: str | None) -> None:
    rng = np.random.default_rng(0)
    strip = cv2.GaussianBlur(rng.integers(0, 255, (20, 20000), dtype=np.uint8), (0, 0), 1.5)
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), strip)
    out = tmp_path / "f.h5"
    extra = ["--max-dim", max_dim] if max_dim else []
    done = _extract(str(path), "-o", str(out), *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out, "r") as fh:
        assert tuple(fh["strip.png/image_size"][()]) == (20000, 20)
