"""A full disk in `colmap` and `show`: one-line error, non-zero exit, outputs consistent.

The disk is a small tmpfs (needs root; skipped otherwise). Before the fix `colmap` died with
pycolmap's SIGABRT ("cannot commit - no transaction is active") and `show` with a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from aslfeat_cli import h5io
from aslfeat_cli.matching import match_pairs, normalize
from aslfeat_cli.pairs import exhaustive

from .test_match_crash import _mount_tmpfs

pycolmap = pytest.importorskip("pycolmap")
NAMES = [f"{i}.png" for i in range(6)]


@pytest.fixture
def disk(tmp_path: Path):
    where = tmp_path / "disk"
    _mount_tmpfs(where, "1M")
    yield where
    subprocess.run(["umount", "-l", str(where)])


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    features = tmp_path / "features.h5"
    with h5py.File(features, "w") as fh:
        for name in NAMES:
            cv2.imwrite(str(images / name), rng.integers(0, 255, (480, 640), dtype=np.uint8))
            kp = rng.uniform(0, 639, (3000, 2)).astype(np.float32)
            desc = normalize(rng.standard_normal((3000, 128)))
            h5io.write_features(fh, name, kp, rng.random(3000), desc, (640, 480))
    matches = tmp_path / "matches.h5"
    match_pairs(features, exhaustive(NAMES), matches, progress=False)
    return {"images": images, "features": features, "matches": matches}


def _aslfeat(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "aslfeat_cli", "-q", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_colmap_on_a_full_disk(disk: Path, inputs: dict) -> None:
    database = disk / "database.db"
    done = _aslfeat("colmap", str(inputs["features"]), str(inputs["matches"]), "-d", str(database))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "not enough disk space" in done.stderr and "Traceback" not in done.stderr
    if database.exists():  # consistent: opens, and no image without its keypoints
        db = pycolmap.Database.open(database)
        try:
            assert db.num_images() == 0
        finally:
            db.close()


def test_show_on_a_full_disk(disk: Path, inputs: dict) -> None:
    out = disk / "pictures"
    done = _aslfeat(
        "show", str(inputs["features"]), "--images", str(inputs["images"]), "-o", str(out)
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Error: cannot write" in done.stderr and "Traceback" not in done.stderr
    for picture in out.rglob("*.png"):  # every picture left is complete
        assert cv2.imread(str(picture)) is not None
    assert not list(out.rglob(".*.tmp"))


def test_extract_to_hdf5_on_a_full_disk(tmp_path: Path) -> None:
    import skimage.data

    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "3M")  # 5,000 keypoints of a 640x480 photo: about 1.5 MB
    try:
        images = tmp_path / "images"
        images.mkdir()
        photo = cv2.resize(skimage.data.astronaut(), (640, 480))
        for i in range(6):
            cv2.imwrite(str(images / f"{i}.png"), np.roll(photo, 9 * i, axis=1))
        output = disk / "features.h5"
        done = _aslfeat("extract", str(images), "-o", str(output), "--num-keypoints", "5000")
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "disk space" in done.stderr, done.stderr
        kept = h5io.list_names(output)  # the file opens; what was written is whole
        assert 1 <= len(kept) < 6
        for name in kept:
            h5io.read_features(output, name)
        # With room again, the same command completes the rest.
        moved = tmp_path / "features.h5"
        moved.write_bytes(output.read_bytes())
        done = _aslfeat("extract", str(images), "-o", str(moved), "--num-keypoints", "5000")
        assert done.returncode == 0, done.stderr
        assert len(h5io.list_names(moved)) == 6
    finally:
        subprocess.run(["umount", "-l", str(disk)])
