"""`aslfeat evaluate`: feature quality on homography pairs (the HPatches protocol of ASLFeat)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import UserError
from ._options import (
    TopK,
    backend_options,
    check_refine_matches,
    checked_pool_scales,
    device_option,
    pool_scales_option,
    refine_matches_option,
    shifts_option,
    upscale_option,
    verbosity_options,
)

logger = logging.getLogger(__name__)


def _parse_features(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    """``LABEL=FILE.h5`` (or just ``FILE.h5``, labelled by its stem) -> [(label, path)]."""
    parsed = []
    for value in values:
        label, sep, path = value.partition("=")
        if not sep:
            label, path = Path(value).stem, value
        if not label or not Path(path).is_file():
            raise click.BadParameter(f"{value!r}: expected LABEL=FILE.h5 with an existing file")
        parsed.append((label, Path(path)))
    return parsed


@click.command(
    "evaluate",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat evaluate ../shared/data/pairs -o out/eval
  aslfeat evaluate hpatches-sequences-release -o out/hpatches --multi-scale both
  aslfeat evaluate pairs/ --model other.onnx --features d2net=d2.h5 --no-sift
  aslfeat evaluate ../shared/data/pairs --upscale 2 --refine-matches
""",
)
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for results.json, results.csv and mma.png (default: only the table).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ONNX model to evaluate (repeatable; default: the shipped weights).",
)
@click.option(
    "--multi-scale",
    type=click.Choice(["no", "yes", "both"]),
    default="no",
    show_default=True,
    help="Run our models single-scale, multi-scale (image pyramid) or both.",
)
@shifts_option
@upscale_option
@pool_scales_option
@refine_matches_option
@click.option("--ours/--no-ours", default=True, show_default=True, help="Evaluate ASLFeat.")
@click.option(
    "--sift/--no-sift", default=True, show_default=True, help="OpenCV SIFT baseline (RootSIFT)."
)
@click.option(
    "--features",
    "feature_files",
    multiple=True,
    callback=_parse_features,
    metavar="LABEL=FILE.h5",
    help="Precomputed features (hloc HDF5, names relative to DATASET) as another method.",
)
@click.option(
    "--num-keypoints",
    type=TopK(),
    default=5000,
    show_default=True,
    help="Keypoint budget of ours and SIFT; 0 or 'none': all they detect.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="Error threshold (px) of repeatability, matching score and recall.",
)
@click.option("--max-dim", type=click.IntRange(min=16), default=None, help="Ours: --max-dim.")
@device_option
@backend_options
@click.option(
    "--include-ignored",
    is_flag=True,
    help="HPatches: keep the 8 sequences the official protocol skips.",
)
@click.option("--per-sequence", is_flag=True, help="Also print a row per sequence.")
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    dataset: Path,
    output: Path | None,
    models: tuple[Path, ...],
    multi_scale: str,
    ours: bool,
    sift: bool,
    feature_files: list[tuple[str, Path]],
    num_keypoints: int,
    threshold: float,
    max_dim: int | None,
    shifts: str,
    upscale: float,
    pool_scales: str,
    refine_matches: bool,
    device: str,
    backend: str,
    precision: str,
    include_ignored: bool,
    per_sequence: bool,
) -> None:
    """Evaluate features on homography pairs: repeatability, MMA@1..10 px, matching score,
    recall and homography accuracy, with mutual nearest-neighbour matching.

    DATASET is a folder of pairs (<pair>/A.*, <pair>/B.*, <pair>/H_A_to_B.txt) or an HPatches
    sequences release (<seq>/1.ppm..6.ppm, H_1_2..H_1_6; i_* illumination, v_* viewpoint).
    Metrics follow the official ASLFeat evaluation (hseq_eval.py); averages are per pair,
    per split and overall. The table goes to stdout.
    """
    from .. import homography_eval as he
    from ..hpatches import load_homography_pairs
    from ..viz import plot_mma, save_png

    quiet = bool((ctx.obj or {}).get("quiet"))
    pool = checked_pool_scales(pool_scales, upscale, multi_scale != "no")
    check_refine_matches(refine_matches, upscale, multi_scale != "no", pool)
    pairs = load_homography_pairs(dataset, include_ignored=include_ignored)
    logger.info("%d pair(s) in %s", len(pairs), dataset)

    methods: list[he.Method] = []
    if ours:
        scales = {"no": [False], "yes": [True], "both": [False, True]}[multi_scale]
        for model in models or (None,):
            for ms in scales:
                try:
                    methods.append(
                        he.ours_method(
                            model,
                            num_keypoints=num_keypoints,
                            multi_scale=ms,
                            max_dim=max_dim,
                            shifts=int(shifts),
                            upscale=upscale,
                            pool_scales=pool,
                            refine_matches=refine_matches,
                            device=device,
                            backend=backend,
                            precision=precision,
                        )
                    )
                except UserError:
                    raise
                except (ValueError, RuntimeError, OSError) as exc:
                    label = model or "the shipped model"
                    raise UserError(
                        f"cannot load {label}: {' '.join(str(exc).split())} (--no-ours skips it)"
                    ) from None
    if sift:
        methods.append(he.sift_method(num_keypoints))
    methods += [he.h5_method(label, path) for label, path in feature_files]
    names = [m.name for m in methods]
    if not methods:
        raise click.UsageError("nothing to evaluate: give --ours, --sift or --features")
    if len(set(names)) != len(names):
        raise click.UsageError(f"method names must differ: {', '.join(names)}")

    results = he.evaluate(pairs, methods, threshold=threshold, progress=not quiet)
    summaries = he.group_summaries(results)
    first = next(iter(summaries.values()))
    sequences = [g for g in first if g not in ("overall", *he.SPLIT_NAMES.values())]
    groups = [g for g in first if g not in sequences]
    if per_sequence or len(sequences) <= 10:
        groups += sequences
    click.echo(he.format_table(summaries, groups))

    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        settings = {
            "dataset": str(dataset),
            "methods": names,
            "num_keypoints": num_keypoints,
            "threshold": threshold,
            "multi_scale": multi_scale,
            "shifts": int(shifts),
            "upscale": upscale,
            "pool_scales": list(pool),
            "refine_matches": refine_matches,
            "max_dim": max_dim,
            "backend": backend,
            "precision": precision,
            "matching": "mutual nearest neighbours",
            "ransac_threshold": he.RANSAC_THRESHOLD,
            "include_ignored": include_ignored,
        }
        he.write_json(output / "results.json", results, summaries, settings)
        he.write_csv(output / "results.csv", results, summaries)
        curves = {m: {g: s.mma for g, s in by_group.items()} for m, by_group in summaries.items()}
        save_png(output / "mma.png", plot_mma(curves, he.MMA_THRESHOLDS))
        logger.info("wrote results.json, results.csv and mma.png to %s", output)
