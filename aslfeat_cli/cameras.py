"""The COLMAP camera that images get, and whether bundle adjustment may change it.

COLMAP's own options, with the same meaning: ``--camera-model`` is ``--ImageReader.camera_model``,
``--camera-params`` is ``--ImageReader.camera_params`` (the model's parameters in COLMAP's
order and pixel convention, for the images as given, e.g. ``fx,fy,cx,cy`` for PINHOLE) and
``--fixed-intrinsics`` turns off ``--Mapper.ba_refine_focal_length``,
``ba_refine_principal_point`` and ``ba_refine_extra_params``, and ``--refine-principal-point``
turns on ``--Mapper.ba_refine_principal_point`` (for one camera shared by all images only).

Without parameters, cameras follow COLMAP's image reader: the focal length from EXIF when the
image has it (a prior), else 1.2 x max(width, height), the principal point at the centre.
COLMAP never refines the principal point by default, so a calibrated camera's parameters
matter: on fountain-P11 the true principal point is 8-9 px from the centre, and that, not the
keypoints, set the camera-centre error of every feature tried until the known intrinsics were
given (README, "Structure from motion"). Where they are not known but all images share one
camera, refining the principal point finds it: on fountain-P11 (11 images) it moved to within
2.6 px of the true one and the camera error fell from 0.058 to 0.033 %. With a camera per image
it is not determined (on sacre_coeur the principal points moved by up to 200 px and a quarter
of the points were lost), so that is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UserError

DEFAULT_MODEL = "SIMPLE_RADIAL"
DEFAULT_FOCAL_FACTOR = 1.2  # COLMAP's ImageReaderOptions.default_focal_length_factor


@dataclass(frozen=True)
class CameraSpec:
    """Camera model, known parameters (None: guessed per image), ``fixed``: bundle
    adjustment keeps them, and ``refine_principal_point``: it refines the principal point too
    (COLMAP keeps it by default). Build it with :func:`camera_spec`, which checks it."""

    model: str = DEFAULT_MODEL
    params: tuple[float, ...] | None = None
    fixed: bool = False
    refine_principal_point: bool = False

    def create(self, pycolmap: Any, width: int, height: int, exif_focal: float | None) -> Any:
        """A new ``pycolmap.Camera`` (id 0) for an image of ``width`` x ``height``."""
        if self.params is not None:
            camera = pycolmap.Camera.create_from_model_name(0, self.model, 1.0, width, height)
            camera.params = list(self.params)
            camera.has_prior_focal_length = True
            return camera
        focal = exif_focal if exif_focal is not None else DEFAULT_FOCAL_FACTOR * max(width, height)
        camera = pycolmap.Camera.create_from_model_name(0, self.model, focal, width, height)
        camera.has_prior_focal_length = exif_focal is not None
        return camera

    def configure_mapper(self, options: Any) -> None:
        """Keep the intrinsics in ``options`` (``pycolmap.IncrementalPipelineOptions``)'s
        bundle adjustments when ``fixed``; refine the principal point there too when
        ``refine_principal_point``."""
        if self.fixed:
            options.ba_refine_focal_length = False
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
        elif self.refine_principal_point:
            options.ba_refine_principal_point = True

    def check_shared(self, single_camera: bool) -> None:
        """UserError when the principal point is to be refined but each image has its own
        camera: one image does not determine it."""
        if self.refine_principal_point and not single_camera:
            raise UserError(
                "--refine-principal-point needs --single-camera (one camera shared by all "
                "images; a camera per image does not determine its principal point)"
            )


def model_names(pycolmap: Any) -> list[str]:
    """COLMAP's camera model names."""
    return [name for name in pycolmap.CameraModelId.__members__ if name != "INVALID"]


def camera_spec(
    model: str = DEFAULT_MODEL,
    params: str | Sequence[float] | None = None,
    fixed: bool = False,
    refine_principal_point: bool = False,
) -> CameraSpec:
    """A checked :class:`CameraSpec`: a COLMAP model name, ``params`` as numbers or one
    comma-separated string with that model's count, ``fixed`` only with ``params`` and not
    with ``refine_principal_point``. Raises UserError (one line) otherwise."""
    from .colmap_db import _pycolmap

    pycolmap = _pycolmap()
    model = model.upper()
    names = model_names(pycolmap)
    if model not in names:
        raise UserError(f"unknown camera model {model!r}: use one of {', '.join(names)}")
    if fixed and refine_principal_point:
        raise UserError("--fixed-intrinsics keeps the principal point: drop one of them")
    if params is None:
        if fixed:
            raise UserError("--fixed-intrinsics needs --camera-params (nothing known to keep)")
        return CameraSpec(model, refine_principal_point=refine_principal_point)
    if isinstance(params, str):
        try:
            values = tuple(float(v) for v in params.replace(" ", "").split(","))
        except ValueError:
            raise UserError(
                f"--camera-params must be comma-separated numbers, got {params!r}"
            ) from None
    else:
        values = tuple(float(v) for v in params)
    probe = pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1)
    if len(values) != len(probe.params):
        raise UserError(
            f"camera model {model} has {len(probe.params)} parameters "
            f"({probe.params_info}), got {len(values)}"
        )
    return CameraSpec(model, values, fixed, refine_principal_point)
