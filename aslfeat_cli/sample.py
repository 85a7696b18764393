"""Write the demo images: scikit-image's sample photos and homography-warped views of them.

``python -m aslfeat_cli.sample OUT_DIR [PAIRS_FILE]`` writes ``OUT_DIR/<photo>_<k>.png``: for
each photo its original view and two views through random homographies, so the demo can
extract, match and draw matches on real photos that ship with a package. PAIRS_FILE (default
``OUT_DIR/../pairs.txt``) lists the pairs worth matching: views of the same photo only (two
different photos share no scene, so "inliers" between them would mean nothing).

Each warp zooms in just enough that the whole view shows the photo: no black border for the
detector to put keypoints on, every match between two views is a real correspondence.
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .synthetic import image_corners, random_homography

PHOTOS = ("astronaut", "coffee", "chelsea")
VIEWS = 2
SIZE = (512, 384)
ZOOM_STEP = 1.05  # zoom-in factor per try while a view's corners fall outside the photo


def _inside(points: np.ndarray, width: int, height: int) -> bool:
    x, y = points[:, 0], points[:, 1]
    return bool(
        (x >= 0).all() and (y >= 0).all() and (x <= width - 1).all() and (y <= height - 1).all()
    )


def covering_homography(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random photo -> view homography whose view lies entirely inside the photo.

    The view's corners are mapped back into the photo; while one falls outside, the view
    zooms in about the photo's centre (composing a scaling), which pulls them inwards.
    """
    h = random_homography(rng, width, height, scale_range=(0.8, 1.25), max_angle_deg=15)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    corners = image_corners(width, height).astype(np.float64)
    for _ in range(100):
        back = cv2.perspectiveTransform(corners[None], np.linalg.inv(h))[0]
        if _inside(back, width, height):
            return h
        zoom = np.array(
            [[ZOOM_STEP, 0, 0], [0, ZOOM_STEP, 0], [0, 0, 1]], dtype=np.float64
        )  # about the centre: T(c) S T(-c)
        shift = np.eye(3)
        shift[:2, 2] = centre
        unshift = np.eye(3)
        unshift[:2, 2] = -centre
        # h' = h S_c, so h'^-1 = S_c^-1 h^-1 pulls the back-mapped corners to the centre.
        h = h @ shift @ zoom @ unshift
        h /= h[2, 2]
    raise RuntimeError("could not fit the view inside the photo")  # not reached for our ranges


def demo_pairs(paths: list[Path]) -> list[tuple[str, str]]:
    """Pairs of file names among the views of each photo (``<photo>_<k>.png``)."""
    by_photo: dict[str, list[str]] = {}
    for path in paths:
        by_photo.setdefault(path.stem.rsplit("_", 1)[0], []).append(path.name)
    return [pair for names in by_photo.values() for pair in combinations(sorted(names), 2)]


def write_samples(out_dir: Path, seed: int = 0) -> list[Path]:
    """Write the demo images to ``out_dir``; returns their paths."""
    try:
        from skimage import data
    except ImportError as e:
        raise UserError("the demo images come from scikit-image: pip install scikit-image") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for name in PHOTOS:
        bgr = cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
        base = cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA)
        path = out_dir / f"{name}_0.png"
        cv2.imwrite(str(path), base)
        written.append(path)
        for k in range(1, VIEWS + 1):
            h = covering_homography(rng, *SIZE)
            path = out_dir / f"{name}_{k}.png"
            cv2.imwrite(str(path), cv2.warpPerspective(base, h, SIZE, flags=cv2.INTER_LINEAR))
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo/images")
    pairs_file = Path(sys.argv[2]) if len(sys.argv) > 2 else target.parent / "pairs.txt"
    paths = write_samples(target)
    pairs = demo_pairs(paths)
    pairs_file.parent.mkdir(parents=True, exist_ok=True)
    pairs_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    print(
        f"{len(paths)} demo images in {target}, {len(pairs)} pairs in {pairs_file}", file=sys.stderr
    )
