"""`aslfeat pairs`: write an hloc-style pairs file (exhaustive or sequential)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import UserError
from ._options import quiet_flag, verbosity_options

logger = logging.getLogger(__name__)


def pair_mode_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The pair-selection options shared by `pairs`, `match` and `colmap`."""
    options = [
        click.option(
            "--pairs",
            "pairs_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Pairs file: one 'name0 name1' per line (hloc format).",
        ),
        click.option("--exhaustive", is_flag=True, help="Every pair of images."),
        click.option(
            "--sequential",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Ordered captures: each image with its next N (names in natural order).",
        ),
        click.option(
            "--loop-stride",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            metavar="S",
            help="With --sequential: every S-th image is a key frame, matched with all "
            "other key frames (loop closure).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def names_from_source(source: Path) -> list[str]:
    """Image names from a features file (.h5), an image list (text) or an image folder."""
    from .. import h5io
    from ..images import is_image_path
    from ..pairs import read_image_list

    if source.is_dir():
        from ..extraction import find_images

        return [name for _, name in find_images([source])]
    import h5py

    if h5py.is_hdf5(source):
        names = h5io.list_names(source)
        if not names:
            raise UserError(f"{source}: holds no features")
        return names
    if is_image_path(source):
        raise UserError(
            f"{source} is an image: give a folder of images, a features file or an image list"
        )
    return list(dict.fromkeys(read_image_list(source)))  # a name listed twice counts once


@click.command(
    "pairs",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat pairs features.h5 -o pairs.txt --exhaustive
  aslfeat pairs frames/ -o pairs.txt --sequential 10 --loop-stride 25
  aslfeat pairs image_list.txt -o pairs.txt --exhaustive
""",
)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pairs file to write.",
)
@click.option("--exhaustive", is_flag=True, help="Every pair of images.")
@click.option(
    "--sequential",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Ordered captures: each image with its next N (names in natural order).",
)
@click.option(
    "--loop-stride",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="S",
    help="With --sequential: every S-th image is a key frame, matched with all other key "
    "frames (loop closure).",
)
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    source: Path,
    output: Path,
    exhaustive: bool,
    sequential: int | None,
    loop_stride: int,
) -> None:
    """Write the image pairs to match, one 'name0 name1' per line.

    SOURCE is a features file (.h5), a text file listing image names (one per line) or a
    folder of images.
    """
    from ..outputs import prepare_output_file
    from ..pairs import clean_pairs, make_pairs, write_pairs

    prepare_output_file(output)
    names = names_from_source(source)
    pairs = clean_pairs(make_pairs(names, None, exhaustive, sequential, loop_stride))
    n = write_pairs(output, pairs)
    if not quiet_flag(ctx):
        click.echo(f"{n} pairs of {len(names)} images written to {output}", err=True)
