"""Keypoint localization objectives: each term on a case with a known answer.

A single Gaussian blob in view A, the same blob in view B at a position we control, and a
homography that moves A to B by a known sub-pixel shift: every term must be smallest when B's
blob sits where the homography says, and its gradient must point there.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aslfeat_training.distillation import distillation_loss  # noqa: E402
from aslfeat_training.localization import (  # noqa: E402
    localization_loss,
    newton_keypoints,
    nms_peaks,
    peak_target_loss,
    peakiness_loss,
    repeatability_loss,
    reprojection_loss,
    shift_consistency_loss,
    shift_image,
    soft_argmax,
    warp,
)

SIZE = 40
CENTRE_A = (19.0, 17.0)  # x, y
SHIFT = (3.3, -1.6)  # homography A -> B: a pure translation
SIGMA = 2.0


def blob(centre: torch.Tensor, sigma: float | torch.Tensor = SIGMA, size: int = SIZE):
    """(size, size) Gaussian of peak 2 at ``centre`` (x, y) on a floor of 0.1 (score maps are
    never exactly zero, and R2D2's cosine is undefined on empty windows), differentiable."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )  # fmt: skip
    d2 = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2
    return 0.1 + 2.0 * torch.exp(-d2 / (2 * sigma**2))


def translation(dx: float, dy: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]], dtype=torch.float64)


H = translation(*SHIFT)
TRUTH_B = np.array(CENTRE_A) + np.array(SHIFT)


def reprojection_of(centre_b: torch.Tensor, position: str = "softargmax") -> torch.Tensor:
    score_a = blob(torch.tensor(CENTRE_A, dtype=torch.float64))
    score_b = blob(centre_b)
    if position == "newton":
        kp_a = newton_keypoints(score_a, nms_peaks(score_a, 10))
        kp_b = newton_keypoints(score_b, nms_peaks(score_b, 10))
    else:
        kp_a, _ = soft_argmax(score_a, nms_peaks(score_a, 10))
        kp_b, _ = soft_argmax(score_b, nms_peaks(score_b, 10))
    loss, stats = reprojection_loss(kp_a, kp_b, H, (SIZE, SIZE), (SIZE, SIZE))
    assert stats["pairs"] == 1
    return loss


def newton_reprojection_of(centre_b: torch.Tensor) -> torch.Tensor:
    return reprojection_of(centre_b, "newton")


def peak_target_of(centre_b: torch.Tensor) -> torch.Tensor:
    kp_a = torch.tensor([CENTRE_A], dtype=torch.float64)
    loss, count = peak_target_loss(blob(centre_b), warp(kp_a, H))
    assert count == 1
    return loss


def repeatability_of(centre_b: torch.Tensor) -> torch.Tensor:
    score_a = blob(torch.tensor(CENTRE_A, dtype=torch.float64))
    loss, stats = repeatability_loss(score_a, blob(centre_b), H)
    assert stats["windows"] > 0
    return loss


def distillation_of(centre_b: torch.Tensor) -> torch.Tensor:
    """B's single-pass map against a teacher map whose blob sits at the truth (the same image:
    no homography)."""
    loss, stats = distillation_loss(blob(centre_b), blob(torch.tensor(TRUTH_B)))
    assert stats["windows"] > 0
    return loss


def scan_minimum(loss_of, step: float = 0.05, reach: float = 0.3) -> np.ndarray:
    """The grid position of B's blob (around the truth) where ``loss_of`` is smallest."""
    offsets = np.arange(-reach, reach + 1e-9, step)
    best, best_value = None, np.inf
    for ox in offsets:
        for oy in offsets:
            centre = torch.tensor(TRUTH_B + (ox, oy), dtype=torch.float64)
            value = float(loss_of(centre))
            if value < best_value:
                best, best_value = centre.numpy(), value
    return best


def gradient_at(loss_of, centre: np.ndarray) -> np.ndarray:
    c = torch.tensor(centre, dtype=torch.float64, requires_grad=True)
    loss_of(c).backward()
    return c.grad.numpy()


LOSSES = [
    reprojection_of, newton_reprojection_of, peak_target_of, repeatability_of, distillation_of
]  # fmt: skip
LOSS_IDS = ["reproj", "reproj-newton", "target", "rep", "distil"]


@pytest.mark.parametrize("loss_of", LOSSES, ids=LOSS_IDS)
def test_loss_is_minimal_at_the_true_position(loss_of):
    np.testing.assert_allclose(scan_minimum(loss_of), TRUTH_B, atol=0.026)


@pytest.mark.parametrize("loss_of", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("displacement", [(0.5, 0.0), (0.0, -0.4), (-0.3, 0.35), (0.8, 0.8)])
def test_gradient_points_to_the_true_position(loss_of, displacement):
    centre = TRUTH_B + np.array(displacement)
    grad = gradient_at(loss_of, centre)
    towards = TRUTH_B - centre
    # Gradient descent moves the blob towards the truth, nearly straight.
    cosine = float(-grad @ towards / (np.linalg.norm(grad) * np.linalg.norm(towards)))
    assert cosine > 0.95


def test_soft_argmax_recovers_sub_pixel_centres():
    for centre in [(12.0, 20.0), (12.3, 20.0), (12.7, 19.6), (25.45, 9.8)]:
        score = blob(torch.tensor(centre, dtype=torch.float64))
        keypoints, dispersity = soft_argmax(score, nms_peaks(score, 5))
        assert keypoints.shape == (1, 2)
        np.testing.assert_allclose(keypoints[0].numpy(), centre, atol=0.02)
        assert 0 < float(dispersity[0]) < 1.0


def test_newton_keypoints_are_the_inference_refinement():
    """The training-time Newton positions equal aslfeat_cli.keypoints.refine's, so the loss
    trains the keypoints users get."""
    from aslfeat_cli.keypoints import refine

    rng = np.random.default_rng(3)
    score = torch.from_numpy(rng.random((30, 36)).astype(np.float32))
    score[10, 10:13] = 0.5  # a flat row: singular Hessians take no step
    score[9:12, 9:14] = 0.5
    peaks = nms_peaks(score, 40, radius=1, border=1)
    peaks = torch.cat([peaks, torch.tensor([[10, 11]])])
    ours = newton_keypoints(score, peaks).numpy()
    theirs = refine(score.numpy(), peaks.numpy())[:, ::-1]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert np.abs(ours - peaks.flip(1).numpy()).max() <= 0.5
    np.testing.assert_array_equal(ours[-1], [11.0, 10.0])


def test_newton_keypoints_recover_sub_pixel_centres_and_stay_in_the_graph():
    for centre in [(12.0, 20.0), (12.3, 20.0), (12.7, 19.6), (25.45, 9.8)]:
        c = torch.tensor(centre, dtype=torch.float64, requires_grad=True)
        score = blob(c)
        keypoints = newton_keypoints(score, nms_peaks(score, 5))
        np.testing.assert_allclose(keypoints[0].detach().numpy(), centre, atol=0.05)
        keypoints[0, 0].backward()
        assert c.grad[0] > 0.5  # the keypoint follows the blob


@pytest.mark.parametrize("displacement", [(1.5, 0.0), (-1.2, 1.1)])
def test_peak_target_pulls_a_peak_that_sits_pixels_away(displacement):
    """Beyond the half-pixel reach of a Newton step, the target term still points home."""
    centre = TRUTH_B + np.array(displacement)
    grad = gradient_at(peak_target_of, centre)
    towards = TRUTH_B - centre
    assert float(-grad @ towards / (np.linalg.norm(grad) * np.linalg.norm(towards))) > 0.95


def test_peak_target_leaves_out_targets_at_the_edge():
    score = blob(torch.tensor(CENTRE_A, dtype=torch.float64))
    targets = torch.tensor([[1.2, 20.0], [20.0, SIZE - 1.6]], dtype=torch.float64)
    loss, count = peak_target_loss(score, targets)
    assert count == 0 and float(loss) == 0


def test_peak_target_skips_keypoints_without_a_partner():
    """A's blob has no partner within the cap in B (8 px away): no target, no loss."""
    score_a = blob(torch.tensor(CENTRE_A, dtype=torch.float64))
    far = torch.tensor(TRUTH_B + (8.0, 0.0), dtype=torch.float64, requires_grad=True)
    loss, stats = localization_loss(
        score_a, blob(far), H, reprojection_weight=0, dispersity_weight=0, target_weight=1.0
    )
    loss.backward()
    assert stats["target"] == 0 and float(far.grad.abs().sum()) == 0


def test_dispersity_grows_with_blob_width_and_its_gradient_sharpens():
    values = []
    for sigma in (0.6, 1.0, 1.5, 2.5):
        score = blob(torch.tensor((20.0, 20.0)), sigma)
        _, dispersity = soft_argmax(score, nms_peaks(score, 5))
        values.append(float(dispersity[0]))
    assert values == sorted(values) and values[0] < 0.3 * values[-1]
    sigma = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    score = blob(torch.tensor((20.0, 20.0)), sigma)
    _, dispersity = soft_argmax(score, nms_peaks(score, 5))
    dispersity.sum().backward()
    assert float(sigma.grad) > 0  # descent narrows the peak
    # A one-pixel peak has (almost) no dispersity.
    spike = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    spike[20, 20] = 1.0
    _, dispersity = soft_argmax(spike, nms_peaks(spike, 5))
    assert float(dispersity[0]) < 0.01


def blob_grid(sigma: float | torch.Tensor) -> torch.Tensor:
    """Blobs 10 px apart (about one per R2D2 window), each of width ``sigma``."""
    return sum(
        blob(torch.tensor((float(x), float(y)), dtype=torch.float64), sigma)
        for x in range(5, SIZE, 10)
        for y in range(5, SIZE, 10)
    )


def test_peakiness_prefers_sharp_peaks_and_its_gradient_sharpens():
    values = [float(peakiness_loss(blob_grid(sigma))) for sigma in (0.8, 1.5, 3.0)]
    assert values == sorted(values)
    sigma = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    peakiness_loss(blob_grid(sigma)).backward()
    assert float(sigma.grad) > 0


def test_reprojection_ignores_far_and_invisible_keypoints():
    kp_a = torch.tensor([[10.0, 10.0], [30.0, 30.0], [5.0, 35.0]], dtype=torch.float64)
    # B sees A shifted by SHIFT; the second keypoint's partner is 6 px off (beyond the cap),
    # the third has none and lands outside B after the warp of (-10, 0).
    h = translation(-10.0, 0.0)
    kp_b = torch.tensor([[0.5, 10.0], [26.0, 30.0]], dtype=torch.float64)
    loss, stats = reprojection_loss(kp_a, kp_b, h, (SIZE, SIZE), (SIZE, SIZE), cap=5.0)
    assert stats["pairs"] == 1
    assert float(loss) == pytest.approx(0.5, abs=1e-6)
    assert stats["repeatable"] == pytest.approx(0.5)  # 1 of the 2 visible keypoints


def test_warp_round_trip_and_empty_inputs_stay_in_the_graph():
    h = torch.tensor(
        [[1.1, 0.05, 2.0], [-0.03, 0.95, -1.0], [1e-4, 2e-4, 1.0]],
        dtype=torch.float64,
    )
    points = torch.rand(20, 2, dtype=torch.float64) * 40
    back = warp(warp(points, h), torch.linalg.inv(h))
    np.testing.assert_allclose(back.numpy(), points.numpy(), atol=1e-9)
    flat = torch.zeros(SIZE, SIZE, dtype=torch.float64, requires_grad=True)
    loss, stats = localization_loss(flat, flat, H, repeatability_weight=1.0, peakiness_weight=1.0)
    loss.backward()  # a constant map: no peaks, no pairs, still a graph
    assert torch.isfinite(loss) and stats.get("pairs", 0) == 0


def test_combined_loss_pulls_both_views_together():
    centre_b = torch.tensor(TRUTH_B + (0.6, -0.4), dtype=torch.float64, requires_grad=True)
    score_a = blob(torch.tensor(CENTRE_A, dtype=torch.float64))
    loss, stats = localization_loss(
        score_a,
        blob(centre_b),
        H,
        repeatability_weight=1.0,
        peakiness_weight=0.5,
        target_weight=1.0,
        position="newton",
    )
    assert {"reproj", "disp", "rep", "peaky", "target", "pairs"} <= set(stats)
    loss.backward()
    towards = TRUTH_B - centre_b.detach().numpy()
    assert float(-centre_b.grad.numpy() @ towards) > 0


# Shift equivariance: a map computed at full resolution moves with the image; a map computed on
# a 4-pixel lattice and upsampled like the coarse levels (TF1's legacy bilinear resize) does not.
LATTICE_SIZE = 48


def fine_map(centre: torch.Tensor) -> torch.Tensor:
    return blob(centre, size=LATTICE_SIZE)


def lattice_map(centre: torch.Tensor) -> torch.Tensor:
    from aslfeat_export.tf_compat import resize_bilinear_legacy

    coarse = fine_map(centre)[::4, ::4]
    return resize_bilinear_legacy(coarse[None, None], (LATTICE_SIZE, LATTICE_SIZE))[0, 0]


def shift_loss(make, shift: int, centre=(21.3, 22.6)) -> torch.Tensor:
    c = torch.tensor(centre, dtype=torch.float64)
    loss, stats = shift_consistency_loss(make(c), make(c + shift), shift)
    assert stats["windows"] > 0
    return loss


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shift_consistency_is_zero_for_a_map_that_moves_with_the_image(shift):
    assert float(shift_loss(fine_map, shift)) < 1e-9
    # The same content on the 4-pixel lattice does not move with it.
    assert float(shift_loss(lattice_map, shift)) > 0.01


def test_shift_consistency_gradient_favours_the_full_resolution_map():
    # A fused map mixes a full-resolution level and a lattice level; the term's gradient
    # asks for more of the first (less of the lattice), as training should for conv1/conv3.
    mix = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    centre = torch.tensor((21.3, 22.6), dtype=torch.float64)

    def fused(c: torch.Tensor) -> torch.Tensor:
        return mix * fine_map(c) + (1 - mix) * lattice_map(c)

    loss, _ = shift_consistency_loss(fused(centre), fused(centre + 2), 2)
    loss.backward()
    assert float(mix.grad) < 0


def test_shift_image_moves_the_content_and_keeps_the_size():
    images = torch.arange(2 * 1 * 9 * 11, dtype=torch.float32).reshape(2, 1, 9, 11)
    for shift in (0, 1, 3):
        moved = shift_image(images, shift)
        assert moved.shape == images.shape
        assert torch.equal(moved[..., shift:, shift:], images[..., : 9 - shift, : 11 - shift])
