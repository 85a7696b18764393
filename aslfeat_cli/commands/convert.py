"""`aslfeat convert`: official TensorFlow checkpoint -> our weight file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ._options import verbosity_options
from ._torch import import_export_module


@click.command("convert")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Weight file to write (.pt).",
)
@verbosity_options
def command(checkpoint: Path, output: Path) -> None:
    """Convert an official ASLFeat TensorFlow checkpoint to an aslfeat weight file.

    CHECKPOINT is the path prefix (e.g. pretrained/aslfeatv2/model.ckpt-60000) or its folder.
    The variant (u, a, h or plain) is told from the checkpoint. No TensorFlow needed.

    \b
    Example:
      aslfeat convert pretrained/aslfeatv2/model.ckpt-60000 -o aslfeatv2.pt
      aslfeat export aslfeatv2.pt -o aslfeatv2.onnx
    """
    convert = import_export_module("convert")
    ckpt = import_export_module("tf_checkpoint")
    try:
        model = convert.convert_checkpoint(checkpoint)
    except ckpt.CheckpointError as e:
        raise UserError(str(e)) from e
    try:
        convert.save_weights(model, output, source=str(checkpoint))
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror}") from e
    click.echo(f"{output}: variant {model.variant}", err=True)
