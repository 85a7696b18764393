"""Click options shared by several commands, defined once."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..backends import BACKENDS, DEVICES, PRECISIONS


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

backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Runtime for the network. auto: onnxruntime on CUDA when a GPU is there, else OpenVINO "
    "when installed (pip install 'aslfeat[openvino]'), else onnxruntime on the CPU.",
)

precision_option = click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: bf16 on OpenVINO where the CPU has native bfloat16 (AVX512_BF16/AMX), else "
    "fp32. bf16: OpenVINO only (96-99 % of keypoints within 0.5 px of fp32). fp16: "
    "onnxruntime, float16 backbone, for CUDA GPUs (same as --fp16).",
)


def backend_options(function):  # noqa: ANN001, ANN201 (a click decorator)
    """--backend and --precision, for every command that extracts features."""
    return backend_option(precision_option(function))


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
