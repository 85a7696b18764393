"""Float16 graph (``--fp16``) and IO binding, checked on the CPU against the float32 model.

onnxruntime runs the float16 graph on the CPU too (slowly), so its numbers can be checked here;
the CUDA run itself needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import onnx
import pytest
import skimage.data
from click.testing import CliRunner
from onnx import TensorProto, helper

from aslfeat_cli.backends.onnxruntime import open_session
from aslfeat_cli.cli import cli
from aslfeat_cli.errors import UserError
from aslfeat_cli.extractor import Extractor
from aslfeat_cli.half_precision import to_float16
from aslfeat_cli.keypoints import nearest_keypoints

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "weights" / "aslfeat.onnx"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def half_model() -> onnx.ModelProto:
    return to_float16(onnx.load(str(MODEL)))


BACKBONE_OPS = ("Conv", "DeformConv", "BatchNormalization", "Relu", "Sigmoid")


def _float16_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float16 tensors: initializers, casts to float16 and what they feed."""
    half = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16}
    for node in model.graph.node:  # topological order
        if node.op_type == "Cast":
            if node.attribute[0].i == TensorProto.FLOAT16:
                half.add(node.output[0])
        elif any(name in half for name in node.input):
            half.update(node.output)
    return half


def test_graph_keeps_float32_io_and_detection(half_model: onnx.ModelProto) -> None:
    onnx.checker.check_model(half_model)
    for value in [*half_model.graph.input, *half_model.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    weights = {t.name: t for t in half_model.graph.initializer}
    half_convs = full_convs = 0
    for node in half_model.graph.node:
        if node.op_type not in ("Conv", "DeformConv"):
            continue
        weight = weights.get(node.input[1])
        is_half = weight is not None and weight.data_type == TensorProto.FLOAT16
        heavy = weight is not None and list(weight.dims[2:]) == [3, 3] and weight.dims[0] >= 64
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        # Backbone layers from conv2 on are float16; conv0/conv1, the offset/mask branches and
        # the peakiness (depthwise, 1x1 and data-dependent convolutions) stay float32.
        assert is_half == (heavy and group == 1), node.name
        half_convs += is_half
        full_convs += not is_half
    assert half_convs == 7 and full_convs == 14  # conv2-5 + 3 DCN; conv0-1, offsets, peakiness
    assert {p.key: p.value for p in half_model.metadata_props}["precision"] == "float16"
    # Nothing outside the backbone reads float16: only the backbone's op types and the casts
    # back to float32 consume float16 tensors.
    half = _float16_tensors(half_model)
    for node in half_model.graph.node:
        if any(name in half for name in node.input):
            to_float = node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT
            assert to_float or node.op_type in BACKBONE_OPS, node.name


def test_float16_matches_float32(astronaut: np.ndarray) -> None:
    full = Extractor(MODEL, device="cpu", backend="onnxruntime").extract(astronaut)
    half = Extractor(MODEL, device="cpu", fp16=True)
    assert half.session.precision == "float16"
    low = half.extract(astronaut)
    assert abs(len(low) - len(full)) <= 0.01 * len(full)
    # Nearest float16 keypoint of each float32 keypoint.
    nearest, distance = nearest_keypoints(full.keypoints, low.keypoints)
    close = distance < 0.5
    assert close.mean() >= 0.99
    cosine = (full.descriptors[close] * low.descriptors[nearest[close]]).sum(1)
    # Equal positions give equal descriptors; a peak that moved within 0.5 px samples nearby.
    assert np.median(cosine) > 0.99999 and np.quantile(cosine, 0.01) > 0.999
    assert cosine.min() > 0.99


def test_to_float16_rejects_other_graphs() -> None:
    relu = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="not an ASLFeat export"):
        to_float16(helper.make_model(relu))


def test_fp16_of_a_broken_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(UserError, match="not a valid ONNX model"):
        open_session(bad, "cpu", fp16=True)


def test_io_binding_gives_the_same_outputs(astronaut: np.ndarray) -> None:
    image = astronaut[:240, :320].astype(np.float32)
    plain = open_session(MODEL, "cpu", io_binding=False)
    bound = open_session(MODEL, "cpu", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    for a, b in zip(plain.run(image), bound.run(image), strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_cli_fp16_records_precision(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), skimage.data.camera()[::4, ::4])
    output = tmp_path / "f.h5"
    args = ["extract", str(image), "-o", str(output), "--fp16", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    assert "--fp16 on the CPU" in caplog.text
    with h5py.File(output, "r") as f:
        assert f.attrs["precision"] == "float16"
        assert f["a.png/keypoints"].dtype == np.float32 and len(f["a.png/keypoints"]) > 50
