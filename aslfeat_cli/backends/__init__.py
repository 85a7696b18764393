"""Backends that run the ASLFeat network: onnxruntime (CPU or CUDA) and OpenVINO (CPU).

:func:`open_backend` picks one from ``backend``, ``precision`` and ``device``:

* ``backend="auto"``: onnxruntime on CUDA when a GPU is there (and ``device`` allows it), else
  OpenVINO when it is installed, else onnxruntime on the CPU;
* ``precision="auto"``: on OpenVINO bfloat16 when the CPU has native bfloat16 (OpenVINO's
  ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``: AVX512_BF16 or AMX), else float32; on
  onnxruntime float32 (float16 only when asked for: ``fp16``, meant for CUDA).

Whatever runs the network, its two dense outputs go through the same keypoint selection
(:mod:`aslfeat_cli.keypoints`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from .base import (
    BACKENDS,
    DEVICES,
    PRECISIONS,
    Backend,
    check_output_shapes,
    default_model_path,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "DEVICES",
    "PRECISIONS",
    "Backend",
    "default_model_path",
    "open_backend",
    "resolve",
]


def _ort_has_cuda() -> bool:
    from .onnxruntime import available_providers

    try:
        return "CUDAExecutionProvider" in available_providers()
    except UserError:  # onnxruntime missing: OpenVINO may still run
        return False


def resolve(backend: str, precision: str, device: str) -> tuple[str, str]:
    """The concrete (backend, precision) for the user's choices; UserError for impossible ones.

    For example ``("auto", "auto", "auto")`` gives ``("openvino", "bf16")`` on a CPU with
    native bfloat16 when OpenVINO is installed.
    """
    from . import openvino

    for value, choices, what in (
        (backend, BACKENDS, "backend"),
        (precision, PRECISIONS, "precision"),
        (device, DEVICES, "device"),
    ):
        if value not in choices:
            raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    if backend == "auto":
        if device == "cuda" or precision == "fp16" or (device == "auto" and _ort_has_cuda()):
            backend = "onnxruntime"
        elif precision == "bf16" or openvino.available():
            backend = "openvino"  # bf16 without OpenVINO: open_openvino names the extra
        else:
            backend = "onnxruntime"
    if backend == "openvino" and device == "cuda":
        raise UserError("--device cuda runs on onnxruntime; use --backend onnxruntime or auto")
    if backend == "onnxruntime" and precision == "bf16":
        raise UserError("--precision bf16 runs on OpenVINO; use --backend openvino or auto")
    if precision == "auto":
        if backend == "openvino":
            precision = "bf16" if openvino.cpu_has_bf16() else "fp32"
        else:
            precision = "fp32"
    return backend, precision


def open_backend(
    model: str | Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    *,
    io_binding: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Backend:
    """Load ``model`` (default: the shipped weights) on the chosen backend (see the module
    docstring); logs the one-line notice of what runs it."""
    backend, precision = resolve(backend, precision, device)
    if backend == "openvino":
        from .openvino import open_openvino

        result: Backend = open_openvino(model, precision, threads, cache_dir=cache_dir)
    else:
        from .onnxruntime import open_session

        result = open_session(
            model, device, threads, fp16=precision == "fp16", io_binding=io_binding
        )
    check_output_shapes(result)
    logger.info("aslfeat runs on %s", result.describe())
    return result
