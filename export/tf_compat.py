"""TensorFlow 1.x behaviours that the official ASLFeat graph relies on, written in PyTorch.

Each function reproduces one TF op bit-for-bit in layout (not always in rounding), so that
checkpoints trained with the official code port without retraining.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# TF 1.15 raises the fused batch-norm epsilon to this value when a smaller one is asked for.
TF_BN_EPSILON = 1.001e-5


def standardize(image: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image standardisation ``(x - mean) / sqrt(var + eps)``, population variance over H, W.

    Args:
        image: (B, 1, H, W) raw pixel values.
    """
    mean = image.mean(dim=(2, 3), keepdim=True)
    var = ((image - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (image - mean) / torch.sqrt(var + eps)


def same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a 3x3 kernel.

    Stride 1 pads one pixel on each side. Stride 2 pads (n % 2) before and 1 after: TF puts the
    odd pixel of padding at the end, so a symmetric padding=1 convolution samples other pixels.
    """
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return F.pad(x, (w % 2, 1, h % 2, 1))


def _resize_axis(x: torch.Tensor, out_size: int | torch.SymInt, dim: int) -> torch.Tensor:
    in_size = x.shape[dim]
    scale = in_size / out_size
    src = torch.arange(out_size, device=x.device, dtype=torch.float32) * scale
    i0 = torch.floor(src)
    frac = src - i0
    i0 = i0.long()
    i1 = torch.clamp(i0 + 1, max=in_size - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    frac = frac.reshape(shape)
    a = torch.index_select(x, dim, i0)
    b = torch.index_select(x, dim, i1)
    return a + (b - a) * frac


def resize_bilinear_legacy(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """TF1 ``tf.image.resize`` bilinear with align_corners=False, half_pixel_centers=False.

    Output pixel i samples input position ``i * in_size / out_size`` (no half-pixel shift), the
    behaviour of the TF 1.15 graph; ``F.interpolate`` has no such mode.
    """
    x = _resize_axis(x, size[0], 2)
    return _resize_axis(x, size[1], 3)


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``tf.nn.l2_normalize``: x / sqrt(max(sum(x^2), 1e-12))."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=dim, keepdim=True), min=1e-12))


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)), written as max(x, log1p(exp(min(x, 80)))).

    Same values as TF's softplus (log1p(exp(x)) > x for every x <= 80, and above 80 the two
    agree in float32). onnxruntime's Softplus kernel measured 3x slower than an elementwise
    form on the full-resolution 32-channel maps (../shared/notes/measurements.md); this one
    needs 5 elementwise passes where relu(x) + log1p(exp(-|x|)) needs 7.
    """
    return torch.maximum(x, torch.log1p(torch.exp(torch.clamp(x, max=80.0))))
