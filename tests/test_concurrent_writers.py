"""Two `aslfeat extract -o same.db` at once: the second is refused (like an HDF5 output) and
the database stays consistent (one camera per image, no orphans)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import skimage.data

from .conftest import ROOT

pycolmap = pytest.importorskip("pycolmap")
MODEL = ROOT / "weights" / "aslfeat.onnx"


def _extract(images: Path, output: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "aslfeat_cli", "-q", "extract", str(images), "-o", str(output)]
    command += ["--num-keypoints", "200"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _photos(images: Path) -> Path:
    images.mkdir()
    photo = skimage.data.astronaut()
    for i in range(12):  # about 0.3 s each: the first run is still busy when the second starts
        crop = cv2.cvtColor(photo[i * 8 : i * 8 + 384, i * 8 : i * 8 + 512], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(images / f"{i:02d}.jpg"), crop)
    return images


def _two_runs(images: Path, output: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    """Two extracts on the same output started together; (return code, stderr) of the one that
    finished writing and of the refused one.

    Started together, not one after the other: a second run started once the first has
    created the output raced the first run's end on a loaded machine (its imports took longer
    than the first run's remaining 12 images, and it found a finished file: exit 0).
    """
    runs = [_extract(images, output), _extract(images, output)]
    results = []
    for run in runs:
        _, err = run.communicate(timeout=300)
        results.append((run.returncode, err))
    results.sort(key=lambda result: result[0])
    return results[0], results[1]


@pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")
def test_second_writer_of_a_database_is_refused(tmp_path: Path) -> None:
    images = _photos(tmp_path / "images")
    output = tmp_path / "database.db"
    (code, err), (refused, refusal) = _two_runs(images, output)
    assert code == 0, err
    assert refused == 1 and "Traceback" not in refusal, refusal
    assert "being written by another aslfeat run" in refusal, refusal
    db = pycolmap.Database.open(output)
    try:
        assert db.num_images() == 12
        assert db.num_cameras() == 12  # no orphan camera from the refused run
    finally:
        db.close()


@pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")
def test_second_writer_of_an_hdf5_file_is_refused(tmp_path: Path) -> None:
    images = _photos(tmp_path / "images")
    output = tmp_path / "features.h5"
    (code, err), (refused, refusal) = _two_runs(images, output)
    assert code == 0, err
    assert refused == 1 and "Traceback" not in refusal, refusal
    assert len(refusal.strip().splitlines()) == 1 and f"cannot open {output}" in refusal, refusal
    import h5py

    with h5py.File(output, "r") as fh:
        assert sorted(fh) == sorted(p.name for p in images.iterdir())
