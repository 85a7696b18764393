"""Self-distillation: ask one pass for the score map of the precise inference settings.

``--upscale 2 --shifts 4`` (README, "Precise keypoints") puts the shipped weights' keypoints
as close to the epipolar lines of fountain-P11 as RootSIFT's (median 0.178 px against 0.318 for
a single pass), at about 16 times the network's cost. The network is the same; only the map
it detects on differs: finer network pixels (the image enlarged) and no 2-/4-pixel lattice of
the coarse levels (the mean of four diagonally moved passes). So a frozen copy of the starting
weights computes that map for each training image, and R2D2's local cosine
(:func:`.localization.repeatability_loss`, identity homography) asks the student's single-pass
fused map for the same shape: its peaks where the teacher's are, with the neighbour values the
inference's Newton step reads for the sub-pixel position (``--distil-target map``). With
``--distil-target peaks`` the targets are the teacher's keypoints instead (detected on its
enlarged map as the runtime does, Newton-refined, brought back to the image's pixels), each
the bilinear splat the student's window softmax is asked for
(:func:`.localization.peak_target_loss`): it moves which pixel is the student's peak.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from aslfeat_cli.shift_average import diagonal_shifts
from aslfeat_export.model import ASLFeat, fuse_scores

from .localization import PATCH_SIZE, newton_keypoints, nms_peaks, repeatability_loss

TARGETS = ("map", "peaks")  # what the student is asked for: the teacher's map or its keypoints
UPSCALE = 2  # the teacher's --upscale (an integer: its map is area-averaged back)
SHIFTS = 4  # the teacher's --shifts
STRIDE = 4  # the coarsest level's stride, as aslfeat_cli.shift_average


class Teacher:
    """A frozen copy of a network whose :meth:`score_maps` are those of ``--upscale upscale
    --shifts shifts`` at inference, brought back to the input's size."""

    def __init__(self, model: ASLFeat, upscale: int = UPSCALE, shifts: int = SHIFTS) -> None:
        if int(upscale) != upscale or upscale < 1:
            raise ValueError(f"the teacher's upscale must be a positive integer, not {upscale}")
        diagonal_shifts(shifts, STRIDE)  # validates the count
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.upscale, self.shifts = int(upscale), shifts

    def _fused(self, images: torch.Tensor, bf16: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            dense = self.model.backbone(images)
            levels = [lv.float() for lv in self.model.level_scores(dense)]
        return fuse_scores(levels, images.shape[-2:])[:, 0]

    @torch.no_grad()
    def enlarged_maps(self, images: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, upscale H, upscale W) mean maps of the enlarged images' moved passes: what the
        runtime detects on with these options."""
        big = images
        if self.upscale > 1:
            big = F.interpolate(images, scale_factor=self.upscale, mode="bilinear")
        height, width = big.shape[-2:]
        total = self._fused(big, bf16)
        for k in diagonal_shifts(self.shifts, STRIDE)[1:]:
            moved = F.pad(big, (k, STRIDE - k, k, STRIDE - k), mode="reflect")
            total = total + self._fused(moved, bf16)[:, k : k + height, k : k + width]
        return total / self.shifts

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, H, W) teacher maps of (B, 1, H, W) images (0..255).

        The image is enlarged bilinearly (pixel centres aligned, as ``cv2.INTER_LINEAR``); the
        passes moved by k pad k reflected rows and columns at the top and left and ``4 - k`` at
        the bottom and right, as :func:`aslfeat_cli.shift_average.shift_averaged`; the mean
        map is area-averaged by ``upscale`` (a pixel of the image is the mean of the enlarged
        pixels it covers), which keeps the pixel-centre convention.
        """
        mean = self.enlarged_maps(images, bf16)
        if self.upscale > 1:
            mean = F.avg_pool2d(mean[:, None], self.upscale)[:, 0]
        return mean

    @torch.no_grad()
    def keypoints(
        self, images: torch.Tensor, num_peaks: int, radius: int, bf16: bool = False
    ) -> list[torch.Tensor]:
        """Per image, the (N, 2) x, y keypoints of the ``num_peaks`` highest NMS peaks (radius
        ``radius`` in enlarged pixels, as the runtime) of :meth:`enlarged_maps`, refined by
        the Newton step and brought back to the image's pixels (centre convention)."""
        out = []
        for score in self.enlarged_maps(images, bf16):
            points = newton_keypoints(score, nms_peaks(score, num_peaks, radius))
            out.append((points + 0.5) / self.upscale - 0.5)
        return out


def distillation_loss(
    score: torch.Tensor, teacher_score: torch.Tensor, patch: int = PATCH_SIZE
) -> tuple[torch.Tensor, dict[str, float]]:
    """1 - the contrast-weighted local cosine of an (H, W) map with the teacher's (detached):
    0 when every window has the teacher's shape, whatever the maps' scales."""
    identity = torch.eye(3, dtype=score.dtype, device=score.device)
    return repeatability_loss(score, teacher_score.detach().to(score.dtype), identity, patch)
