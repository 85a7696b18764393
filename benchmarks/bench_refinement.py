"""Sub-pixel refinement side by side: the official Newton step vs a 3x3 quadratic fit vs the
training-time soft-argmax vs none, on the same network outputs.

The network runs once per image (onnxruntime); every refinement then selects keypoints from
those dense maps (:func:`aslfeat_cli.keypoints.select_keypoints` with ``refinement=...``), so
only the refinement differs. Pairs and metrics as ``eval_quality.py`` (graf 1->3, boat 1->2 and
N held-out synthetic pairs; mutual nearest neighbours, 5,000 keypoints). Needs ../shared/data.

``--shifts N`` refines on the score map averaged over N moved passes (``--shifts`` of the CLI).

    python benchmarks/bench_refinement.py [--model weights/aslfeat.onnx] [--synthetic 50]
        [--shifts 4]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
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
    parser.add_argument("--refinements", default="newton,quadratic,softargmax,none")
    parser.add_argument("--shifts", type=int, default=1, help="passes averaged (1, 2, 4)")
    args = parse_pair_arguments(parser)

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.extractor import Extractor, to_gray
    from aslfeat_cli.keypoints import select_keypoints
    from aslfeat_cli.shift_average import shift_averaged

    extractor = Extractor(args.model, num_keypoints=args.num_keypoints, shifts=args.shifts)
    dense = LastImages(
        lambda image: shift_averaged(extractor.session.run, to_gray(image), args.shifts)
    )

    def method(refinement: str) -> he.Method:
        config = replace(extractor.config, refinement=refinement)

        def features(name: str, image: np.ndarray) -> he.FeatureSet:
            kpts, _, descs = select_keypoints(*dense.get(name, image), config)
            return Keypoints(kpts, descs)

        return he.Method(refinement, features)

    evaluate_and_print([method(r) for r in args.refinements.split(",")], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
