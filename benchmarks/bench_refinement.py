"""Sub-pixel refinement side by side: the official Newton step vs a 3x3 quadratic fit vs the
training-time soft-argmax vs none, on the same network outputs.

The network runs once per image (onnxruntime); every refinement then selects keypoints from
those dense maps (:func:`aslfeat_cli.keypoints.select_keypoints` with ``refinement=...``), so
only the refinement differs. Pairs and metrics as ``eval_quality.py`` (graf 1->3, boat 1->2 and
N held-out synthetic pairs; mutual nearest neighbours, 5,000 keypoints). Needs ../shared/data.

    python benchmarks/bench_refinement.py [--model weights/aslfeat.onnx] [--synthetic 50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import replace
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
    parser.add_argument("--refinements", default="newton,quadratic,softargmax,none")
    args = parser.parse_args()
    if not (DATA / "pairs").is_dir():
        print(f"bench_refinement: {DATA} not found (needs ../shared/data)", file=sys.stderr)
        return 1

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.extractor import Extractor, to_gray
    from aslfeat_cli.hpatches import load_homography_pairs
    from aslfeat_cli.keypoints import select_keypoints

    extractor = Extractor(args.model, num_keypoints=args.num_keypoints)
    dense: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def method(refinement: str) -> he.Method:
        config = replace(extractor.config, refinement=refinement)

        def features(name: str, image: np.ndarray) -> he.FeatureSet:
            # evaluate() asks every method for one image before the next: keep the last few.
            if name not in dense:
                if len(dense) >= 4:
                    dense.pop(next(iter(dense)))
                dense[name] = extractor.session.run(to_gray(image))
            kpts, _, descs = select_keypoints(*dense[name], config)
            return Keypoints(kpts, descs)

        return he.Method(refinement, features)

    methods = [method(r) for r in args.refinements.split(",")]
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
