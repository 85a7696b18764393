"""The onnxruntime backend: session, provider (device) choice, float16 graph and IO binding."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import (
    DEVICES,
    INPUT,
    OUTPUTS,
    ModelInfo,
    check_contract,
    invalid_model_error,
    load_onnx,
    model_file,
)

logger = logging.getLogger(__name__)


def _import_onnxruntime():  # noqa: ANN202 (module)
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise UserError(
            "onnxruntime is not installed: pip install 'aslfeat[cpu]' (or [gpu] for CUDA)"
        ) from e
    return ort


def available_providers() -> list[str]:
    """onnxruntime's execution providers available in this installation."""
    return list(_import_onnxruntime().get_available_providers())


def choose_providers(device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda"), best first."""
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise UserError(
            "--device cuda: onnxruntime has no CUDA provider here (install aslfeat[gpu], "
            "i.e. onnxruntime-gpu, and the CUDA libraries)"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class ModelSession(ModelInfo):
    """One onnxruntime session over an ASLFeat ONNX file, reused for every image."""

    path: Path
    session: object
    metadata: dict[str, str] = field(default_factory=dict)
    precision: str = "float32"  # "float16" when opened with fp16=True (see half_precision)
    io_binding: bool = False  # bind inputs/outputs explicitly (default on CUDA)
    name: str = "onnxruntime"
    standardized_input: bool = False  # see base.Backend

    @property
    def device(self) -> str:
        """'cuda' when the session really runs on the CUDA provider, else 'cpu'."""
        return "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"

    def describe(self) -> str:
        """'onnxruntime 1.32.0 on cpu, float32 (CPUExecutionProvider)'."""
        version = _import_onnxruntime().__version__
        providers = ", ".join(self.session.get_providers())
        return f"onnxruntime {version} on {self.device}, {self.precision} ({providers})"

    def lanes(self, count: int) -> list[ModelSession]:
        """One lane: the session already uses every thread it was given."""
        return [self]

    def run_network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense outputs for one (H, W) float32 network input (see base.Backend)."""
        x = np.ascontiguousarray(x, dtype=np.float32)[None, None]
        if not self.io_binding:
            score_map, descriptor_map = self.session.run(list(OUTPUTS), {INPUT: x})
            return score_map, descriptor_map
        # IO binding: the image is copied to the device once, as one OrtValue, and the outputs
        # are written straight into host memory (keypoint selection runs in numpy).
        ort = _import_onnxruntime()
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(x, self.device, 0))
        for name in OUTPUTS:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        score_map, descriptor_map = (value.numpy() for value in binding.get_outputs())
        return score_map, descriptor_map


def _prepared_model(path: Path, fp16: bool) -> tuple[bytes | str, bool]:
    """What the session loads: the model without its standardisation (so large images can
    run in tiles) and, with ``fp16``, converted by :func:`.half_precision.to_float16`; and
    whether the standardisation was removed. Without the onnx package: the file as it is."""
    try:
        import onnx  # noqa: F401 (load_onnx needs it)
    except ImportError as e:
        if fp16:
            raise UserError("--fp16 needs the onnx package: pip install onnx") from e
        logger.debug("onnx is not installed: large images run whole (no tiles)")
        return str(path), False
    from ..half_precision import to_float16
    from ..standardization import remove_from_graph

    proto = load_onnx(path)
    standardized = remove_from_graph(proto)
    if fp16:
        try:
            proto = to_float16(proto)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from e
    return proto.SerializeToString(), standardized


def open_session(
    model: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    *,
    fp16: bool = False,
    io_binding: bool | None = None,
) -> ModelSession:
    """Open an ASLFeat ONNX model on ``device``; clear errors for missing or wrong files.

    ``fp16`` runs the backbone in float16 (meant for CUDA; on this project's CPU it measured
    within 6 % of float32's speed). ``io_binding`` defaults to on with CUDA.
    """
    ort = _import_onnxruntime()
    path = model_file(model)
    providers = choose_providers(device)
    options = ort.SessionOptions()
    # Image sizes vary between calls: the memory pattern only doubles peak memory then
    # (../shared/notes/measurements.md), for a 5-10% gain on repeated equal sizes.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source, standardized = _prepared_model(path, fp16)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise invalid_model_error(path, e) from e
    meta = dict(session.get_modelmeta().custom_metadata_map)
    check_contract(path, meta, [o.name for o in session.get_outputs()])
    result = ModelSession(path, session, meta, "float16" if fp16 else "float32")
    result.standardized_input = standardized
    result.io_binding = result.device == "cuda" if io_binding is None else io_binding
    if fp16 and result.device == "cpu":
        logger.warning("--fp16 on the CPU: about as fast as float32 there; it pays off on CUDA")
    return result
