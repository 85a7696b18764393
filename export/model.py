"""ASLFeat network (Luo et al., CVPR 2020), faithful to the official TensorFlow graph.

Sec. 3.1: an L2-Net-style backbone (conv0..conv5, 3x3, batch norm without affine parameters)
whose last three layers conv6_0, conv6_1, conv6 are modulated deformable convolutions.
Sec. 3.2-3.3: detection scores from the *peakiness* of features at three levels (conv1, conv3
before their batch norm, conv6 raw) with dilations 3, 2, 1, fused with weights 1:2:3 at input
resolution. Descriptors are conv6, bilinearly sampled at the keypoints and L2-normalised.

The network ends at dense maps; keypoint selection (NMS, border mask, threshold, top-K,
sub-pixel refinement, descriptor sampling) is :mod:`aslfeat_cli.keypoints`, shared with the
onnxruntime path, so there is exactly one implementation of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deform_conv import DeformConv2d
from .tf_compat import (
    TF_BN_EPSILON,
    resize_bilinear_legacy,
    same_pad,
    softplus,
    standardize,
)

VARIANTS = ("u", "a", "h", "plain")
LEVELS = ("conv1", "conv3", "conv6")
LEVEL_DILATIONS = (3, 2, 1)
LEVEL_WEIGHTS = (1 / 6, 2 / 6, 3 / 6)
DESCRIPTOR_STRIDE = 4


class ConvBN(nn.Module):
    """3x3 convolution (no bias, TF 'SAME' padding) and batch norm without gamma/beta.

    ``forward`` returns both the raw convolution and the activated output: the detector reads
    conv1 and conv3 before their batch norm.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.relu = relu
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, bias=False)
        # momentum 0.01 == TF's decay 0.99.
        self.bn = nn.BatchNorm2d(cout, eps=TF_BN_EPSILON, momentum=0.01, affine=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.conv(same_pad(x, self.stride))
        out = self.bn(raw)
        return raw, (F.relu(out) if self.relu else out)


class DeformConvBN(nn.Module):
    """Deformable convolution, then (optionally) batch norm and ReLU."""

    def __init__(self, channels: int, variant: str, bn: bool = True) -> None:
        super().__init__()
        if variant == "plain":
            self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        else:
            self.conv = DeformConv2d(channels, channels, variant)
        self.bn = (
            nn.BatchNorm2d(channels, eps=TF_BN_EPSILON, momentum=0.01, affine=False) if bn else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(self.bn(x)) if self.bn is not None else x


@dataclass
class DenseOutputs:
    """Dense maps of one forward pass (all NCHW)."""

    levels: dict[str, torch.Tensor]  # conv1, conv3 (pre-BN), conv6 (raw): detector inputs
    descriptor_map: torch.Tensor  # (B, 128, H/4, W/4), conv6 before L2 normalisation


class ASLFeatBackbone(nn.Module):
    """conv0..conv6: the L2-Net-style backbone with deformable conv6_0, conv6_1, conv6."""

    def __init__(self, variant: str = "u") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}, expected one of {VARIANTS}")
        self.variant = variant
        self.conv0 = ConvBN(1, 32)
        self.conv1 = ConvBN(32, 32)
        self.conv2 = ConvBN(32, 64, stride=2)
        self.conv3 = ConvBN(64, 64)
        self.conv4 = ConvBN(64, 128, stride=2)
        self.conv5 = ConvBN(128, 128)
        self.conv6_0 = DeformConvBN(128, variant)
        self.conv6_1 = DeformConvBN(128, variant)
        self.conv6 = DeformConvBN(128, variant, bn=False)

    def forward(self, image: torch.Tensor) -> DenseOutputs:
        """image: (B, 1, H, W) raw grayscale pixels (0..255)."""
        x = standardize(image)
        _, x = self.conv0(x)
        conv1, x = self.conv1(x)
        _, x = self.conv2(x)
        conv3, x = self.conv3(x)
        _, x = self.conv4(x)
        _, x = self.conv5(x)
        conv6 = self.conv6(self.conv6_1(self.conv6_0(x)))
        return DenseOutputs({"conv1": conv1, "conv3": conv3, "conv6": conv6}, conv6)


def peakiness_score(
    feat: torch.Tensor, instance_max: torch.Tensor, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-5: spatial peakiness alpha and channel peakiness beta of one level.

    ``feat`` is divided by the level's instance-max normaliser (a moving average of the feature
    maximum kept during training), then compared with its 3x3 neighbourhood mean (dilated,
    reflect padding) and with its channel mean, each through a softplus.

    Both differences are linear in ``feat``, so each is one convolution: a depthwise 3x3 kernel
    (delta - 1/9) / m and a 1x1 kernel (I - 1/C) / m. That is the same arithmetic as dividing,
    averaging and subtracting, in fewer passes over the full-resolution maps.
    """
    c = feat.shape[1]
    box = torch.full((3, 3), -1 / 9, device=feat.device, dtype=feat.dtype)
    box[1, 1] += 1.0
    spatial = (box / instance_max).expand(c, 1, 3, 3)
    padded = F.pad(feat, (dilation,) * 4, mode="reflect")
    local_diff = F.conv2d(padded, spatial, dilation=dilation, groups=c)
    eye = torch.eye(c, device=feat.device, dtype=feat.dtype)
    channel = ((eye - 1 / c) / instance_max).reshape(c, c, 1, 1)
    channel_diff = F.conv2d(feat, channel)
    return softplus(local_diff), softplus(channel_diff)


def d2net_score(
    feat: torch.Tensor, instance_max: torch.Tensor, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """D2-Net's soft detection score (the official code's alternative to peakiness)."""
    beta = feat / (feat.amax(dim=1, keepdim=True) + 1e-6)
    exp_logit = torch.exp(feat / instance_max)
    c = feat.shape[1]
    padded = F.pad(exp_logit, (dilation,) * 4, value=1.0)
    ones = torch.ones((c, 1, 3, 3), device=feat.device, dtype=feat.dtype)
    sum_logit = F.conv2d(padded, ones, dilation=dilation, groups=c)
    return exp_logit / (sum_logit + 1e-6), beta


def fuse_scores(levels: list[torch.Tensor], size: tuple) -> torch.Tensor:
    """Eq. 6: per-level score maps resized to ``size`` (H, W) and weighted 1:2:3, batched."""
    fused = None
    for weight, level in zip(LEVEL_WEIGHTS, levels, strict=True):
        level = resize_bilinear_legacy(level, size) * weight
        fused = level if fused is None else fused + level
    return fused


class ASLFeat(nn.Module):
    """The inference network: image -> fused score maps and the dense descriptor map."""

    def __init__(self, variant: str = "u", score: str = "peakiness") -> None:
        super().__init__()
        if score not in ("peakiness", "d2net"):
            raise ValueError(f"unknown score {score!r}")
        self.backbone = ASLFeatBackbone(variant)
        self.score = score
        # Moving averages of each level's maximum (TF: tower/<level>/instance_max).
        self.register_buffer("instance_max", torch.ones(len(LEVELS)))

    @property
    def variant(self) -> str:
        return self.backbone.variant

    def level_scores(self, dense: DenseOutputs) -> list[torch.Tensor]:
        """Per-level score maps max_c(alpha * beta), each at its own resolution."""
        fn = peakiness_score if self.score == "peakiness" else d2net_score
        out = []
        for i, name in enumerate(LEVELS):
            alpha, beta = fn(dense.levels[name], self.instance_max[i], LEVEL_DILATIONS[i])
            out.append((alpha * beta).amax(dim=1, keepdim=True))
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense outputs for keypoint selection (:mod:`aslfeat_cli.keypoints`).

        Args:
            image: (1, 1, H, W) raw grayscale pixels, 0..255.
        Returns:
            score_map: (H, W) fused multi-level score (Eq. 6), at input resolution.
            descriptor_map: (H/4, W/4, 128) conv6 before L2 normalisation.
        """
        dense = self.backbone(image)
        score_map = fuse_scores(self.level_scores(dense), image.shape[-2:])
        return score_map[0, 0], dense.descriptor_map[0].permute(1, 2, 0)

    def set_deform_impl(self, impl: str) -> None:
        """Choose the deformable-convolution kernel: "gridsample" or "deformconv"."""
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                m.impl = impl
