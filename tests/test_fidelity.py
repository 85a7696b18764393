"""The PyTorch port reproduces the official TensorFlow graph (required check).

../shared/data/tf_reference holds checkpoints with random weights for the four variants and what
the official graph computed from them: every recorded layer, the fused score map, keypoints,
scores and descriptors, on random inputs (odd and even sizes) and on a real photo.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export extra (PyTorch) is not installed")

from aslfeat_cli.keypoints import DetectionConfig, select_keypoints  # noqa: E402
from aslfeat_export.convert import convert_checkpoint  # noqa: E402
from aslfeat_export.tf_compat import standardize  # noqa: E402

from .conftest import require_shared  # noqa: E402

VARIANTS = ("u", "a", "h", "plain")
REL_TOL = 1e-4


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def layer_outputs(model, image: torch.Tensor) -> dict[str, np.ndarray]:
    """The layers recorded in reference_activations.npz, NHWC."""
    bb = model.backbone
    out = {}
    _, x = bb.conv0(standardize(image))
    out["conv0"] = x
    out["conv1"], x = bb.conv1(x)
    out["conv1/bn"] = x
    _, x = bb.conv2(x)
    out["conv2"] = x
    _, x = bb.conv3(x)
    out["conv3/bn"] = x
    _, x = bb.conv4(x)
    out["conv4"] = x
    _, x = bb.conv5(x)
    out["conv5"] = x
    for name in ("conv6_0", "conv6_1", "conv6"):
        x = getattr(bb, name)(x)
        out[name] = x
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def assert_keypoints_match(ref, key: str, kpts, scores, descs) -> None:
    """>= 99% of the reference keypoints within 0.01 px, with descriptor cosine >= 0.9999."""
    ref_k = ref[f"{key}/kpts"][0]
    ref_d = ref[f"{key}/descs"][0]
    ref_s = ref[f"{key}/scores"][0]
    assert abs(len(kpts) - len(ref_k)) <= 0.01 * len(ref_k)
    # Nearest of our keypoints for each reference keypoint (brute force in chunks).
    nearest = np.empty(len(ref_k), dtype=np.int64)
    dist = np.empty(len(ref_k))
    for s in range(0, len(ref_k), 1000):
        d = np.abs(ref_k[s : s + 1000, None, :] - kpts[None]).max(-1)
        nearest[s : s + 1000] = d.argmin(1)
        dist[s : s + 1000] = d.min(1)
    found = dist < 0.01
    assert found.mean() >= 0.99, f"only {found.mean():.4f} of reference keypoints reproduced"
    cos = (ref_d[found] * descs[nearest[found]]).sum(1)
    assert cos.min() >= 0.9999
    np.testing.assert_allclose(scores[nearest[found]], ref_s[found], rtol=REL_TOL, atol=1e-6)


@pytest.fixture(scope="module", params=VARIANTS)
def variant_model(request):
    path = require_shared("tf_reference", request.param, reason="fidelity to the TF graph")
    model = convert_checkpoint(path / "model.ckpt-60000")
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # restored below: other test modules train
    yield request.param, path, model
    torch.set_grad_enabled(previous)


@pytest.mark.parametrize("key", ["odd_61x83", "even_64x96"])
def test_layers_scores_keypoints_random_inputs(variant_model, key):
    variant, path, model = variant_model
    assert model.variant == variant
    ref = np.load(path / "reference_activations.npz")
    image = torch.from_numpy(ref[f"{key}/input"]).permute(0, 3, 1, 2)
    for layer, value in layer_outputs(model, image).items():
        err = relative_error(value, ref[f"{key}/{layer}"])
        assert err < REL_TOL, f"{variant} {key} {layer}: relative error {err:.2e}"
    score_map, desc_map = model(image)
    assert relative_error(score_map.numpy(), ref[f"{key}/score_map"][0, ..., 0]) < REL_TOL
    np.testing.assert_allclose(
        desc_map.numpy(),
        ref[f"{key}/conv6"][0],
        rtol=0,
        atol=REL_TOL * np.abs(desc_map.numpy()).max(),
    )
    kpts, scores, descs = select_keypoints(score_map.numpy(), desc_map.numpy(), DetectionConfig())
    assert_keypoints_match(ref, key, kpts, scores, descs)


def test_real_photo(variant_model):
    variant, path, model = variant_model
    if not (path / "reference_real.npz").exists():
        pytest.skip(f"no real-photo reference recorded for variant {variant}")
    ref = np.load(path / "reference_real.npz")
    key = "boat_512x640"
    image = torch.from_numpy(ref[f"{key}/input"]).permute(0, 3, 1, 2)
    score_map, desc_map = model(image)
    assert relative_error(score_map.numpy(), ref[f"{key}/score_map"][0, ..., 0]) < REL_TOL
    kpts, scores, descs = select_keypoints(score_map.numpy(), desc_map.numpy(), DetectionConfig())
    assert len(kpts) == 5000
    assert_keypoints_match(ref, key, kpts, scores, descs)
