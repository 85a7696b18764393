"""Click options shared by several commands, defined once."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS, DEVICES, PRECISIONS
from ..images import UPSCALE_RANGE


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
    help="ONNX model file (default: $ASLFEAT_MODEL when set, else the shipped "
    "weights/aslfeat.onnx).",
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


shifts_option = click.option(
    "--shifts",
    type=click.Choice(["1", "2", "4"]),
    default="1",
    show_default=True,
    help="Network passes of the image moved 0-3 px along the diagonal, score maps averaged: "
    "keypoints free of the coarse levels' 4-pixel lattice, more precise at 1 px, N times the "
    "network time. 1: the official single pass.",
)


upscale_option = click.option(
    "--upscale",
    type=click.FloatRange(*UPSCALE_RANGE),
    metavar="F",
    default=1.0,
    show_default=True,
    help="Run the network on images enlarged by this factor (keypoints stay in original "
    "pixels): more precise keypoints at 1 px, about F^2 times the network time. 2 is the "
    "most precise setting measured (README). 1: the image as given (official).",
)


pool_scales_option = click.option(
    "--pool-scales",
    metavar="S[,S...]",
    default="none",
    show_default=True,
    help="Also run the network on the image resized by these factors (0.25 to max(1, "
    "--upscale)) and pool their descriptors with the detection pass's: fewer wrong matches "
    "under zoom ('--upscale 2 --pool-scales 1,0.5': held-out MMA@1 0.55 -> 0.60), but a "
    "higher SfM reprojection error (README); one more network pass per factor. none: official.",
)


refine_matches_option = click.option(
    "--refine-matches",
    is_flag=True,
    help="Move matched keypoints to where their own image's descriptor map is most similar "
    "to their match's descriptor (one more network pass per image; needs --upscale 2 or "
    "more; not with --multi-scale or --pool-scales): held-out MMA@1 0.55 -> 0.67; SfM "
    "reprojection error lower on sacre_coeur, higher on fountain-P11, whose calibrated "
    "cameras find the refined points less precise (README).",
)


def check_refine_matches(
    refine: bool, upscale: float, multi_scale: bool = False, pool_scales: tuple[float, ...] = ()
) -> None:
    """``--refine-matches`` checked against ``--upscale``, ``--multi-scale`` and
    ``--pool-scales``, or a click error naming the option."""
    from ..match_refinement import check_refinement

    if refine:
        try:
            check_refinement(upscale, multi_scale, pool_scales)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--refine-matches") from None


def checked_pool_scales(text: str, upscale: float, multi_scale: bool = False) -> tuple[float, ...]:
    """``--pool-scales`` parsed and checked against ``--upscale`` and ``--multi-scale``, or a
    click error naming the option."""
    from ..scale_pooling import check_pool_scales, parse_pool_scales

    try:
        return check_pool_scales(parse_pool_scales(text), upscale, multi_scale)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--pool-scales") from None


def camera_options(function):  # noqa: ANN001, ANN201 (a click decorator)
    """--camera-model and --camera-params, for every command that writes COLMAP cameras."""
    function = click.option(
        "--camera-params",
        default=None,
        help="Known parameters of the camera model, comma-separated in COLMAP's order and "
        "pixel convention for the images as given (PINHOLE: fx,fy,cx,cy). Default: guessed "
        "(EXIF focal length or 1.2 x the long side, principal point at the centre).",
    )(function)
    return click.option(
        "--camera-model",
        default=None,
        help="COLMAP camera model of the images, e.g. PINHOLE or OPENCV (default: SIMPLE_RADIAL).",
    )(function)


def checked_camera(  # noqa: ANN201
    model: str | None, params: str | None, fixed: bool = False, refine_principal_point: bool = False
):
    """The :class:`~aslfeat_cli.cameras.CameraSpec` that --camera-model/--camera-params
    (and --fixed-intrinsics, --refine-principal-point) ask for, or None where none was given;
    UserError if invalid."""
    if model is None and params is None and not fixed and not refine_principal_point:
        return None
    from ..cameras import DEFAULT_MODEL, camera_spec

    return camera_spec(model or DEFAULT_MODEL, params, fixed, refine_principal_point)


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


class TopK(click.ParamType):
    """A keypoint count: an integer >= 0, or 'none'/'all' (= 0: every keypoint kept)."""

    name = "N|none"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 (click's signature)
        if isinstance(value, int):
            number = value
        elif str(value).strip().lower() in ("none", "all"):
            return 0
        else:
            try:
                number = int(value)
            except ValueError:
                self.fail(f"{value!r} is not a whole number or 'none'", param, ctx)
        if number < 0:
            self.fail(f"{number} is negative", param, ctx)
        return number


num_keypoints_option = click.option(
    "--num-keypoints",
    type=TopK(),
    default=5000,
    show_default=True,
    help="Keep the N best keypoints; 0 or 'none' keeps all above the score threshold.",
)


def quiet_flag(ctx: click.Context) -> bool:
    """Whether -q was given, to the group or after the subcommand."""
    return bool((ctx.find_object(dict) or {}).get("quiet"))


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # Merge with the group's -q/-v (ctx.obj is shared) and log the same way it does.
    from ..cli import configure_logging

    obj = ctx.find_object(dict)
    if obj is None:
        obj = ctx.ensure_object(dict)
    if param.name == "quiet":
        obj["quiet"] = bool(obj.get("quiet")) or bool(value)
    else:
        obj["verbose"] = max(int(obj.get("verbose") or 0), int(value or 0))
    configure_logging(int(obj.get("verbose") or 0), bool(obj.get("quiet")))


def verbosity_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """-q/--quiet and -v/--verbose after a subcommand, as the group's (``aslfeat -q ...``)."""
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_set_verbosity,
        help="More log output (-vv for debug); same as before the subcommand.",
    )(func)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_verbosity,
        help="Only errors; no progress bars or summary; same as before the subcommand.",
    )(func)


def ray_options(function):  # noqa: ANN001, ANN201 (a click decorator)
    """--ray [ADDRESS], --ray-actors, --ray-threads, for the commands that run on Ray."""
    function = click.option(
        "--ray-threads",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="With --ray: CPU threads per actor (each actor reserves that many CPUs).",
    )(function)
    function = click.option(
        "--ray-actors",
        type=click.IntRange(min=1),
        default=None,
        help="With --ray: number of actors (default: the cluster's GPUs, else CPUs / threads).",
    )(function)
    return click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Run on Ray (pip install 'aslfeat[ray]'): alone, a local instance (or "
        "$RAY_ADDRESS); 'auto' or ray://HOST:PORT joins a cluster. Workers write "
        "OUTPUT.parts/, merged into OUTPUT at the end; it must be on storage all nodes see.",
    )(function)
