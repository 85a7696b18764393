"""`aslfeat colmap`: import features and matches into a COLMAP database (as hloc does)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import UserError
from ._options import (
    FiniteFloat,
    camera_options,
    checked_camera,
    colmap_descriptors_option,
    verbosity_options,
)
from .pairs import pair_mode_options, quiet_flag

logger = logging.getLogger(__name__)


@click.command(
    "colmap",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat colmap features.h5 matches.h5 -d database.db --image-dir images/
  aslfeat colmap features.h5 matches.h5 -d database.db --pairs pairs.txt --single-camera
  aslfeat colmap features.h5 matches.h5 -d database.db --single-camera \\
      --camera-model PINHOLE --camera-params 1380,1382,760.6,503.7
  colmap mapper --database_path database.db --image_path images/ --output_path sparse/
""",
)
@click.argument("features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("matches", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-d",
    "--database",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="COLMAP database to create or extend.",
)
@pair_mode_options
@click.option(
    "--image-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Image folder (read for EXIF focal lengths only).",
)
@click.option("--single-camera", is_flag=True, help="All images share one camera (one size).")
@camera_options
@click.option(
    "--min-score",
    type=FiniteFloat(),
    default=None,
    help="Import only matches with a matching score at least this.",
)
@click.option(
    "--inliers-only",
    is_flag=True,
    help="Import only matches flagged by 'aslfeat match --verify' (when present).",
)
@colmap_descriptors_option
@click.option(
    "--skip-verification",
    is_flag=True,
    help="Do not run pycolmap's geometric verification afterwards.",
)
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    features: Path,
    matches: Path,
    database: Path,
    pairs_file: Path | None,
    exhaustive: bool,
    sequential: int | None,
    loop_stride: int,
    image_dir: Path | None,
    single_camera: bool,
    camera_model: str | None,
    camera_params: str | None,
    min_score: float | None,
    inliers_only: bool,
    colmap_descriptors: str,
    skip_verification: bool,
) -> None:
    """Import FEATURES and MATCHES (hloc HDF5 files) into a COLMAP database.

    Keypoints get COLMAP's +0.5 pixel shift; matches go to the raw matches table and then
    through pycolmap's two-view geometric verification, ready for the COLMAP mapper.
    Pairs default to every pair in MATCHES. Images already in the database with the same
    keypoints are reused; an image with other keypoints is refused before anything is
    written.
    """
    import h5py

    from .. import colmap_db, h5io
    from ..outputs import prepare_output_file
    from ..pairs import clean_pairs, make_pairs
    from ..reconstruct import configure_colmap_logging
    from ..settings import check_same_features

    quiet = quiet_flag(ctx)
    camera = checked_camera(camera_model, camera_params)
    configure_colmap_logging(logging.getLogger("aslfeat_cli").getEffectiveLevel() <= logging.DEBUG)
    names = h5io.list_names(features)
    if not names:
        raise UserError(f"{features}: holds no features")
    if pairs_file is None and not exhaustive and sequential is None:
        if loop_stride:
            raise UserError("--loop-stride only applies with --sequential")
        pairs = h5io.list_pairs(matches)
        if not pairs:
            raise UserError(f"{matches}: holds no matches")
    else:
        pairs = make_pairs(names, pairs_file, exhaustive, sequential, loop_stride)
    pairs = clean_pairs(pairs, names)
    used = sorted({n for pair in pairs for n in pair})
    # Every pair must be in the matches file, made from these features, before the database
    # is touched.
    with h5py.File(matches, "r") as fh, h5py.File(features, "r") as ffh:
        check_same_features(fh.attrs, ffh.attrs, matches, features)
        absent = [p for p in pairs if not h5io.has_pair(fh, *p)]
    if absent:
        raise UserError(
            f"{matches}: {len(absent)} pair(s) were not matched, e.g. {absent[0]}; "
            "run aslfeat match with the same pairs"
        )
    paths = {name: image_dir / name for name in used} if image_dir is not None else None
    prepare_output_file(database)  # one line for a folder or file in the way
    colmap_db.require_space(database, features, used, matches, pairs)
    if camera is not None:  # asked for: an existing database must hold those cameras
        colmap_db.check_cameras(database, camera)
    colmap_db.import_features(
        database, features, used, paths, single_camera, not quiet, colmap_descriptors, camera
    )
    written = colmap_db.import_matches(
        database, matches, pairs, min_score, inliers_only, progress=not quiet
    )
    verified = None
    if not skip_verification:
        verified = colmap_db.verify_matches(database, pairs, progress=not quiet)
    if not quiet:
        line = f"{len(used)} image(s), {written} new pair(s) of matches in {database}"
        if verified is not None:
            line += f"; {verified} verified pair(s)"
        click.echo(line, err=True)
