"""`aslfeat reconstruct`: images to a sparse COLMAP model (extract, pairs, match, map)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import UserError
from ._options import (
    backend_options,
    camera_options,
    check_refine_matches,
    checked_camera,
    checked_pool_scales,
    colmap_descriptors_option,
    device_option,
    image_list_option,
    image_root_option,
    model_option,
    num_keypoints_option,
    pool_scales_option,
    refine_matches_option,
    shifts_option,
    upscale_option,
    verbosity_options,
)
from .pairs import pair_mode_options, quiet_flag

logger = logging.getLogger(__name__)


@click.command(
    "reconstruct",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat reconstruct images/ -o sfm/
  aslfeat reconstruct images/ -o sfm/ --upscale 2   # more precise keypoints, 4-5x the time
  aslfeat reconstruct images/ -o sfm/ --upscale 2 --refine-matches  # + refined per track
  aslfeat reconstruct frames/ -o sfm/ --sequential 8 --loop-stride 30 --single-camera
  aslfeat reconstruct images/ -o sfm/ --features sift_features.h5 --ratio 0.8
  aslfeat reconstruct images/ -o sfm/ --single-camera --camera-model PINHOLE \\
      --camera-params 1380,1382,760,503 --fixed-intrinsics   # calibrated camera
  aslfeat reconstruct images/ -o sfm/ --single-camera --refine-principal-point
""",
)
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (features, matches, database.db, sparse/ and sparse_text/).",
)
@image_list_option
@image_root_option
@click.option(
    "--features",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Use this features file (hloc layout) instead of extracting.",
)
@pair_mode_options
@num_keypoints_option
@click.option(
    "--max-dim",
    type=click.IntRange(min=16),
    default=1600,
    show_default=True,
    help="Downscale images for extraction so the long side fits (keypoints stay in "
    "original pixels).",
)
@shifts_option
@upscale_option
@pool_scales_option
@refine_matches_option
@model_option
@device_option
@backend_options
@click.option(
    "--ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Lowe's ratio test for matching (1 = off). Off suits ASLFeat: on sacre_coeur mutual "
    "nearest neighbours registered 10/10 images, ratio 0.9 only 2. For SIFT features use 0.8.",
)
@click.option("--single-camera", is_flag=True, help="All images share one camera (one size).")
@camera_options
@click.option(
    "--fixed-intrinsics",
    is_flag=True,
    help="Bundle adjustment keeps --camera-params as given (calibrated cameras).",
)
@click.option(
    "--refine-principal-point",
    is_flag=True,
    help="Bundle adjustment refines the principal point too (COLMAP keeps it; needs "
    "--single-camera). On fountain-P11 it cut the camera-centre error from 0.057 to 0.033 %.",
)
@colmap_descriptors_option
@click.option(
    "--threads", type=int, default=-1, show_default=True, help="Mapper threads (-1 = all)."
)
@click.option(
    "--mapper-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Run the mapper again (up to this many times) while images stay unregistered.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Redo everything in OUTPUT (default: reuse features and matches already there).",
)
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: Path,
    image_list: Path | None,
    image_root: Path | None,
    features: Path | None,
    pairs_file: Path | None,
    exhaustive: bool,
    sequential: int | None,
    loop_stride: int,
    num_keypoints: int,
    max_dim: int,
    shifts: str,
    upscale: float,
    pool_scales: str,
    refine_matches: bool,
    model: Path | None,
    device: str,
    backend: str,
    precision: str,
    ratio: float,
    single_camera: bool,
    camera_model: str | None,
    camera_params: str | None,
    fixed_intrinsics: bool,
    refine_principal_point: bool,
    colmap_descriptors: str,
    threads: int,
    mapper_attempts: int,
    overwrite: bool,
) -> None:
    """Reconstruct a sparse COLMAP model from images.

    Extracts ASLFeat features, matches exhaustive pairs (or --sequential / --pairs),
    imports everything into OUTPUT/database.db, verifies the matches and runs pycolmap's
    incremental mapper. The largest model is written to OUTPUT/sparse (binary) and
    OUTPUT/sparse_text (text; not written for names with spaces or line breaks, which
    COLMAP's text format cannot hold); its statistics are printed to stdout. Exits with
    status 1 when the mapper builds no model.
    """
    from ..extraction import find_images
    from ..matching import MatchOptions
    from ..outputs import prepare_output_dir
    from ..pairs import make_pairs
    from ..reconstruct import (
        configure_colmap_logging,
        reconstruct_from_features,
        run_reconstruction,
    )

    quiet = quiet_flag(ctx)
    verbose = logging.getLogger("aslfeat_cli").getEffectiveLevel() <= logging.DEBUG
    if not inputs and image_list is None:
        raise click.UsageError("give image files or folders, or --image-list")
    pool = checked_pool_scales(pool_scales, upscale)
    check_refine_matches(refine_matches, upscale, pool_scales=pool)
    if refine_matches and features is not None:
        raise click.UsageError(
            "--refine-matches needs the network's descriptor maps: extract here (drop --features)"
        )
    camera = checked_camera(camera_model, camera_params, fixed_intrinsics, refine_principal_point)
    if camera is not None:
        camera.check_shared(single_camera)
    prepare_output_dir(output)  # before any work
    images = find_images(list(inputs), image_list, image_root)
    names = [name for _, name in images]
    if len(images) < 2:
        raise UserError("reconstruction needs at least two images")
    if pairs_file is None and sequential is None:
        exhaustive = True
    pairs = make_pairs(names, pairs_file, exhaustive, sequential, loop_stride)
    options = MatchOptions(ratio=None if ratio >= 1 else ratio)
    configure_colmap_logging(verbose and not quiet)
    common = dict(
        pairs=pairs,
        match_options=options,
        single_camera=single_camera,
        overwrite=overwrite,
        progress=not quiet,
        num_threads=threads,
        attempts=mapper_attempts,
        colmap_descriptors=colmap_descriptors,
        camera=camera,
    )
    if features is not None:
        stats = reconstruct_from_features(images, features, output, **common)
    else:
        from ..extractor import Extractor

        extractor = Extractor(
            model=model,
            num_keypoints=num_keypoints,
            max_dim=max_dim,
            shifts=int(shifts),
            upscale=upscale,
            pool_scales=pool,
            device=device,
            backend=backend,
            precision=precision,
        )
        stats = run_reconstruction(
            images, output, extractor, refine_matches=refine_matches, **common
        )
    click.echo(stats.table())
    if stats.model_path is None:
        raise UserError(
            f"the mapper built no model from {len(images)} image(s) "
            f"({stats.verified_pairs} verified pair(s)): are the images of one scene?"
        )
