"""`aslfeat merge`: shard files of features or of matches into one file."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import quiet_flag, verbosity_options


@click.command(
    "merge",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat merge part-*.h5 -o features.h5          # from extract --shard K/N
  aslfeat merge matches-*.h5 -o matches.h5        # from match --shard K/N
  aslfeat merge features.h5 new-*.h5 -o features.h5   # add shards to an existing file
""",
)
@click.argument(
    "shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Merged file (hloc layout, like each shard).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace OUTPUT when it exists and is not one of SHARDS."
)
@click.option(
    "--partial",
    is_flag=True,
    help="Merge --shard K/N files even when some K are missing (default: refused).",
)
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context, shards: tuple[Path, ...], output: Path, overwrite: bool, partial: bool
) -> None:
    """Merge SHARDS (all features files, or all matches files) into OUTPUT.

    The shards must come from one run: same model and settings (matches: the same features
    file) and, for --shard K/N files, every K. An image or pair in two shards must be the same
    in both. Entries are copied byte for byte; OUTPUT is replaced atomically at the end.
    """
    from ..merge import merge_files

    summary = merge_files(
        list(shards), output, overwrite=overwrite, partial=partial, progress=not quiet_flag(ctx)
    )
    if not quiet_flag(ctx):
        click.echo(summary.format(output), err=True)
