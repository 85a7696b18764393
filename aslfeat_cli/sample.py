"""Write the demo images: scikit-image's sample photos and homography-warped views of them.

``python -m aslfeat_cli.sample OUT_DIR`` writes ``OUT_DIR/<photo>_<k>.png``: for each photo its
original view and two views through random homographies, so the demo can extract, match and
draw matches on real photos that ship with a package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .synthetic import random_homography

PHOTOS = ("astronaut", "coffee", "chelsea")
VIEWS = 2
SIZE = (512, 384)


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
            h = random_homography(rng, *SIZE, scale_range=(0.8, 1.25), max_angle_deg=15)
            path = out_dir / f"{name}_{k}.png"
            cv2.imwrite(str(path), cv2.warpPerspective(base, h, SIZE))
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo/images")
    print(f"{len(write_samples(target))} demo images in {target}", file=sys.stderr)
