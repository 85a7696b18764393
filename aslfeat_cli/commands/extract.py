"""`aslfeat extract`: keypoints and descriptors for images, to hloc HDF5 or a COLMAP database."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import UserError
from ..sharding import Shard, shard_option
from ._options import (
    FiniteFloat,
    backend_options,
    camera_options,
    checked_camera,
    checked_pool_scales,
    colmap_descriptors_option,
    device_option,
    image_list_option,
    image_root_option,
    model_option,
    num_keypoints_option,
    pool_scales_option,
    quiet_flag,
    ray_options,
    shifts_option,
    upscale_option,
    verbosity_options,
)

logger = logging.getLogger(__name__)


def _check_nms(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 0 or (value > 1 and value % 2 == 0):
        raise click.BadParameter("must be 0 or 1 (off) or an odd window size like 3 or 5")
    return value


@click.command(
    "extract",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat extract images/ -o features.h5
  aslfeat extract images/ -o database.db --single-camera
  aslfeat extract --image-list list.txt --image-root images/ -o feats.h5 --max-dim 1600
  aslfeat extract images/ -o features.h5 --backend onnxruntime --precision fp32
  aslfeat extract images/ -o features.h5 --upscale 2  # more precise, 4-5x the time
  aslfeat extract images/ -o features.h5 --upscale 2 --pool-scales 1,0.5  # robust to zoom
  aslfeat extract images/ -o part-3.h5 --shard 3/8    # then: aslfeat merge part-*.h5 -o f.h5
  aslfeat extract images/ -o features.h5 --ray auto   # on a running Ray cluster
""",
)
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Features file (.h5, hloc layout) or COLMAP database (.db).",
)
@image_list_option
@image_root_option
@num_keypoints_option
@click.option(
    "--score-threshold",
    type=FiniteFloat(),
    default=0.5,
    show_default=True,
    help="Keep peaks whose detection score is above this (the official setting).",
)
@click.option(
    "--edge-threshold",
    type=FiniteFloat(min=0),
    default=10.0,
    show_default=True,
    help="Reject edge-like peaks (Hessian ratio, as in the paper); 0 = off.",
)
@click.option(
    "--nms-size",
    type=int,
    default=3,
    show_default=True,
    callback=_check_nms,
    help="Non-maximum suppression window (odd; 0 = off).",
)
@click.option(
    "--max-dim",
    type=click.IntRange(min=16),
    default=None,
    help="Downscale images so the long side fits; keypoints stay in original pixels. "
    "Without it images above 2 megapixels are downscaled to 2 MP (notice printed once). "
    "Inputs above 1.6 MP run in overlapping tiles: peak memory stays under 2 GB with the "
    "default, about 2.7 GB for 12 MP uncapped.",
)
@click.option("--multi-scale", is_flag=True, help="Detect on an image pyramid (slower).")
@shifts_option
@upscale_option
@pool_scales_option
@model_option
@device_option
@backend_options
@click.option(
    "--fp16",
    is_flag=True,
    help="Same as --precision fp16: float16 backbone on onnxruntime, for CUDA GPUs "
    "(keypoints within 0.5 px of float32).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["h5", "colmap"]),
    default=None,
    help="Output format (default: colmap for a .db output, else h5).",
)
@click.option(
    "--single-camera", is_flag=True, help="COLMAP: all images share one camera (one size)."
)
@camera_options
@colmap_descriptors_option
@click.option(
    "--overwrite",
    is_flag=True,
    help="Extract images already in the output again (h5: their entries are replaced; "
    "colmap: a new database is started). Default: resume, skipping them.",
)
@click.option(
    "--descriptor-dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage type of descriptors in the HDF5 file.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Image decoding threads (default: min(4, CPUs - 1)).",
)
@click.option(
    "--streams",
    type=click.IntRange(min=1, max=8),
    default=None,
    help="OpenVINO: images of up to 0.5 MP run this many at once, each on its share of the "
    "threads (default: 2 on CPUs with 2+ cores; 1 = one at a time). The first larger image "
    "switches the run to one at a time, so the memory bound of large photos holds.",
)
@shard_option
@ray_options
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: Path,
    image_list: Path | None,
    image_root: Path | None,
    num_keypoints: int,
    score_threshold: float,
    edge_threshold: float,
    nms_size: int,
    max_dim: int | None,
    multi_scale: bool,
    shifts: str,
    upscale: float,
    pool_scales: str,
    model: Path | None,
    device: str,
    backend: str,
    precision: str,
    fp16: bool,
    fmt: str | None,
    single_camera: bool,
    camera_model: str | None,
    camera_params: str | None,
    colmap_descriptors: str,
    overwrite: bool,
    descriptor_dtype: str,
    workers: int | None,
    streams: int | None,
    shard: Shard | None,
    ray_address: str | None,
    ray_actors: int | None,
    ray_threads: int,
) -> None:
    """Extract ASLFeat keypoints and descriptors from images.

    INPUTS are image files and folders (searched recursively for common image extensions,
    any letter case). Image names in the output are paths relative to the image root, with
    '/'. Existing outputs are resumed: images already in them are skipped.

    EXIF orientation is not applied: like hloc and COLMAP, keypoints refer to the pixels as
    stored in the file.
    """
    import numpy as np

    from ..extraction import default_streams, find_images, run_extraction

    quiet = quiet_flag(ctx)
    if not inputs and image_list is None:
        raise click.UsageError("give image files or folders, or --image-list")
    if fmt is None:
        fmt = "colmap" if output.suffix.lower() == ".db" else "h5"
    source = ctx.get_parameter_source
    if single_camera and fmt != "colmap":
        raise click.BadParameter("only applies to --format colmap", param_hint="--single-camera")
    camera = checked_camera(camera_model, camera_params)
    if camera is not None and fmt != "colmap":
        raise click.BadParameter(
            "only applies to --format colmap", param_hint="--camera-model/--camera-params"
        )
    if fmt != "colmap" and colmap_descriptors != "raw":
        raise click.BadParameter(
            "only applies to --format colmap", param_hint="--colmap-descriptors"
        )
    if fmt == "colmap" and source("descriptor_dtype") == click.core.ParameterSource.COMMANDLINE:
        raise click.BadParameter(
            "only applies to --format h5 (COLMAP stores float32)", param_hint="--descriptor-dtype"
        )

    if ray_address is None and (
        ray_actors is not None or source("ray_threads").name == "COMMANDLINE"
    ):
        raise click.BadParameter("only applies with --ray", param_hint="--ray-actors/--ray-threads")
    if ray_address is not None and fmt != "h5":
        raise click.BadParameter(
            "writes HDF5 (then `aslfeat colmap` imports it into a database)", param_hint="--ray"
        )
    if shard is not None and fmt != "h5":
        raise click.BadParameter(
            "writes HDF5 shards (merge them with `aslfeat merge`, then `aslfeat colmap`)",
            param_hint="--shard",
        )
    if fp16:
        if precision not in ("auto", "fp16"):
            raise click.BadParameter(f"contradicts --precision {precision}", param_hint="--fp16")
        precision = "fp16"

    pool = checked_pool_scales(pool_scales, upscale, multi_scale)
    images = find_images(list(inputs), image_list, image_root)
    if shard is not None:
        total = len(images)
        images = shard.select(images, key=lambda item: item[1])
        logger.info("shard %s: %d of %d image(s)", shard, len(images), total)
    extractor_kwargs = dict(
        model=model,
        num_keypoints=num_keypoints,
        score_threshold=score_threshold,
        edge_threshold=edge_threshold,
        nms_size=nms_size,
        multi_scale=multi_scale,
        shifts=int(shifts),
        upscale=upscale,
        pool_scales=pool,
        max_dim=max_dim,
        device=device,
        backend=backend,
        precision=precision,
    )
    if ray_address is not None:
        summary = _extract_on_ray(
            images, output, extractor_kwargs, ray_address, ray_actors, ray_threads,
            overwrite, descriptor_dtype, workers, quiet,
        )  # fmt: skip
        _report(summary, quiet, len(images))
        return
    extractor = _make_extractor(**extractor_kwargs)
    # open_backend logs the device notice ("aslfeat runs on openvino ... on cpu, bfloat16 ...").
    logger.info("%d image(s) -> %s (%s)", len(images), output, fmt)
    summary = run_extraction(
        images,
        output,
        extractor,
        fmt=fmt,
        overwrite=overwrite,
        descriptor_dtype=np.dtype(descriptor_dtype),
        single_camera=single_camera,
        camera=camera,
        progress=not quiet,
        workers=workers,
        colmap_descriptors=colmap_descriptors,
        shard=str(shard) if shard is not None else None,
        streams=streams or default_streams(),
    )
    _report(summary, quiet, len(images))


def _report(summary, quiet: bool, n_images: int) -> None:  # noqa: ANN001
    """The summary line (and failures) on stderr; exit status 1 when an image failed."""
    if not quiet or summary.n_failed:
        click.echo(summary.format(), err=True)
    if summary.n_failed:
        raise UserError(f"{summary.n_failed} of {n_images} image(s) failed (listed above)")


def _extract_on_ray(  # noqa: ANN202, PLR0913
    images, output, extractor_kwargs, address, actors, threads, overwrite, dtype, workers, quiet
):  # noqa: ANN001
    """extract --ray: the same job on a Ray actor pool (aslfeat_cli.integrations.ray_cluster)."""
    from ..integrations.ray_cluster import RayOptions, ray_extract

    return ray_extract(
        images,
        output,
        extractor_kwargs,
        RayOptions(address=address, actors=actors, threads=threads),
        overwrite=overwrite,
        descriptor_dtype=dtype,
        workers=workers or 1,
        progress=not quiet,
    )


def _make_extractor(**kwargs):  # noqa: ANN003, ANN202
    """Build the Extractor; problems with the model file become one-line UserErrors."""
    from ..extractor import Extractor

    try:
        return Extractor(**kwargs)
    except ValueError as exc:
        raise UserError(" ".join(str(exc).split())) from None


def _device_line(extractor) -> str:  # noqa: ANN001
    """'CPU: openvino 2026.4.1 on cpu, bfloat16 (AMD EPYC ...)' or 'CUDA: onnxruntime ...'."""
    return f"{extractor.device.upper()}: {extractor.session.describe()}"
