"""Matching quality of ASLFeat against OpenCV SIFT on homography pairs, in one run.

Methods: ours (the shipped weights/aslfeat.onnx, or --model) and OpenCV SIFT (RootSIFT), both
with the same keypoint budget (5000) and mutual nearest-neighbour matching. Data:

* graf 1->3 and boat 1->2 from ../shared/data/pairs (real viewpoint / zoom-rotation changes);
* N synthetic pairs made by ``aslfeat_cli.synthetic.make_pair`` from the held-out validation
  photos (``split_photos``: never used for training), with a fixed seed, so every run and
  every model sees the same pairs.

Metrics come from ``aslfeat_cli.homography_eval`` (the code path of ``aslfeat evaluate``):
MMA at 1, 3, 5 px, number of matches, repeatability, matching score, recall and homography
accuracy (share of pairs with mean corner error <= 1/3/5 px after RANSAC). Prints a table;
--json writes the numbers. Needs ../shared/data.

    python benchmarks/eval_quality.py [--model weights/aslfeat.onnx] [--synthetic 50]
        [--seed 0] [--size 480x360] [--num-keypoints 5000] [--shifts 1,4] [--upscale 1,2]
        [--pool-scales none --pool-scales 1,0.5] [--refine-matches]
        [--no-ours]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REAL_PAIRS = ("graf_1_3", "boat_1_2")


def synthetic_pairs(count: int, seed: int, size: tuple[int, int]) -> list:
    """``count`` pairs from the validation photos (cycled in sorted order), one seeded rng."""
    from aslfeat_cli.homography_eval import ArrayPair
    from aslfeat_cli.synthetic import make_pair, split_photos

    _, val = split_photos(DATA / "train")
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(count):
        photo = cv2.imread(str(val[index % len(val)]), cv2.IMREAD_COLOR)
        image_a, image_b, homography = make_pair(photo, rng, size)
        pairs.append(ArrayPair(f"synthetic_{index:03d}", image_a, image_b, homography))
    return pairs


#: Zoom bins of the synthetic pairs for the per-zoom table (B / A scale at A's centre).
ZOOM_BINS = ((0.0, 0.85), (0.85, 1.15), (1.15, 1.45), (1.45, 10.0))


def zoom_table(pairs: list, results: list, methods: list[str]) -> str:
    """MMA@1/@3 and matches of each method per zoom bin of the synthetic pairs."""
    from aslfeat_cli.synthetic import zoom_at_centre

    zooms = {p.sequence: zoom_at_centre(p.homography, p.image_a.shape[1::-1]) for p in pairs}
    lines = ["zoom          pairs  " + "  ".join(f"{m:>22}" for m in methods)]
    lines.append(" " * 21 + "  ".join(f"{'MMA@1  MMA@3  #match':>22}" for _ in methods))
    for low, high in ZOOM_BINS:
        names = {n for n, z in zooms.items() if low <= z < high}
        if not names:
            continue
        cells = []
        for method in methods:
            metrics = [r.metrics for r in results if r.method == method and r.sequence in names]
            mma1 = np.mean([m.mma[0] for m in metrics])
            mma3 = np.mean([m.mma[2] for m in metrics])
            matches = np.mean([m.n_matches for m in metrics])
            cells.append(f"{mma1:>8.3f} {mma3:>6.3f} {matches:>6.0f}")
        label = f"{low:.2f}-{high:.2f}" if high < 10 else f">= {low:.2f}"
        lines.append(f"{label:<13} {len(names):>5}  " + "  ".join(cells))
    return "\n".join(lines)


def summarise_runs(methods: list, real_results: list, synthetic_results: list, label: str) -> dict:
    """Summaries per method: each real pair and the synthetic set (under ``label``)."""
    from aslfeat_cli import homography_eval as he

    return {
        m.name: {
            **{
                p: he.summarize(
                    r.metrics for r in real_results if r.method == m.name and r.sequence == p
                )
                for p in REAL_PAIRS
            },
            label: he.summarize(r.metrics for r in synthetic_results if r.method == m.name),
        }
        for m in methods
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    parser.add_argument("--no-ours", action="store_true", help="only SIFT (no model needed)")
    parser.add_argument("--num-keypoints", type=int, default=5000)
    parser.add_argument("--synthetic", type=int, default=50, help="number of synthetic pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="480x360", help="synthetic pair size WxH")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--shifts",
        default="1",
        help="comma-separated pass counts (Extractor(shifts=N)), one row each, e.g. 1,4",
    )
    parser.add_argument(
        "--upscale",
        default="1",
        help="comma-separated factors (Extractor(upscale=F)), one row each (with each --shifts)",
    )
    parser.add_argument(
        "--pool-scales",
        action="append",
        default=None,
        help="comma-separated descriptor pooling scales (Extractor(pool_scales=...)) or 'none'; "
        "repeat for more rows (with each --upscale and --shifts; combinations the Extractor "
        "refuses are left out with a note); default: none",
    )
    parser.add_argument(
        "--refine-matches",
        action="store_true",
        help="also a row with matches refined towards each other's descriptors "
        "(Extractor descriptor maps, aslfeat_cli.match_refinement) for each row with "
        "--upscale 2 or more and no pooling",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the summaries here")
    args = parser.parse_args()
    if not (DATA / "pairs").is_dir() or not (DATA / "train").is_dir():
        print(f"eval_quality: {DATA} not found (needs ../shared/data)", file=sys.stderr)
        return 1

    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.hpatches import load_homography_pairs
    from aslfeat_cli.match_refinement import check_refinement
    from aslfeat_cli.scale_pooling import check_pool_scales, parse_pool_scales

    width, height = (int(v) for v in args.size.lower().split("x"))
    methods = []
    if not args.no_ours:
        pool_sets = [parse_pool_scales(text) for text in args.pool_scales or ["none"]]
        for upscale in (float(f) for f in args.upscale.split(",")):
            for shifts in (int(n) for n in args.shifts.split(",")):
                for pool in pool_sets:
                    try:
                        check_pool_scales(pool, upscale)
                    except ValueError as error:
                        print(f"eval_quality: left out upscale {upscale:g}: {error}")
                        continue
                    refinements = [False]
                    if args.refine_matches:
                        try:
                            check_refinement(upscale, pool_scales=pool)
                            refinements.append(True)
                        except ValueError as error:
                            print(f"eval_quality: no refined row for upscale {upscale:g}: {error}")
                    for refine in refinements:
                        settings = dict(
                            shifts=shifts, upscale=upscale, pool_scales=pool, refine_matches=refine
                        )
                        methods.append(
                            he.ours_method(
                                args.model,
                                num_keypoints=args.num_keypoints,
                                device=args.device,
                                name=he.method_name(**settings),
                                **settings,
                            )
                        )
    methods.append(he.sift_method(args.num_keypoints, name="sift"))

    start = time.perf_counter()
    real = [p for p in load_homography_pairs(DATA / "pairs") if p.sequence in REAL_PAIRS]
    real_results = he.evaluate(real, methods, progress=False)
    synthetic = synthetic_pairs(args.synthetic, args.seed, (width, height))
    synthetic_results = he.evaluate(synthetic, methods, progress=False)
    seconds = time.perf_counter() - start

    label = f"synthetic x{args.synthetic}"
    summaries = summarise_runs(methods, real_results, synthetic_results, label)
    print(he.format_table(summaries, [*REAL_PAIRS, label]))
    print("\nsynthetic pairs by zoom (scale of B relative to A at A's centre):")
    print(zoom_table(synthetic, synthetic_results, [m.name for m in methods]))
    print(
        f"\n{args.num_keypoints} keypoints, mutual NN; synthetic: {args.synthetic} pairs "
        f"{width}x{height} from the validation photos, seed {args.seed}; "
        f"model: {args.model or 'weights/aslfeat.onnx' if not args.no_ours else '-'}; "
        f"{seconds:.0f} s"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {
                        "num_keypoints": args.num_keypoints,
                        "synthetic": args.synthetic,
                        "seed": args.seed,
                        "size": [width, height],
                        "model": str(args.model) if args.model else None,
                    },
                    "summary": {
                        method: {
                            group: {
                                "mma@1": s.mma[0],
                                "mma@3": s.mma[2],
                                "mma@5": s.mma[4],
                                "n_matches": s.n_matches,
                                "repeatability": s.repeatability,
                                "matching_score": s.matching_score,
                                "h_acc": {str(k): v for k, v in s.homography_accuracy.items()},
                            }
                            for group, s in groups.items()
                        }
                        for method, groups in summaries.items()
                    },
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
