"""ONNX export: onnxruntime reproduces the PyTorch model on real photos, any image size."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export extra (PyTorch) is not installed")
ort = pytest.importorskip("onnxruntime")

from aslfeat_cli.extractor import Extractor  # noqa: E402
from aslfeat_cli.keypoints import DetectionConfig, select_keypoints  # noqa: E402
from aslfeat_export.convert import load_weights, save_weights  # noqa: E402
from aslfeat_export.export_onnx import compare_with_torch, export_model  # noqa: E402
from aslfeat_export.model import ASLFeat  # noqa: E402

from .conftest import ROOT, SHARED_DATA  # noqa: E402

# Even, odd, and sizes that are not multiples of the descriptor stride.
SIZES = [(480, 640), (301, 397), (250, 334)]


def photo() -> np.ndarray:
    """A real photo when ../shared/data exists, else scikit-image's camera man."""
    path = SHARED_DATA / "pairs" / "boat_1_2" / "A.png"
    if path.exists():
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    skdata = pytest.importorskip("skimage.data")
    return skdata.camera()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[ASLFeat, object]:
    """The shipped weights if present, else a seeded random model (equality is what matters)."""
    shipped = ROOT / "weights" / "aslfeat.pt"
    if shipped.exists():
        return load_weights(shipped), shipped
    torch.manual_seed(0)
    model = ASLFeat("u").eval()
    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_weights(model, path)
    return model, path


@pytest.fixture(scope="module")
def onnx_files(weights, tmp_path_factory):
    model, path = weights
    out = tmp_path_factory.mktemp("onnx")
    return {
        impl: export_model(model, out / f"{impl}.onnx", impl, weights=path)
        for impl in ("deformconv", "gridsample")
    }


def keypoint_agreement(a, b) -> tuple[float, float]:
    """Share of b's keypoints that a has within 0.01 px, and the worst descriptor cosine."""
    (ka, da), (kb, db) = a, b
    d = np.abs(kb[:, None, :] - ka[None]).max(-1)
    near, dist = d.argmin(1), d.min(1)
    found = dist < 0.01
    return found.mean(), (db[found] * da[near[found]]).sum(1).min()


@pytest.mark.parametrize("size", SIZES)
def test_onnxruntime_matches_pytorch_keypoints(weights, onnx_files, size):
    model, _ = weights
    image = cv2.resize(photo(), size[::-1], interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        score_map, desc_map = model(torch.from_numpy(image).float()[None, None])
    cfg = DetectionConfig(num_keypoints=2000)
    k, _, d = select_keypoints(score_map.numpy(), desc_map.numpy(), cfg)
    ours = Extractor(
        onnx_files["deformconv"], num_keypoints=2000, device="cpu", backend="onnxruntime"
    ).extract(image)
    assert ours.image_size == (size[1], size[0])
    assert len(ours) > 0 and abs(len(ours) - len(k)) <= 0.01 * len(k)
    found, cos = keypoint_agreement((ours.keypoints, ours.descriptors), (k, d))
    assert found >= 0.99
    assert cos >= 0.9999


def test_gridsample_graph_equals_deformconv_graph(weights, onnx_files):
    model, _ = weights
    image = cv2.resize(photo(), (200, 150)).astype(np.float32)
    for path in onnx_files.values():
        errors = compare_with_torch(model, path, image)
        assert max(errors.values()) < 1e-4, errors


def test_graph_contents_and_metadata(onnx_files, weights):
    import onnx

    ops = {
        impl: {n.op_type for n in onnx.load(str(p)).graph.node} for impl, p in onnx_files.items()
    }
    assert "DeformConv" in ops["deformconv"] and "GridSample" not in ops["deformconv"]
    assert "GridSample" in ops["gridsample"] and "DeformConv" not in ops["gridsample"]
    meta = ort.InferenceSession(str(onnx_files["deformconv"])).get_modelmeta()
    meta = meta.custom_metadata_map
    assert meta["variant"] == weights[0].variant
    assert meta["descriptor_dim"] == "128"
    assert len(meta["source_weights_sha256"]) == 64
    assert '"score_threshold": 0.5' in meta["detection_defaults"]


def test_runtime_package_imports_without_torch():
    """aslfeat_cli (the runtime) must never import torch."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import aslfeat_cli, aslfeat_cli.cli, aslfeat_cli.extractor, aslfeat_cli.keypoints\n"
        "from aslfeat_cli.cli import COMMANDS\n"
        "import importlib\n"
        "for m in {v[0] for v in COMMANDS.values()}:\n"
        "    importlib.import_module('aslfeat_cli.commands.' + m)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_convert_without_torch_gives_clear_error(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from aslfeat_cli.cli import main\n"
        f"sys.argv = ['aslfeat', 'convert', '{tmp_path}', '-o', '{tmp_path}/w.pt']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "pip install 'aslfeat[export]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
