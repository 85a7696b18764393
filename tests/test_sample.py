"""The `make demo` inputs (aslfeat_cli.sample): real views only, pairs of the same photo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path) -> tuple[Path, Path]:
    images, pairs = tmp_path / "images", tmp_path / "pairs.txt"
    subprocess.run(
        [sys.executable, "-m", "aslfeat_cli.sample", str(images), str(pairs)],
        check=True,
        capture_output=True,
    )
    return images, pairs


def test_demo_pairs_are_views_of_one_photo(tmp_path):
    """Matching astronaut with chelsea reports 'inliers' that mean nothing: never pair them."""
    images, pairs = _write(tmp_path)
    lines = [line.split() for line in pairs.read_text().splitlines()]
    assert len(lines) == 9  # 3 photos x 3 pairs among their 3 views
    for name0, name1 in lines:
        assert name0.rsplit("_", 1)[0] == name1.rsplit("_", 1)[0], (name0, name1)
        assert (images / name0).is_file() and (images / name1).is_file()
    demo = re.search(r"^demo:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "--exhaustive" not in demo and "pairs.txt" in demo


def test_demo_views_have_no_black_border(tmp_path):
    """Warped views show photo content everywhere: no black corners for keypoints to sit on."""
    images, _ = _write(tmp_path)
    # coffee and chelsea have no black pixels of their own (astronaut has: its suit's shadows)
    for path in sorted(images.glob("c*_[12].png")):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        frame = np.concatenate([grey[:3].ravel(), grey[-3:].ravel(), grey[:, :3].ravel()])
        frame = np.concatenate([frame, grey[:, -3:].ravel()])
        assert (frame == 0).mean() < 0.01, path.name


def test_covering_homography_keeps_the_view_inside():
    from aslfeat_cli.sample import SIZE, covering_homography

    rng = np.random.default_rng(3)
    white = np.full(SIZE[::-1], 255, np.uint8)
    for _ in range(20):
        view = cv2.warpPerspective(white, covering_homography(rng, *SIZE), SIZE)
        assert (view == 0).sum() == 0
