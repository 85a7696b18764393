"""ASLFeat's training loss: a detector-weighted ranking loss over dense correspondences.

As in the official training code (lzx551402/tfmatch ``losses.py``, reimplemented here): per
pair, up to ``num_corr`` ground-truth correspondences are drawn at random; their descriptors
(conv6 bilinearly sampled at position / 4, L2-normalised) and their fused detection scores
(sampled at the position) are looked up in both views. A ranking loss per correspondence,
either the circle loss (the post-CVPR version: scale 512, margin 0.1, on cosine similarity) or
the hardest-contrastive loss (CVPR version: positive margin 0.2, negative margin 1.0, on
Euclidean distance), is weighted by ``score_a * score_b`` and normalised by the sum of the
weights (D2-Net's detector-weighted form): the detector learns to score highly where the
descriptor is distinctive. Correspondences closer than ``safe_radius`` pixels to the anchor in
the other view are never used as negatives. Fewer than ``min_corr`` correspondences give a
zero loss that still belongs to the graph (backward is a no-op, not an error).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CIRCLE_SCALE = 512.0
CIRCLE_MARGIN = 0.1
POS_MARGIN = 0.2
NEG_MARGIN = 1.0
DESCRIPTOR_STRIDE = 4


def sample_map(feature_map: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a (C, h, w) map at (N, 2) x, y map coordinates -> (N, C).

    Positions are clamped into the map as the official ``interpolate`` does.
    """
    _, h, w = feature_map.shape
    gx = xy[:, 0].clamp(0, w - 1) / max(w - 1, 1) * 2 - 1
    gy = xy[:, 1].clamp(0, h - 1) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None, None]  # (1, 1, N, 2)
    out = F.grid_sample(feature_map[None], grid, mode="bilinear", align_corners=True)
    return out[0, :, 0].t()


def circle_loss(sim: torch.Tensor, neg_mask_row: torch.Tensor, neg_mask_col: torch.Tensor):
    """Circle loss per correspondence from an (N, N) cosine-similarity matrix.

    Diagonal entries are the positives; entries where ``neg_mask_*`` is true are excluded from
    the negatives (the diagonal itself and neighbours within the safe radius).
    Returns (N,) the mean of the row- and column-wise losses.
    """
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    pos = sim.diagonal()
    # Self-paced weights (alpha) are constants, as in the circle-loss paper.
    alpha_p = (1 + CIRCLE_MARGIN - pos).clamp_min(0).detach()
    logit_p = -CIRCLE_SCALE * alpha_p * (pos - (1 - CIRCLE_MARGIN))
    alpha_n = (sim + CIRCLE_MARGIN).clamp_min(0).detach()
    logit_n = CIRCLE_SCALE * alpha_n * (sim - CIRCLE_MARGIN)
    ninf = torch.finfo(sim.dtype).min
    lse_row = torch.logsumexp(logit_n.masked_fill(neg_mask_row | eye, ninf), dim=1)
    lse_col = torch.logsumexp(logit_n.masked_fill(neg_mask_col | eye, ninf), dim=0)
    loss_row = F.softplus(logit_p + lse_row) / CIRCLE_SCALE
    loss_col = F.softplus(logit_p + lse_col) / CIRCLE_SCALE
    return (loss_row + loss_col) / 2


def hardest_contrastive_loss(
    sim: torch.Tensor, neg_mask_row: torch.Tensor, neg_mask_col: torch.Tensor
) -> torch.Tensor:
    """Hardest-contrastive loss per correspondence (margins 0.2 / 1.0 on Euclidean distance)."""
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    dist = torch.sqrt((2 - 2 * sim).clamp_min(1e-6))
    pos = dist.diagonal()
    big = torch.full_like(dist, 10.0)
    hard_row = torch.where(neg_mask_row | eye, big, dist).amin(dim=1)
    hard_col = torch.where(neg_mask_col | eye, big, dist).amin(dim=0)
    pos_loss = (pos - POS_MARGIN).clamp_min(0)
    loss_row = pos_loss + (NEG_MARGIN - hard_row).clamp_min(0)
    loss_col = pos_loss + (NEG_MARGIN - hard_col).clamp_min(0)
    return (loss_row + loss_col) / 2


LOSSES = {"circle": circle_loss, "hardest_contrastive": hardest_contrastive_loss}


def detector_weighted_loss(
    desc_a: torch.Tensor,
    desc_b: torch.Tensor,
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    pos_a: torch.Tensor,
    pos_b: torch.Tensor,
    *,
    loss_type: str = "circle",
    num_corr: int = 512,
    safe_radius: float = 12.0,
    min_corr: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one pair.

    Args:
        desc_a, desc_b: (C, h, w) dense descriptor maps (conv6, not normalised).
        score_a, score_b: (H, W) fused detection score maps.
        pos_a, pos_b: (N, 2) x, y image pixels of ground-truth correspondences.
        safe_radius: correspondences within this many image pixels of the anchor's match
            (measured in the view of the candidate) are not negatives; the default 12 px is
            3 cells of the descriptor grid (the official config's ``safe_radius: 12``).
    Returns:
        (loss scalar, stats dict with ``accuracy`` (fraction of correspondences whose match is
        the mutual nearest neighbour) and ``n_corr``).
    """
    n = int(pos_a.shape[0])
    if n < min_corr:
        zero = desc_a.sum() * 0 + desc_b.sum() * 0 + score_a.sum() * 0 + score_b.sum() * 0
        return zero, {"accuracy": float("nan"), "n_corr": n}
    if n > num_corr:
        keep = torch.randperm(n, generator=generator)[:num_corr]
        pos_a, pos_b = pos_a[keep], pos_b[keep]
        n = num_corr

    feat_a = F.normalize(sample_map(desc_a, pos_a / DESCRIPTOR_STRIDE).float(), dim=1)
    feat_b = F.normalize(sample_map(desc_b, pos_b / DESCRIPTOR_STRIDE).float(), dim=1)
    weight = (
        sample_map(score_a[None], pos_a)[:, 0].float()
        * sample_map(score_b[None], pos_b)[:, 0].float()
    )
    sim = (feat_a @ feat_b.t()).clamp(-1, 1)
    # Row i compares anchor a_i with every b_j: b_j too close to b_i is not a negative.
    near_b = torch.cdist(pos_b, pos_b) < safe_radius
    near_a = torch.cdist(pos_a, pos_a) < safe_radius
    per_corr = LOSSES[loss_type](sim, near_b, near_a)
    loss = (per_corr * weight).sum() / (weight.sum() + 1e-6)

    with torch.no_grad():
        idx = torch.arange(n)
        accuracy = ((sim.argmax(dim=1) == idx) & (sim.argmax(dim=0) == idx)).float().mean()
    return loss, {"accuracy": float(accuracy), "n_corr": n}
