"""Structure from motion with one or more ONNX models, side by side (issue 11's SfM row).

For each scene of ../shared/data/sfm and each model: extract (4,000 keypoints, --max-dim
1024, as tests/test_reconstruct.py), match exhaustively, verify and map with pycolmap, then
print registered images, 3D points, mean track length, mean reprojection error and, where the
scene has ground-truth cameras (fountain-P11), the largest camera-centre error after a
similarity alignment, in % of the scene extent (and the mean over the cameras, which moves
less from run to run). ``--runs N`` repeats the mapping (it varies
with pycolmap's threads) and reports every run. ``--intrinsics guessed,refined,known`` adds rows
where COLMAP's guessed camera gets its principal point refined (``--refine-principal-point``)
and rows where
the mapper is given the ground truth's intrinsics (PINHOLE, fixed; scenes with ground-truth
cameras only): with the guessed camera (COLMAP's default, principal point at the centre) the
camera error of fountain-P11 is set by the intrinsics, not by the keypoints (README).
``--sift`` adds OpenCV RootSIFT rows (the same budget and ``--max-dim``, Lowe ratio 0.8 as in
tests/test_reconstruct.py), through the same matching and mapping. Each feature setting is
extracted once per scene and run; its refinement and intrinsics rows map the same features.

    python benchmarks/bench_sfm.py [--model A.onnx --model B.onnx] [--runs 2]
        [--num-keypoints 3000,4000,5000] [--shifts 1,4] [--upscale 1,2]
        [--pool-scales none --pool-scales 1,0.5] [--refine-matches off,on]
        [--intrinsics guessed,refined,known] [--sift] [--scenes fountain-P11]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aslfeat_cli import Extractor

ROOT = Path(__file__).resolve().parents[1]
SFM = Path(os.environ.get("ASLFEAT_SHARED_DATA") or ROOT.parent / "shared" / "data") / "sfm"
NUM_KEYPOINTS = 4000
MAX_DIM = 1024
SIFT = object()  # the RootSIFT rows' place in the job list, where the others hold a model
SIFT_RATIO = 0.8  # RootSIFT with mutual nearest neighbours alone fails on sacre_coeur


def write_sift(images: list[tuple[Path, str]], features: Path, num_keypoints: int) -> None:
    """RootSIFT of each image fitted to MAX_DIM, keypoints in the pixels of the image as given."""
    import h5py

    from aslfeat_cli import h5io
    from aslfeat_cli.images import downscale_to_fit, read_image, scale_keypoints
    from aslfeat_cli.sift import SiftExtractor

    sift = SiftExtractor(num_keypoints)
    with h5py.File(features, "w") as fh:
        for path, name in images:
            image = read_image(path)
            small = downscale_to_fit(image, MAX_DIM)
            feats = sift.extract(small)
            size = (image.shape[1], image.shape[0])
            keypoints = scale_keypoints(feats.keypoints, feats.image_size, size)
            h5io.write_features(fh, name, keypoints, feats.scores, feats.descriptors, size)


def scene_images(scene: Path) -> list[tuple[Path, str]]:
    """(path, name) of the scene's images, names relative to its images/ folder."""
    from aslfeat_cli.images import walk_images

    folder = scene / "images"
    return [(p, p.relative_to(folder).as_posix()) for p in sorted(walk_images(folder))]


def extract_scene(
    model: str | None,
    images: list[tuple[Path, str]],
    features: Path,
    num_keypoints: int = NUM_KEYPOINTS,
    shifts: int = 1,
    upscale: float = 1.0,
    pool_scales: tuple[float, ...] = (),
    sift: bool = False,
) -> Extractor | None:
    """Write ``features`` for ``images``: ``model`` with ``shifts`` passes
    (:mod:`aslfeat_cli.shift_average`), images enlarged by ``upscale`` for the network,
    descriptors pooled over ``pool_scales`` (:mod:`aslfeat_cli.scale_pooling`); or RootSIFT with
    ``sift``. Returns the extractor (None for RootSIFT): match refinement reads its maps."""
    from aslfeat_cli import Extractor
    from aslfeat_cli.extraction import run_extraction

    if sift:
        write_sift(images, features, num_keypoints)
        return None
    extractor = Extractor(
        model,
        num_keypoints=num_keypoints,
        max_dim=MAX_DIM,
        shifts=shifts,
        upscale=upscale,
        pool_scales=pool_scales,
    )
    run_extraction(images, features, extractor, progress=False)
    return extractor


def map_scene(
    scene: Path,
    images: list[tuple[Path, str]],
    features: Path,
    work: Path,
    extractor: Extractor | None = None,
    refine_matches: bool = False,
    intrinsics: str = "guessed",
) -> dict[str, float | int | str]:
    """Match, verify and map ``features`` of ``scene`` in ``work`` (matched keypoints refined
    along ``extractor``'s descriptor maps with ``refine_matches``,
    :mod:`aslfeat_cli.match_refinement`; the ground truth's intrinsics given and fixed with
    ``intrinsics`` "known", COLMAP's guess with its principal point refined with "refined");
    its figures. Features without an extractor are RootSIFT's (Lowe's ratio test). The
    refinement setting is checked by the caller, before any extraction."""
    from aslfeat_cli.cameras import camera_spec
    from aslfeat_cli.matching import MatchOptions
    from aslfeat_cli.reconstruct import reconstruct_from_features
    from aslfeat_cli.sfm_eval import camera_centre_errors, ground_truth_camera

    sift = extractor is None
    gt = scene / "cameras_gt.json"
    truth = json.loads(gt.read_text()) if gt.is_file() else None
    camera = None
    if intrinsics == "refined":
        camera = camera_spec(refine_principal_point=True)
    elif intrinsics == "known":
        camera = ground_truth_camera(truth)
    stats = reconstruct_from_features(  # one camera where it is one (fountain-P11's GT scene)
        images,
        features,
        work / "sfm",
        single_camera=truth is not None,
        progress=False,
        num_threads=2,
        match_options=MatchOptions(ratio=SIFT_RATIO if sift else None),
        descriptor_map=extractor.descriptor_map if refine_matches else None,
        camera=camera,
    )
    row: dict[str, float | int | str] = {
        "registered": f"{stats.registered}/{len(images)}",
        "points": stats.points,
        "track": round(stats.mean_track_length, 2),
        "reproj_px": round(stats.mean_reprojection_error, 3),
        "camera_error_pct": "",
        "mean_camera_error_pct": "",
    }
    if truth is not None and stats.registered == len(images):
        centres = {n: c["center"] for n, c in truth.items()}
        errors, extent = camera_centre_errors(work / "sfm" / "sparse", centres)
        row["camera_error_pct"] = round(100 * float(errors.max()) / extent, 3)
        row["mean_camera_error_pct"] = round(100 * float(errors.mean()) / extent, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="ONNX model (repeat; default: shipped)")
    parser.add_argument("--scenes", default="fountain-P11,sacre_coeur")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--num-keypoints",
        default=str(NUM_KEYPOINTS),
        help="comma-separated budgets, each a row (how much a figure moves with the budget)",
    )
    parser.add_argument(
        "--shifts", default="1", help="comma-separated pass counts (1, 2, 4), each a row"
    )
    parser.add_argument(
        "--upscale", default="1", help="comma-separated factors (Extractor(upscale=F)), each a row"
    )
    parser.add_argument(
        "--pool-scales",
        action="append",
        default=None,
        help="comma-separated descriptor pooling scales or 'none'; repeat, each a row",
    )
    parser.add_argument(
        "--refine-matches",
        default="off",
        help="comma-separated off/on (match refinement, aslfeat_cli.match_refinement), each a row",
    )
    parser.add_argument(
        "--intrinsics",
        default="guessed",
        help="comma-separated guessed/refined/known (refined: the principal point too; known: "
        "the ground truth's K, fixed; both on scenes with "
        "ground-truth cameras), each a row",
    )
    parser.add_argument("--sift", action="store_true", help="add RootSIFT rows")
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")  # pycolmap's mapper log, before its import
    models = args.model or [None]
    budgets = [int(b) for b in args.num_keypoints.split(",")]
    shift_counts = [int(n) for n in args.shifts.split(",")]
    factors = [float(f) for f in args.upscale.split(",")]
    from aslfeat_cli.scale_pooling import format_pool_scales, parse_pool_scales

    pools = [parse_pool_scales(text) for text in args.pool_scales or ["none"]]
    refinements = [{"off": False, "on": True}[v] for v in args.refine_matches.split(",")]
    intrinsics = args.intrinsics.split(",")
    if not set(intrinsics) <= {"guessed", "refined", "known"}:
        parser.error(f"--intrinsics takes guessed, refined, known: {args.intrinsics}")
    if True in refinements:  # refused combinations fail before any extraction
        from aslfeat_cli.match_refinement import check_refinement

        for factor, pool in itertools.product(factors, pools):
            check_refinement(factor, pool_scales=pool)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(
        "| scene | model | keypoints | shifts | upscale | pool scales | refined | intrinsics | "
        "run | registered | 3D points | track length | reproj. px | camera error % | mean % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.scenes.split(","):
        for run in range(1, args.runs + 1):
            # Models interleaved: the machine's load hits every model alike.
            jobs = [
                (model, budget, shifts, factor, pool, refine, known)
                for budget, shifts, factor, pool, refine, known, model in itertools.product(
                    budgets, shift_counts, factors, pools, refinements, intrinsics, models
                )
            ]
            if args.sift:
                jobs += [
                    (SIFT, budget, 1, 1.0, (), False, known)
                    for budget, known in itertools.product(budgets, intrinsics)
                ]
            scene = SFM / name
            images = scene_images(scene)
            with tempfile.TemporaryDirectory() as tmp:
                # One extraction per feature setting: the refinement and intrinsics rows of
                # a setting map the same features.
                extracted: dict[tuple, tuple[Path, Extractor | None]] = {}
                for i, (model, budget, shifts, factor, pool, refine, intr) in enumerate(jobs):
                    # One shared camera (its ground truth) where refined or known intrinsics mean
                    # anything: a camera per image does not determine its principal point.
                    if intr != "guessed" and not (scene / "cameras_gt.json").is_file():
                        continue
                    sift = model is SIFT
                    label = "RootSIFT" if sift else Path(model).name if model else "shipped"
                    model = None if sift else model
                    key = ("sift", budget) if sift else (model, budget, shifts, factor, pool)
                    if key not in extracted:
                        features = Path(tmp) / f"features-{len(extracted)}.h5"
                        extractor = extract_scene(
                            model, images, features, budget, shifts, factor, pool, sift
                        )
                        extracted[key] = (features, extractor)
                    features, extractor = extracted[key]
                    row = map_scene(
                        scene, images, features, Path(tmp) / f"map-{i}", extractor, refine, intr
                    )
                    options = (
                        "| – " * 4
                        if sift
                        else (
                            f"| {shifts} | {factor:g} | {format_pool_scales(pool)} | "
                            f"{'on' if refine else 'off'} "
                        )
                    )
                    print(
                        f"| {name} | {label} | {budget} {options}| "
                        f"{intr} | {run} | "
                        f"{row['registered']} | {row['points']} | {row['track']} | "
                        f"{row['reproj_px']} | {row['camera_error_pct']} | "
                        f"{row['mean_camera_error_pct']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
