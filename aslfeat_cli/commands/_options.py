"""Click options shared by several commands, defined once."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..session import DEVICES


class FiniteFloat(click.FloatRange):
    """A float range that refuses nan and ±inf (``FloatRange`` alone lets them through:
    ``nan < 0`` is False, and an infinite threshold silently disables a test)."""

    name = "finite float"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 (click's signature)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


model_option = click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model file (default: the shipped weights/aslfeat.onnx).",
)

device_option = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="auto: CUDA when onnxruntime-gpu and a GPU are present, else CPU.",
)

image_list_option = click.option(
    "--image-list",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text file naming one image per line, relative to --image-root.",
)

image_root_option = click.option(
    "--image-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder that image names are relative to (default: the folder holding all inputs; "
    "for --image-list, the list's folder).",
)
