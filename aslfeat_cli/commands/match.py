"""`aslfeat match`: mutual nearest-neighbour matching of a features file, to hloc matches."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..sharding import Shard, shard_option
from ._options import FiniteFloat, ray_options, verbosity_options
from .pairs import pair_mode_options, quiet_flag

logger = logging.getLogger(__name__)


@click.command(
    "match",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat match features.h5 -o matches.h5 --exhaustive
  aslfeat match features.h5 -o matches.h5 --pairs pairs.txt --ratio 0.9
  aslfeat match features.h5 -o matches.h5 --sequential 10 --verify fundamental
  aslfeat match database.db -o matches.h5 --exhaustive   # features from 'extract -o x.db'
  aslfeat match features.h5 -o m-0.h5 --exhaustive --shard 0/4   # then: aslfeat merge m-*.h5
  aslfeat match features.h5 -o matches.h5 --exhaustive --ray      # on a local Ray instance
""",
)
@click.argument("features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Matches file (hloc layout; matches0 int32, -1 = unmatched).",
)
@pair_mode_options
@click.option(
    "--ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Lowe's ratio test on L2 distances (e.g. 0.8), applied both ways. Default: off.",
)
@click.option(
    "--max-distance",
    type=click.FloatRange(0, 2, min_open=True),
    default=None,
    help="Reject matches whose L2 descriptor distance exceeds this (0..2). Default: off.",
)
@click.option(
    "--verify",
    type=click.Choice(["fundamental", "homography"]),
    default=None,
    help="Geometric verification with OpenCV's USAC MAGSAC++; stores an inliers0 mask.",
)
@click.option(
    "--verify-threshold",
    type=FiniteFloat(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="RANSAC threshold in pixels for --verify.",
)
@click.option(
    "--overwrite", is_flag=True, help="Start a new matches file (default: resume, skip pairs)."
)
@shard_option
@ray_options
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    features: Path,
    output: Path,
    pairs_file: Path | None,
    exhaustive: bool,
    sequential: int | None,
    loop_stride: int,
    ratio: float | None,
    max_distance: float | None,
    verify: str | None,
    verify_threshold: float,
    overwrite: bool,
    shard: Shard | None,
    ray_address: str | None,
    ray_actors: int | None,
    ray_threads: int,
) -> None:
    """Match the features of image pairs by mutual nearest neighbours.

    FEATURES is an hloc HDF5 file or a COLMAP database written by `aslfeat extract` (raw or
    aliked descriptors). Descriptors are L2-normalised; pairs already in OUTPUT are skipped,
    so an interrupted run resumes. A summary goes to stderr.
    """
    import tempfile

    from .. import colmap_db, h5io
    from ..matching import MatchOptions, match_pairs, pair_shard_key
    from ..pairs import make_pairs
    from ..verification import VerifyOptions

    quiet = quiet_flag(ctx)
    if colmap_db.is_database(features):
        # Read the database once into a temporary HDF5 file: the matcher's loader and cache
        # then work as for any features file.
        scratch = ctx.with_resource(tempfile.TemporaryDirectory(prefix="aslfeat-match-"))
        exported = Path(scratch) / "features.h5"
        colmap_db.export_features(features, exported)
        features = exported
    names = h5io.list_names(features)
    pairs = make_pairs(names, pairs_file, exhaustive, sequential, loop_stride)
    if shard is not None:
        total = len(pairs)
        pairs = shard.select(pairs, key=pair_shard_key)
        logger.info("shard %s: %d of %d pair(s)", shard, len(pairs), total)
    options = MatchOptions(ratio=ratio, max_distance=max_distance)
    verify_options = VerifyOptions(verify, verify_threshold) if verify else None
    if ray_address is None and (ray_actors is not None or ray_threads != 1):
        raise click.BadParameter("only applies with --ray", param_hint="--ray-actors/--ray-threads")
    if ray_address is not None:
        from ..integrations.ray_cluster import RayOptions, ray_match

        ray_options_ = RayOptions(address=ray_address, actors=ray_actors, threads=ray_threads)
        summary = ray_match(
            features, pairs, output, options, verify_options, ray_options_, overwrite, not quiet
        )
    else:
        summary = match_pairs(
            features,
            pairs,
            output,
            options,
            verify_options,
            overwrite=overwrite,
            progress=not quiet,
            shard=str(shard) if shard is not None else None,
        )
    if quiet:
        return
    line = (
        f"{summary.n_matched} pair(s) matched in {summary.seconds:.1f} s "
        f"({summary.pairs_per_second:.1f} pairs/s), mean {summary.mean_matches:.0f} matches"
    )
    if summary.total_inliers is not None and summary.n_matched:
        line += f", mean {summary.total_inliers / summary.n_matched:.0f} inliers"
    if summary.n_skipped:
        line += f"; {summary.n_skipped} already in {output}"
    click.echo(line, err=True)
