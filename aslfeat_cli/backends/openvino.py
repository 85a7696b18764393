"""The OpenVINO backend: the ONNX export made OpenVINO-ready, compiled once for the CPU.

The graph goes through :func:`aslfeat_cli.openvino_graph.to_openvino` at load time (OpenVINO
cannot read ONNX ``DeformConv``), the deformable layers get ``bilinear_interpolation_pad`` (see
that module), and the model is compiled with dynamic input shapes (one compilation for every
image size) and, by default, OpenVINO's model cache so that later runs start faster.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .base import (
    INPUT,
    OUTPUTS,
    PRECISION_NAMES,
    ModelInfo,
    check_contract,
    invalid_model_error,
    load_onnx,
    model_file,
)

logger = logging.getLogger(__name__)

#: --precision -> OpenVINO's INFERENCE_PRECISION_HINT.
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def import_openvino():  # noqa: ANN201 (module)
    """The openvino module, or UserError naming the extra that installs it."""
    try:
        import openvino
    except ImportError as e:
        raise UserError("openvino is not installed: pip install 'aslfeat[openvino]'") from e
    return openvino


def available() -> bool:
    """Whether OpenVINO can be imported here (``--backend auto`` prefers it on CPUs)."""
    try:
        import_openvino()
    except UserError:
        return False
    return True


def cpu_has_bf16() -> bool:
    """Whether OpenVINO reports native bfloat16 on this CPU (AVX512_BF16 or AMX)."""
    core = import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_cache_dir() -> Path | None:
    """Where compiled models are cached: $ASLFEAT_CACHE_DIR (empty: no cache), else
    $XDG_CACHE_HOME/aslfeat/openvino (default ~/.cache/aslfeat/openvino)."""
    env = os.environ.get("ASLFEAT_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aslfeat" / "openvino"


@dataclass
class OpenVinoModel(ModelInfo):
    """One compiled OpenVINO model and its infer request, reused for every image."""

    path: Path
    compiled: Any
    metadata: dict[str, str] = field(default_factory=dict)
    precision: str = "float32"
    descriptor_layout: str = "chw"  # "chw" when openvino_graph removed the final Transpose
    name: str = "openvino"
    request: Any = None
    streams: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # open_openvino's, for lanes()
    standardized_input: bool = False  # see base.Backend

    def __post_init__(self) -> None:
        if self.request is None:
            self.request = self.compiled.create_infer_request()

    def lanes(self, count: int) -> list[OpenVinoModel]:
        """``count`` views of one ``count``-stream compile of this model, each with its own
        infer request (compiled here, from the model cache when it holds it)."""
        if count <= 1:
            return [self]
        compiled = self if self.streams == count else open_openvino(**self.options, streams=count)
        return [compiled] + [
            dataclasses.replace(compiled, request=compiled.compiled.create_infer_request())
            for _ in range(count - 1)
        ]

    @property
    def device(self) -> str:
        return "cpu"

    def describe(self) -> str:
        """'openvino 2026.4.1 on cpu, bfloat16 (AMD EPYC ...)'."""
        ov = import_openvino()
        cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
        return f"openvino {ov.__version__.split('-')[0]} on cpu, {self.precision} ({cpu})"

    def run_network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense outputs for one (H, W) float32 network input (see base.Backend)."""
        x = np.ascontiguousarray(x, dtype=np.float32)[None, None]
        results = self.request.infer({INPUT: x})  # copies the outputs (share_outputs=False)
        score_map = results[self.compiled.output(OUTPUTS[0])]
        descriptor_map = results[self.compiled.output(OUTPUTS[1])]
        if self.descriptor_layout == "chw":
            descriptor_map = descriptor_map.transpose(1, 2, 0)  # a view: (h, w, D)
        return score_map, descriptor_map


def _read_model(core: Any, path: Path) -> tuple[Any, dict[str, str], str, bool]:
    """The OpenVINO model of the ONNX file at ``path``, its metadata, descriptor layout and
    whether the standardisation was taken out of the graph (for tiles)."""
    try:
        import onnx  # noqa: F401 (load_onnx needs it)
    except ImportError as e:
        raise UserError("--backend openvino needs the onnx package: pip install onnx") from e
    from ..openvino_graph import LAYOUT_KEY, to_openvino
    from ..standardization import remove_from_graph

    proto = load_onnx(path)
    metadata = {p.key: p.value for p in proto.metadata_props}
    check_contract(path, metadata, [o.name for o in proto.graph.output])
    standardized = remove_from_graph(proto)
    try:
        ready = to_openvino(proto)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from e
    layout = next(p.value for p in ready.metadata_props if p.key == LAYOUT_KEY)
    try:
        model = core.read_model(ready.SerializeToString(), b"")
    except Exception as e:  # OpenVINO raises RuntimeError with a long trace
        raise invalid_model_error(path, e) from e
    for op in model.get_ops():
        if op.get_type_name() == "DeformableConvolution":
            # The ONNX reader drops this attribute (openvino_graph says why it matters).
            op.set_attribute("bilinear_interpolation_pad", True)
    return model, metadata, layout, standardized


def open_openvino(
    model: str | Path | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    *,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    static_shape: tuple[int, int] | None = None,
    streams: int = 1,
) -> OpenVinoModel:
    """Compile an ASLFeat ONNX model for OpenVINO's CPU plugin.

    ``precision`` is "fp32" or "bf16" (OpenVINO's inference precision; bf16 needs a CPU with
    native bfloat16, see :func:`cpu_has_bf16`). ``cache`` keeps compiled models in
    ``cache_dir`` (default :func:`default_cache_dir`). ``static_shape`` (H, W) compiles for one
    image size only (for benchmarks: dynamic shapes measured as fast). ``streams`` > 1 compiles
    for throughput: that many images run at once, one per :meth:`OpenVinoModel.lanes` view,
    the threads split between them (a single image then runs on its share only).
    """
    if precision not in _HINTS:
        raise UserError(
            f"--precision {precision} is not available with OpenVINO (choose fp32 or bf16; "
            "float16 made score plateaus there: about 25 % more keypoints)"
        )
    ov = import_openvino()
    path = model_file(model)
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise UserError("--precision bf16: this CPU has no native bfloat16 (AVX512_BF16 or AMX)")
    network, metadata, layout, standardized = _read_model(core, path)
    if static_shape is not None:
        network.reshape({INPUT: [1, 1, *static_shape]})
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
    }
    if streams > 1:
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams})
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
        # OpenVINO pins its threads to the first cores: two 1-thread processes (Ray actors,
        # parallel jobs) then share core 0 and each runs at half speed (measured: 565 vs
        # 270 ms per 640x480 image on 2 cores). With an explicit thread count, let the OS
        # place them.
        config["ENABLE_CPU_PINNING"] = False
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache and directory is not None:
        config["CACHE_DIR"] = str(directory)
    try:
        compiled = core.compile_model(network, "CPU", config)
    except Exception as e:  # RuntimeError from the plugin
        raise invalid_model_error(path, e) from e
    options = {"model": path, "precision": precision, "threads": threads}
    options.update(cache_dir=cache_dir, cache=cache, static_shape=static_shape)
    return OpenVinoModel(
        path,
        compiled,
        metadata,
        PRECISION_NAMES[precision],
        layout,
        streams=max(1, streams),
        options=options,
        standardized_input=standardized,
    )
