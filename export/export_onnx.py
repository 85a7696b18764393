"""Export an ASLFeat weight file to ONNX for onnxruntime.

The graph takes a (1, 1, H, W) float32 grayscale image (raw pixels 0..255, any H, W >= 16) and
returns the dense outputs of the network: ``score_map`` (H, W) and ``descriptor_map``
(ceil(H/4), ceil(W/4), 128). Keypoint selection runs after it in numpy
(:mod:`aslfeat_cli.keypoints`), which keeps every detection option adjustable at run time.

The deformable convolutions become ONNX ``DeformConv`` nodes (opset 19; onnxruntime runs them on
CPU) or, with ``deform_impl="gridsample"``, GridSample + Conv for execution providers without
DeformConv. The file's metadata is the contract the runtime reads (:data:`METADATA_KEYS`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from aslfeat_cli import __version__
from aslfeat_cli.keypoints import DetectionConfig

from .convert import file_sha256, load_weights
from .model import ASLFeat

logger = logging.getLogger(__name__)

OPSET = 19
INPUT = "image"
OUTPUTS = ("score_map", "descriptor_map")
MIN_SIZE = 16


def _deform_conv_onnx(x, weight, offset, mask, bias):  # noqa: ANN001, ANN202 (onnxscript types)
    from onnxscript import opset19 as op

    # DeformConv's inputs are positional: bias must be given for the mask to land in its slot.
    return op.DeformConv(
        x, weight, offset, bias, mask,
        kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1],
        group=1, offset_group=1,
    )  # fmt: skip


def metadata(model: ASLFeat, weights: Path | None, deform_impl: str) -> dict[str, str]:
    """The metadata contract written into the ONNX file."""
    det = DetectionConfig()
    return {
        "aslfeat_version": __version__,
        "variant": model.variant,
        "score": model.score,
        "descriptor_dim": "128",
        "descriptor_stride": "4",
        "min_size": str(MIN_SIZE),
        "deform_impl": deform_impl,
        "input": "image (1,1,H,W) float32 grayscale 0..255",
        "outputs": "score_map (H,W); descriptor_map (ceil(H/4),ceil(W/4),128) not normalised",
        "detection_defaults": json.dumps(
            {
                "num_keypoints": det.num_keypoints,
                "score_threshold": det.score_threshold,
                "edge_threshold": det.edge_threshold,
                "nms_size": det.nms_size,
                "border": det.border,
            }
        ),
        "source_weights": weights.name if weights else "",
        "source_weights_sha256": file_sha256(weights) if weights else "",
    }


def export_model(
    model: ASLFeat,
    output: Path,
    deform_impl: str = "deformconv",
    weights: Path | None = None,
    example_size: tuple[int, int] = (120, 160),
) -> Path:
    """Trace ``model`` with dynamic height and width and write ``output`` (.onnx).

    Args:
        model: the network (eval mode).
        output: destination file.
        deform_impl: "deformconv" (ONNX DeformConv) or "gridsample" (GridSample + Conv).
        weights: the source weight file, hashed into the metadata.
        example_size: (H, W) of the tracing example; the exported graph accepts any size.
    """
    import onnx

    if deform_impl not in ("deformconv", "gridsample"):
        raise ValueError(f"unknown deform_impl {deform_impl!r}")
    model = model.eval()
    model.set_deform_impl(deform_impl)
    example = torch.rand(1, 1, *example_size) * 255
    h, w = torch.export.Dim("height", min=MIN_SIZE), torch.export.Dim("width", min=MIN_SIZE)
    table = {torch.ops.aslfeat.deform_conv2d.default: _deform_conv_onnx}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The exporter and its optimizer print pages of progress: keep them off the user's terminal.
    chatter = io.StringIO()
    try:
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
        ):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes={"image": {2: h, 3: w}},
                custom_translation_table=table,
                verbose=False,
            )
            program.optimize()
        proto = program.model_proto
    finally:
        model.set_deform_impl("gridsample")
    for key, value in metadata(model, weights, deform_impl).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    return output


def compare_with_torch(model: ASLFeat, onnx_path: Path, image: np.ndarray) -> dict[str, float]:
    """Max relative difference of the ONNX outputs against PyTorch for one grayscale image."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = image.astype(np.float32)[None, None]
    got = session.run(list(OUTPUTS), {INPUT: x})
    with torch.no_grad():
        want = [t.numpy() for t in model.eval()(torch.from_numpy(x))]
    return {
        name: float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12))
        for name, g, r in zip(OUTPUTS, got, want, strict=True)
    }


def export_weights(weights: Path, output: Path, deform_impl: str = "deformconv") -> Path:
    """Load a weight file and export it (used by ``aslfeat export`` and ``make export``)."""
    return export_model(load_weights(weights), output, deform_impl, weights=weights)
