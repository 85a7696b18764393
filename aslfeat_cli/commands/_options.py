"""Click options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from ..session import DEVICES

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

colmap_descriptors_option = click.option(
    "--colmap-descriptors",
    type=click.Choice(["raw", "aliked"]),
    default="raw",
    show_default=True,
    help="How descriptors are typed in the COLMAP database (bit-exact float32 both ways). "
    "raw: for aslfeat match only. aliked: typed ALIKED_N16ROT so an ONNX-enabled COLMAP "
    "matches them itself (ALIKED_BRUTEFORCE with --AlikedMatching.brute_force_min_cossim "
    "0.5; never LightGlue).",
)
