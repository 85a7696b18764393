"""What every backend shares: the model file, its metadata contract and the dense-output API.

A backend loads an ASLFeat export and turns one grey image into the two dense maps; keypoint
selection (:mod:`aslfeat_cli.keypoints`) runs after it in numpy, the same for every backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UserError
from ..standardization import standardize

MODEL_FILE = "aslfeat.onnx"
INPUT = "image"
OUTPUTS = ("score_map", "descriptor_map")
REQUIRED_METADATA = ("variant", "descriptor_dim", "descriptor_stride", "min_size")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: --precision names -> the names recorded in feature files and notices.
PRECISION_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def default_model_path() -> Path:
    """The shipped model: $ASLFEAT_MODEL, else the package data ``aslfeat_cli/weights``
    (a wheel or ``pip install .``), else the repository's ``weights/`` (editable install)."""
    env = os.environ.get("ASLFEAT_MODEL")
    if env:
        return Path(env)
    candidates = [
        _packaged_model(),
        Path(__file__).resolve().parents[2] / "weights" / MODEL_FILE,
    ]
    for path in candidates:
        if path is not None and path.is_file():
            return path
    return candidates[-1]


def _packaged_model() -> Path | None:
    """The model installed as package data, as a file path (None when not installed so).

    Wheels install packages as plain folders, so the resource is a real file and the runtimes
    can memory-map it; zipped installs are not supported (no ``as_file`` copy to clean up).
    """
    from importlib import resources

    try:
        resource = resources.files("aslfeat_cli") / "weights" / MODEL_FILE
    except (ModuleNotFoundError, TypeError):
        return None
    return Path(str(resource)) if resource.is_file() else None


def model_file(model: str | Path | None) -> Path:
    """``model`` (or the shipped model) as a Path; UserError when there is no such file."""
    path = Path(model) if model is not None else default_model_path()
    if not path.is_file():
        hint = "" if model is not None else " (run `make export` to build the shipped model)"
        raise UserError(f"model file not found: {path}{hint}")
    return path


def check_contract(path: Path, metadata: dict[str, str], output_names: list[str]) -> None:
    """UserError unless the model has the aslfeat metadata keys and outputs (README contract)."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing or tuple(output_names) != OUTPUTS:
        raise UserError(f"{path}: an ONNX model, but not an aslfeat export (metadata or outputs)")


def load_onnx(path: Path) -> Any:
    """The ``onnx.ModelProto`` at ``path`` (the caller has imported onnx); UserError in one line
    when the file is not one."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not a valid ONNX model ({e.__class__.__name__})") from e


def invalid_model_error(path: Path, exc: BaseException) -> UserError:
    """The one-line error for a file a runtime could not read as a model."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    return UserError(f"{path}: not a valid ONNX model ({first[:200]})")


class Backend(Protocol):
    """An ASLFeat model loaded by one runtime, reused for every image."""

    name: str  # "onnxruntime" or "openvino"
    path: Path
    metadata: dict[str, str]
    precision: str  # "float32", "bfloat16" or "float16"

    @property
    def device(self) -> str:
        """'cpu' or 'cuda': where the network really runs."""

    #: True when the standardisation was taken out of the graph (:mod:`..standardization`):
    #: run_network then takes standardised pixels, and large images may run in tiles.
    standardized_input: bool

    def run(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score map (H, W) and descriptor map (H/4, W/4, D) for one (H, W) float32 image
        (0..255). The descriptor map may be a strided view (keypoints.py only gathers from it).
        """

    def run_network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on one (H, W) float32 input: standardised pixels when
        ``standardized_input``, else raw 0..255 (what :meth:`run` passes)."""

    def describe(self) -> str:
        """The one-line device notice: backend, version, device and precision."""

    def lanes(self, count: int) -> list[Backend]:
        """Up to ``count`` views of this model that may run at the same time, one per thread,
        each on its share of the threads (OpenVINO: a ``count``-stream compile, one infer
        request per stream); ``[self]`` where the runtime gains nothing from it."""


class ModelInfo:
    """Metadata helpers and :meth:`run`, shared by the backends (``self.metadata`` is the ONNX
    metadata; a backend defines ``run_network`` and ``standardized_input``)."""

    metadata: dict[str, str]
    standardized_input: bool

    def run(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score map and descriptor map of one (H, W) grayscale image (0..255)."""
        x = standardize(gray) if self.standardized_input else gray
        return self.run_network(x)  # type: ignore[attr-defined]

    @property
    def min_size(self) -> int:
        return int(self.metadata.get("min_size", 16))

    @property
    def stride(self) -> int:
        return int(self.metadata.get("descriptor_stride", 4))

    def detection_defaults(self) -> dict[str, float]:
        return json.loads(self.metadata.get("detection_defaults", "{}"))


def check_output_shapes(session: Backend) -> None:
    """Run the model once on a small blank image and check the output contract (README,
    "ONNX model contract"), so that a wrong export fails once at load with one line instead
    of once per image. Costs one inference at the minimum size (milliseconds)."""
    try:
        dim, stride = int(session.metadata["descriptor_dim"]), session.stride
        height, width = 2 * session.min_size, 3 * session.min_size  # unequal: catches a swap
    except ValueError as exc:
        raise UserError(f"{session.path}: bad aslfeat metadata ({exc})") from None
    try:
        score_map, descriptor_map = session.run(np.zeros((height, width), np.float32))
    except Exception as exc:  # the runtimes' own error types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{session.path}: the model fails on a test image ({first})") from None
    want_desc = (-(-height // stride), -(-width // stride), dim)
    got = (tuple(np.shape(score_map)), tuple(np.shape(descriptor_map)))
    if got != ((height, width), want_desc):
        raise UserError(
            f"{session.path}: outputs do not follow the aslfeat contract: for a {width}x{height} "
            f"image score_map is {got[0]} (want {(height, width)}) and descriptor_map "
            f"{got[1]} (want {want_desc})"
        )
