"""Keypoint precision on a real 3-D scene: epipolar errors against ground-truth cameras.

The homography pairs measure 1-px precision on planes; fountain-P11 (../shared/data/sfm) has
depth and calibrated cameras, so a correct match's two points must lie on each other's
epipolar lines. For each configuration side by side (and OpenCV RootSIFT with ``--sift``):
extract with the same keypoint budget on the images fitted to ``--max-dim`` (1024, as
bench_sfm), match with mutual nearest neighbours, and for every pair of images at most
``--gap`` apart in the sequence take the larger of the two point-to-epipolar-line distances
(in pixels of the images as given, 1536 x 1024) of every match. Printed: matches per pair,
the share within 0.5 / 1 / 2 / 4 px, and the median and mean error of those within 4 px
(the correct ones: wrong matches fall anywhere).

    python benchmarks/bench_epipolar.py [--upscale 1,2] [--shifts 1,4] [--refine-matches]
        [--sift] [--num-keypoints 4000] [--gap 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENE = (
    Path(os.environ.get("ASLFEAT_SHARED_DATA") or ROOT.parent / "shared" / "data")
    / "sfm"
    / "fountain-P11"
)
THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model (default: shipped)")
    parser.add_argument("--upscale", default="1", help="comma-separated factors, each a row")
    parser.add_argument("--shifts", default="1", help="comma-separated pass counts, each a row")
    parser.add_argument(
        "--refine-matches",
        action="store_true",
        help="also a refined row (aslfeat_cli.match_refinement) for each --upscale 2 or more",
    )
    parser.add_argument("--sift", action="store_true", help="add a RootSIFT row")
    parser.add_argument("--num-keypoints", type=int, default=4000)
    parser.add_argument("--max-dim", type=int, default=1024)
    parser.add_argument("--gap", type=int, default=3, help="pair images at most this far apart")
    args = parser.parse_args()
    if not SCENE.is_dir():
        raise SystemExit(f"bench_epipolar: {SCENE} not found (needs ../shared/data)")

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.images import downscale_to_fit, read_image, scale_keypoints
    from aslfeat_cli.match_refinement import MIN_UPSCALE, refine_two_view
    from aslfeat_cli.sfm_eval import epipolar_errors, fundamental_matrix

    cameras = json.loads((SCENE / "cameras_gt.json").read_text())
    names = sorted(cameras)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 : i + 1 + args.gap]]
    methods = []
    for upscale, shifts in itertools.product(
        (float(f) for f in args.upscale.split(",")), (int(n) for n in args.shifts.split(","))
    ):
        refinements = [False, True] if args.refine_matches and upscale >= MIN_UPSCALE else [False]
        for refine in refinements:
            methods.append(
                he.ours_method(
                    args.model,
                    num_keypoints=args.num_keypoints,
                    shifts=shifts,
                    upscale=upscale,
                    refine_matches=refine,
                )
            )
    if args.sift:
        methods.append(he.sift_method(args.num_keypoints, name="RootSIFT"))

    images = {}
    for name in names:
        image = read_image(SCENE / "images" / name)
        images[name] = (downscale_to_fit(image, args.max_dim), (image.shape[1], image.shape[0]))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"# fountain-P11, {len(pairs)} pairs (gap <= {args.gap}), {args.num_keypoints} keypoints")
    print(
        "| method | matches per pair | < 0.5 px | < 1 px | < 2 px | < 4 px | "
        "median (< 4 px) | mean (< 4 px) | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for method in methods:
        start = time.perf_counter()
        features = {name: method.features(name, small) for name, (small, _) in images.items()}
        dense = {}

        def dense_of(name: str, method=method, dense=dense):
            """The detection pass's descriptor map of an image, computed once when needed."""
            if name not in dense:
                dense[name] = method.descriptor_map(images[name][0])
            return dense[name]

        errors = []
        for a, b in pairs:
            fa, fb = features[a], features[b]
            matches = he.mutual_nearest_neighbours(fa.descriptors, fb.descriptors)
            pa = fa.keypoints[matches[:, 0]].astype(np.float64)
            pb = fb.keypoints[matches[:, 1]].astype(np.float64)
            small_a, small_b = images[a][0], images[b][0]
            if method.descriptor_map is not None:
                pa, pb = refine_two_view(
                    pa,
                    pb,
                    fa.descriptors[matches[:, 0]],
                    fb.descriptors[matches[:, 1]],
                    lambda a=a: dense_of(a),
                    lambda b=b: dense_of(b),
                    (small_a.shape[1], small_a.shape[0]),
                    (small_b.shape[1], small_b.shape[0]),
                )
            pa = scale_keypoints(pa, (small_a.shape[1], small_a.shape[0]), images[a][1])
            pb = scale_keypoints(pb, (small_b.shape[1], small_b.shape[0]), images[b][1])
            errors.append(epipolar_errors(fundamental_matrix(cameras[a], cameras[b]), pa, pb))
        e = np.concatenate(errors)
        inliers = e[e < THRESHOLDS[-1]]
        shares = " | ".join(f"{np.mean(e < t):.3f}" for t in THRESHOLDS)
        print(
            f"| {method.name} | {len(e) / len(pairs):.0f} | {shares} | "
            f"{np.median(inliers):.3f} | {inliers.mean():.3f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
