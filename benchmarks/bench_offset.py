"""Is there a systematic keypoint offset? MMA with every keypoint shifted by a constant (d, d).

A constant bias b in both images' keypoints does not cancel under a homography with scale or
rotation: the error it adds is (J - I) b, with J the homography's Jacobian. TF1's legacy
bilinear upsampling (``align_corners=False`` without half-pixel centres) shifts the upsampled
conv3/conv6 score levels by (s - 1) / 2 px, so ASLFeat's fused score map could place peaks off
by a fraction of a pixel. Shifting the keypoints of both views by -b would then raise MMA@1.
The network runs once per image; only the shift differs between rows. Pairs and metrics as
``eval_quality.py``. Needs ../shared/data.

    python benchmarks/bench_offset.py [--shifts=-1,-0.5,0,0.5,1] [--synthetic 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import (  # noqa: E402
    Keypoints,
    LastImages,
    evaluate_and_print,
    parse_pair_arguments,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shifts", default="-1,-0.5,-0.25,0,0.25,0.5,1")
    args = parse_pair_arguments(parser)

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.extractor import Extractor

    extractor = Extractor(args.model, num_keypoints=args.num_keypoints)
    cache = LastImages(extractor.extract)

    def method(shift: float) -> he.Method:
        def features(name: str, image: np.ndarray) -> he.FeatureSet:
            base = cache.get(name, image)
            return Keypoints(base.keypoints + np.float32(shift), base.descriptors)

        return he.Method(f"shift {shift:+.2f}", features)

    evaluate_and_print([method(float(s)) for s in args.shifts.split(",")], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
