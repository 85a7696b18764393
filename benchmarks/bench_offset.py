"""Is there a systematic keypoint offset? MMA with every keypoint shifted by a constant (d, d).

A constant bias b in both images' keypoints does not cancel under a homography with scale or
rotation: the error it adds is (J - I) b, with J the homography's Jacobian. TF1's legacy
bilinear upsampling (``align_corners=False`` without half-pixel centres) shifts the upsampled
conv3/conv6 score levels by (s - 1) / 2 px, so ASLFeat's fused score map could place peaks off
by a fraction of a pixel. Shifting the keypoints of both views by -b would then raise MMA@1.
The network runs once per image; only the shift differs between rows. Pairs and metrics as
``eval_quality.py``. Needs ../shared/data.

    python benchmarks/bench_offset.py [--shifts -1,-0.5,0,0.5,1] [--synthetic 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_quality import DATA, REAL_PAIRS, summarise_runs, synthetic_pairs  # noqa: E402


class Keypoints(NamedTuple):
    keypoints: np.ndarray
    descriptors: np.ndarray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    parser.add_argument("--synthetic", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="480x360")
    parser.add_argument("--num-keypoints", type=int, default=5000)
    parser.add_argument("--shifts", default="-1,-0.5,-0.25,0,0.25,0.5,1")
    args = parser.parse_args()
    if not (DATA / "pairs").is_dir():
        print(f"bench_offset: {DATA} not found (needs ../shared/data)", file=sys.stderr)
        return 1

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.extractor import Extractor
    from aslfeat_cli.hpatches import load_homography_pairs

    extractor = Extractor(args.model, num_keypoints=args.num_keypoints)
    cache: dict[str, Keypoints] = {}

    def method(shift: float) -> he.Method:
        def features(name: str, image: np.ndarray) -> he.FeatureSet:
            # evaluate() asks every method for one image before the next: keep the last few.
            if name not in cache:
                if len(cache) >= 4:
                    cache.pop(next(iter(cache)))
                out = extractor.extract(image)
                cache[name] = Keypoints(out.keypoints, out.descriptors)
            base = cache[name]
            return Keypoints(base.keypoints + np.float32(shift), base.descriptors)

        return he.Method(f"shift {shift:+.2f}", features)

    methods = [method(float(s)) for s in args.shifts.split(",")]
    width, height = (int(v) for v in args.size.lower().split("x"))
    start = time.perf_counter()
    real = [p for p in load_homography_pairs(DATA / "pairs") if p.sequence in REAL_PAIRS]
    real_results = he.evaluate(real, methods, progress=False)
    synthetic = synthetic_pairs(args.synthetic, args.seed, (width, height))
    synthetic_results = he.evaluate(synthetic, methods, progress=False)
    label = f"synthetic x{args.synthetic}"
    summaries = summarise_runs(methods, real_results, synthetic_results, label)
    print(he.format_table(summaries, [*REAL_PAIRS, label]))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"\n{dt.date.today()}, load {' '.join(load)}; model "
        f"{args.model or 'weights/aslfeat.onnx'}; {args.num_keypoints} keypoints, mutual NN; "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
