"""`aslfeat export`: weight file -> ONNX model for onnxruntime."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ._options import verbosity_options
from ._torch import import_export_module


@click.command("export")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write.",
)
@click.option(
    "--deform",
    type=click.Choice(["deformconv", "gridsample"]),
    default="deformconv",
    show_default=True,
    help="Deformable convolutions as ONNX DeformConv (fast on CPU) or GridSample+Conv "
    "(for execution providers without DeformConv).",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Compare onnxruntime with PyTorch on a test image after export.",
)
@verbosity_options
def command(weights: Path, output: Path, deform: str, check: bool) -> None:
    """Export a weight file (from training or `aslfeat convert`) to ONNX.

    \b
    Example:
      aslfeat export weights/aslfeat.pt -o weights/aslfeat.onnx
    """
    exporter = import_export_module("export_onnx")
    convert = import_export_module("convert")
    try:
        model = convert.load_weights(weights)
    except ValueError as e:
        raise UserError(str(e)) from e
    try:
        exporter.export_model(model, output, deform, weights=weights)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror}") from e
    if check:
        import numpy as np

        image = np.random.default_rng(0).uniform(0, 255, (97, 130)).astype(np.float32)
        errors = exporter.compare_with_torch(model, output, image)
        worst = max(errors.values())
        if worst > 1e-4:
            raise UserError(f"{output}: onnxruntime differs from PyTorch (rel. error {worst:.1e})")
        click.echo(
            f"{output}: written, onnxruntime matches PyTorch (rel. error {worst:.1e})", err=True
        )
