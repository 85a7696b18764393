"""The `aslfeat` command line: a click group that only wires the library modules together.

Each subcommand lives in ``aslfeat_cli/commands/<name>.py`` and is imported only when it is
run, so ``aslfeat --help`` stays fast and the runtime path never imports torch.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from . import __version__

# name -> (module under aslfeat_cli.commands, one-line help shown by `aslfeat --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("extract", "Extract keypoints and descriptors to HDF5 (hloc) or COLMAP."),
    "pairs": ("pairs", "Write an image pairs file (exhaustive, sequential, from a list)."),
    "match": ("match", "Match features between image pairs (mutual nearest neighbours)."),
    "merge": ("merge", "Merge shard files (extract/match --shard K/N, Ray) into one file."),
    "colmap": ("colmap", "Import features and matches into a COLMAP database."),
    "reconstruct": ("reconstruct", "Images to a COLMAP model: extract, match, map."),
    "evaluate": ("evaluate", "Evaluate features on homography pairs (HPatches protocol)."),
    "show": ("show", "Draw keypoints and matches to PNG pictures."),
    "info": ("info", "Print the device, onnxruntime providers and the model's metadata."),
    "convert": ("convert", "Convert an official TensorFlow checkpoint to a weight file."),
    "export": ("export", "Export a weight file to ONNX (needs the export extra)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"aslfeat_cli.commands.{COMMANDS[cmd_name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table above, so `--help` imports no subcommand module.
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aslfeat")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """ASLFeat local features for COLMAP and hloc, on onnxruntime.

    \b
    Examples:
      aslfeat extract images/ -o feats.h5
      aslfeat match feats.h5 -o matches.h5 --exhaustive
      aslfeat reconstruct images/ -o sfm/
    """
    obj = ctx.ensure_object(dict)
    obj["quiet"], obj["verbose"] = quiet, verbose
    configure_logging(verbose, quiet)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: our notices at INFO by default; other libraries only from -vv on.

    The group's -q/-v and the same options given after a subcommand both end up here.
    """
    ours = logging.ERROR if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    for name in ("aslfeat_cli", "aslfeat_export", "aslfeat_training"):
        logging.getLogger(name).setLevel(ours)


def main() -> None:
    """Console entry point."""
    cli(prog_name="aslfeat")


if __name__ == "__main__":
    main()
