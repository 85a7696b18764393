"""Matching speed: our block-wise BLAS mutual NN vs OpenCV's BFMatcher with crossCheck.

Random unit-length 128-D descriptors (half of image B a noisy copy of image A, so that
matches exist), measured side by side in one run on this machine. Prints pairs per second
and checks that both matchers return the same mutual matches.

    python benchmarks/bench_match.py [--sizes 2000 5000 8000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from aslfeat_cli.matching import MatchOptions, mutual_nn_match, normalize


def make_pair(rng: np.random.Generator, n: int, dim: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Two descriptor sets of n unit vectors; half of the second set are noisy copies."""
    d0 = normalize(rng.standard_normal((n, dim)))
    d1 = normalize(rng.standard_normal((n, dim)))
    half = n // 2
    d1[:half] = normalize(d0[:half] + 0.05 * rng.standard_normal((half, dim)))
    return d0, d1


def ours(d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    return mutual_nn_match(d0, d1, MatchOptions())[0]


def opencv(matcher: cv2.BFMatcher, d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    m0 = np.full(len(d0), -1, np.int32)
    for m in matcher.match(d0, d1):
        m0[m.queryIdx] = m.trainIdx
    return m0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 8000])
    parser.add_argument("--pairs", type=int, default=3, help="pairs timed per size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    print(f"CPU cores: {os.cpu_count()}, OpenCV {cv2.__version__}, numpy {np.__version__}")
    header = ("keypoints", "ours pairs/s", "BFMatcher pairs/s", "speed-up")
    print(f"{header[0]:>9}  {header[1]:>12}  {header[2]:>17}  {header[3]:>8}  same")
    for n in args.sizes:
        pairs = [make_pair(rng, n) for _ in range(args.pairs)]
        ours(*pairs[0])  # warm-up (BLAS threads, allocations)
        t = time.perf_counter()
        ours_out = [ours(d0, d1) for d0, d1 in pairs]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        cv_out = [opencv(matcher, d0, d1) for d0, d1 in pairs]
        t_cv = time.perf_counter() - t
        same = all(np.array_equal(a, b) for a, b in zip(ours_out, cv_out, strict=True))
        rate_ours, rate_cv = len(pairs) / t_ours, len(pairs) / t_cv
        print(f"{n:>9}  {rate_ours:>12.2f}  {rate_cv:>17.2f}  {rate_ours / rate_cv:>7.1f}x  {same}")


if __name__ == "__main__":
    main()
