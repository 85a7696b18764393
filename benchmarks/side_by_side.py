"""Shared scaffolding of the benchmarks that compare variants of one network's outputs.

``bench_refinement.py`` and ``bench_offset.py`` run the network once per image and derive
several keypoint sets from that one output; this module holds their common arguments, the
per-image cache and the evaluation on graf 1->3, boat 1->2 and N held-out synthetic pairs
(the pairs and metrics of ``eval_quality.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from eval_quality import DATA, REAL_PAIRS, summarise_runs, synthetic_pairs  # same folder


class Keypoints(NamedTuple):
    """The ``FeatureSet`` the evaluation reads: keypoints (N, 2) and descriptors (N, D)."""

    keypoints: np.ndarray
    descriptors: np.ndarray


def parse_pair_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the script's own options plus the model, synthetic-set and keypoint-budget
    options every such benchmark takes; exit 1 with a one-line message without ../shared/data."""
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    parser.add_argument("--synthetic", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="480x360")
    parser.add_argument("--num-keypoints", type=int, default=5000)
    args = parser.parse_args()
    if not (DATA / "pairs").is_dir():
        print(f"{Path(parser.prog).stem}: {DATA} not found (needs ../shared/data)", file=sys.stderr)
        raise SystemExit(1)
    return args


class LastImages:
    """The network output of the last few images: ``evaluate()`` asks every method for one
    image before the next, so the network runs once per image, not once per method."""

    def __init__(self, compute: Callable[[np.ndarray], Any], size: int = 4) -> None:
        self.compute = compute
        self.size = size
        self._cache: dict[str, Any] = {}

    def get(self, name: str, image: np.ndarray) -> Any:
        """The output for image ``name``, computed on first request."""
        if name not in self._cache:
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = self.compute(image)
        return self._cache[name]


def evaluate_and_print(methods: list, args: argparse.Namespace) -> None:
    """Evaluate ``methods`` on the real and synthetic pairs; print the table and a footer
    with the date, the load, the model and the wall time."""
    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.hpatches import load_homography_pairs

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
