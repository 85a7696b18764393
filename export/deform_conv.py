"""Modulated deformable convolution (DCNv2) with ASLFeat's three offset parameterisations.

Paper Sec. 3.1: a 3x3 deformable convolution samples its 9 taps at ``p + p_k + dp_k`` and weights
each by a modulation ``m_k`` in (0, 1). ASLFeat predicts ``dp_k`` in one of three ways:

- ``u`` free-form: 18 offsets per pixel straight from a convolution (the official default);
- ``a`` affine-constrained: an orientation (cos, sin) and a scale, ``dp_k = s R p_k - p_k``;
- ``h`` homography-constrained: 4-point offsets, a differentiable DLT solves a homography H,
  ``dp_k = H(p_k) - p_k``.

Offsets are laid out as in the official code and in ONNX ``DeformConv``: per tap (dy, dx), taps
row-major (k = 3 * ky + kx). The sampling is bilinear with zeros outside the map.

Two implementations of the convolution itself: :func:`deform_conv2d_gridsample` (pure PyTorch,
differentiable: training, eager inference, and the GridSample+Conv ONNX graph) and the custom op
``aslfeat::deform_conv2d`` that the exporter turns into one ONNX ``DeformConv`` node.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tf_compat import l2_normalize

KERNEL = 3
TAPS = KERNEL * KERNEL


def _tap_grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular 3x3 tap offsets p_k = (x_k, y_k), row-major, each of shape (9,)."""
    r = torch.arange(-(KERNEL // 2), KERNEL // 2 + 1, device=device, dtype=torch.float32)
    y, x = torch.meshgrid(r, r, indexing="ij")
    return x.reshape(-1), y.reshape(-1)


def deform_conv2d_gridsample(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated 3x3 deformable convolution, stride 1, padding 1, via ``grid_sample``.

    Args:
        x: (B, C, H, W) input.
        weight: (O, C, 3, 3) kernel.
        offset: (B, 18, H, W), per tap (dy, dx).
        mask: (B, 9, H, W) modulation.
        bias: optional (O,).
    Returns:
        (B, O, H, W).
    """
    b, c, h, w = x.shape
    tx, ty = _tap_grid(x.device)
    off = offset.reshape(b, TAPS, 2, h, w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).reshape(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).reshape(1, 1, 1, w)
    py = rows + ty.reshape(1, TAPS, 1, 1) + off[:, :, 0]  # (B, 9, H, W)
    px = cols + tx.reshape(1, TAPS, 1, 1) + off[:, :, 1]
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = px * (2.0 / torch.clamp(torch.tensor(w - 1.0, dtype=x.dtype), min=1.0)) - 1.0
    gy = py * (2.0 / torch.clamp(torch.tensor(h - 1.0, dtype=x.dtype), min=1.0)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(b, TAPS * h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(b, c, TAPS, h, w) * mask.reshape(b, 1, TAPS, h, w)
    out = F.conv2d(sampled.reshape(b, c * TAPS, h, w), weight.reshape(weight.shape[0], -1, 1, 1))
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


@torch.library.custom_op("aslfeat::deform_conv2d", mutates_args=())
def deform_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """The same convolution as an opaque op, exported as one ONNX ``DeformConv`` node."""
    return deform_conv2d_gridsample(x, weight, offset, mask, bias)


@deform_conv2d_op.register_fake
def _(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


class FreeFormOffsets(nn.Module):
    """``u``: dp_k predicted freely (18 channels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 2 * TAPS, KERNEL, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset(x)


class AffineOffsets(nn.Module):
    """``a``: a similarity per pixel, orientation (cos, sin) and scale exp(tanh(s))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ori = nn.Conv2d(channels, 2, KERNEL, padding=1)
        self.scale = nn.Conv2d(channels, 1, KERNEL, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ori = l2_normalize(self.ori(x), dim=1)
        cos, sin = ori[:, 0:1], ori[:, 1:2]
        s = torch.exp(torch.tanh(self.scale(x)))
        tx, ty = _tap_grid(x.device)
        tx, ty = tx.reshape(1, TAPS, 1, 1), ty.reshape(1, TAPS, 1, 1)
        # Official: [x, y] @ (s * [[cos, sin], [-sin, cos]]) - [x, y].
        dx = s * (tx * cos - ty * sin) - tx
        dy = s * (tx * sin + ty * cos) - ty
        return torch.stack([dy, dx], dim=2).flatten(1, 2)


def _solve_spd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve a @ x = b for small symmetric positive-definite ``a`` (..., n, n), b (..., n).

    Unrolled Gaussian elimination: exportable to ONNX (no linalg ops there) and batched over
    every pixel. No pivoting is needed for a positive-definite matrix.
    """
    n = a.shape[-1]
    rows = [torch.cat([a[..., i, :], b[..., i : i + 1]], dim=-1) for i in range(n)]
    for i in range(n):
        pivot = rows[i] / rows[i][..., i : i + 1]
        rows[i] = pivot
        for j in range(i + 1, n):
            rows[j] = rows[j] - rows[j][..., i : i + 1] * pivot
    x = [None] * n
    for i in reversed(range(n)):
        acc = rows[i][..., n]
        for j in range(i + 1, n):
            acc = acc - rows[i][..., j] * x[j]
        x[i] = acc
    return torch.stack(x, dim=-1)


def solve_dlt_constrained(h4p: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Homography from 4-point offsets of the corners (+-1, +-1), as the authors' ``solve_DLT``.

    The official training code solves the constrained form: a homography with no translation,
    H = [[h0, h1, 0], [h2, h3, 0], [h4, h5, 1]], by least squares on the 8 DLT equations of the
    corner correspondences; the 2x2 linear part is then scaled by ``scale``.

    Args:
        h4p: (B, 8, H, W) corner displacements (x1, y1, ..., x4, y4).
        scale: (B, 1, H, W).
    Returns:
        (B, H, W, 3, 3).
    """
    src = torch.tensor([-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0], device=h4p.device)
    p = h4p.permute(0, 2, 3, 1)  # (B, H, W, 8)
    dst = p + src
    zero = torch.zeros_like(p[..., 0])
    eqs, rhs = [], []
    for k in range(4):
        x, y = src[2 * k], src[2 * k + 1]
        xd, yd = dst[..., 2 * k], dst[..., 2 * k + 1]
        # Columns (h0, h1, h2, h3, h4, h5); rows as Aux_M* build them in the official code.
        eqs.append(torch.stack([zero, zero, zero - x, zero - y, yd * x, yd * y], dim=-1))
        rhs.append(-yd)
        eqs.append(torch.stack([zero + x, zero + y, zero, zero, -xd * x, -xd * y], dim=-1))
        rhs.append(xd)
    a = torch.stack(eqs, dim=-2)  # (B, H, W, 8, 6)
    b = torch.stack(rhs, dim=-1)  # (B, H, W, 8)
    at = a.transpose(-1, -2)
    h6 = _solve_spd(at @ a, (at @ b.unsqueeze(-1)).squeeze(-1))
    s = scale.permute(0, 2, 3, 1)
    h6 = torch.cat([h6[..., :4] * s, h6[..., 4:]], dim=-1)
    ones = torch.ones_like(zero)
    mat = torch.stack(
        [h6[..., 0], h6[..., 1], zero, h6[..., 2], h6[..., 3], zero, h6[..., 4], h6[..., 5], ones],
        dim=-1,
    ).reshape(*zero.shape, 3, 3)
    # Official fallback: a single NaN anywhere turns every H into the identity.
    eye = torch.eye(3, device=h4p.device, dtype=mat.dtype)
    return torch.where(torch.isnan(mat).any(), eye, mat)


class HomographyOffsets(nn.Module):
    """``h``: 4-point offsets (tanh * 0.95) and a scale, solved into a homography per pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 8, KERNEL, padding=1)
        self.scale = nn.Conv2d(channels, 1, KERNEL, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h4p = torch.tanh(self.offset(x)) * 0.95
        s = torch.exp(torch.tanh(self.scale(x)))
        mat = solve_dlt_constrained(h4p, s)  # (B, H, W, 3, 3): rows of H
        tx, ty = _tap_grid(x.device)
        m = [mat[..., i, j].unsqueeze(1) for i in range(3) for j in range(3)]  # (B, 1, H, W)
        tx, ty = tx.reshape(1, TAPS, 1, 1), ty.reshape(1, TAPS, 1, 1)
        u = m[0] * tx + m[1] * ty + m[2]
        v = m[3] * tx + m[4] * ty + m[5]
        w = m[6] * tx + m[7] * ty + m[8]
        safe_w = torch.where(w == 0, torch.ones_like(w), w)  # divide_no_nan
        u = torch.where(w == 0, torch.zeros_like(u), u / safe_w).clamp(-10.0, 10.0)
        v = torch.where(w == 0, torch.zeros_like(v), v / safe_w).clamp(-10.0, 10.0)
        return torch.stack([v - ty, u - tx], dim=2).flatten(1, 2)


OFFSET_PREDICTORS = {"u": FreeFormOffsets, "a": AffineOffsets, "h": HomographyOffsets}


class DeformConv2d(nn.Module):
    """3x3 modulated deformable convolution without bias; ``variant`` picks the offsets.

    ``impl`` selects the kernel at export time: "gridsample" (default, differentiable) or
    "deformconv" (the custom op that becomes an ONNX ``DeformConv`` node).
    """

    def __init__(self, in_channels: int, out_channels: int, variant: str = "u") -> None:
        super().__init__()
        self.offsets = OFFSET_PREDICTORS[variant](in_channels)
        self.amplitude = nn.Conv2d(in_channels, TAPS, KERNEL, padding=1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, KERNEL, KERNEL))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        # The official code initialises the offset and amplitude convolutions to zero.
        for conv in [self.amplitude, *self.offsets.children()]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if variant == "a":
            with torch.no_grad():
                self.offsets.ori.bias.copy_(torch.tensor([1.0, 0.0]))
        self.impl = "gridsample"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offsets(x)
        mask = torch.sigmoid(self.amplitude(x))
        if self.impl == "deformconv":
            bias = torch.zeros(self.weight.shape[0], device=x.device, dtype=x.dtype)
            return deform_conv2d_op(x, self.weight, offset, mask, bias)
        return deform_conv2d_gridsample(x, self.weight, offset, mask)
