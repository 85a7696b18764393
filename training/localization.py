"""Keypoint localization objectives on the fused multi-level score map.

ASLFeat's official recipe trains the detector only as a weight on the descriptor loss at random
positions, so nothing asks a score-map peak to sit where the other view's peak sits: our
keypoints were the least precise of the field at 1 px. Two objectives from later detectors ask
for it directly; both act on the (H, W) fused score map that inference detects on, so the
network and the inference path stay the official ones.

* **Reprojection** (ALIKE, Zhao et al. 2022, Sec. 3.3): non-maximum-suppressed peaks of each
  view, refined by a soft-argmax in a small window (differentiable sub-pixel positions), are
  warped into the other view with the ground-truth homography; mutual nearest neighbours closer
  than a cap are pulled together (both directions). A **dispersity** term (ALIKE's "peaky"
  loss) is the softmax-weighted mean distance of the window's pixels to the soft-argmax
  position: small when each window holds one sharp peak.
* **Repeatability** (R2D2, Revaud et al. 2019, Sec. 3.1): the cosine similarity of local
  patches of view A's score map with view B's map warped into A, plus R2D2's **peakiness**
  term (local max minus local mean of the max-normalised map).

Coordinates are (x, y) pixels with integers at pixel centres (the project's convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Defaults, also the ``train`` options' defaults (documented in ``train --help``).
WINDOW_RADIUS = 2  # soft-argmax window (2r+1)^2: ALIKE's 5x5
TEMPERATURE = 0.1  # softmax temperature on window scores relative to the window's range
NUM_PEAKS = 256  # peaks per view and pair
DISTANCE_CAP = 5.0  # pixels: farther nearest neighbours are not pulled together
PATCH_SIZE = 8  # R2D2's local patch for the cosine similarity and peakiness
#: Where the reprojection term takes each keypoint: the soft-argmax of its window, or the
#: official clipped Newton step that inference uses (``aslfeat_cli.keypoints.refine``).
POSITIONS = ("softargmax", "newton")
POSITION = "softargmax"
NEWTON_CLIP = 0.5  # pixels, as inference (keypoints.REFINEMENT_CLIP)


def warp(points: torch.Tensor, homography: torch.Tensor) -> torch.Tensor:
    """Apply a (3, 3) homography to (N, 2) x, y points (differentiable in ``points``)."""
    ones = torch.ones_like(points[:, :1])
    projected = torch.cat([points, ones], dim=1) @ homography.t().to(points.dtype)
    w = projected[:, 2:3]
    # Points at or behind the line at infinity get a far-away position, not inf/nan.
    w = torch.where(w.abs() < 1e-8, torch.full_like(w, 1e-8), w)
    return projected[:, :2] / w


def nms_peaks(
    score: torch.Tensor, num_peaks: int = NUM_PEAKS, radius: int = WINDOW_RADIUS, border: int = 5
) -> torch.Tensor:
    """Integer (row, col) positions (N, 2) of the highest local maxima of an (H, W) map.

    Local maxima in a (2 radius + 1)^2 window, strictly above the window mean; pixels closer
    than ``max(border, radius)`` to the edge are excluded so every soft-argmax window lies
    inside the map. Not differentiable (the
    positions are chosen, the scores around them carry the gradient).
    """
    s = score.detach()[None, None]
    size = 2 * radius + 1
    is_max = s == F.max_pool2d(s, size, stride=1, padding=radius)
    # A plateau (a warped view's black border, a flat sky) is no peak.
    is_max &= s > F.avg_pool2d(s, size, stride=1, padding=radius, count_include_pad=False)
    b = max(border, radius)
    is_max[..., :b, :] = False
    is_max[..., -b:, :] = False
    is_max[..., :, :b] = False
    is_max[..., :, -b:] = False
    flat = torch.where(is_max[0, 0], s[0, 0], torch.full_like(s[0, 0], -torch.inf)).flatten()
    k = min(num_peaks, int(is_max.sum()))
    if k == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=score.device)
    index = flat.topk(k).indices
    width = score.shape[1]
    return torch.stack([index // width, index % width], dim=1)


def window_offsets(radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(K, 2) x, y offsets of a (2 radius + 1)^2 window in raster order."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], dim=1)


def soft_argmax(
    score: torch.Tensor,
    peaks: torch.Tensor,
    radius: int = WINDOW_RADIUS,
    temperature: float = TEMPERATURE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel keypoints and their dispersity from the windows around integer peaks.

    Each window's scores go through ``softmax((s - max) / ((max - min) temperature))`` (max
    and min of the window, detached, so the loss does not just rescale the map); the keypoint
    is the peak plus the softmax-weighted mean offset. Returns ``(keypoints (N, 2) x, y, dispersity
    (N,))`` where dispersity is the softmax-weighted mean Euclidean distance of the window's
    pixels to the keypoint (ALIKE's peaky loss: 0 for a one-pixel peak).
    """
    offsets = window_offsets(radius, score.device, score.dtype)
    if len(peaks) == 0:
        empty = score.sum() * 0
        return score.new_zeros((0, 2)) + empty, score.new_zeros((0,)) + empty
    rows = peaks[:, :1] + offsets[None, :, 1].long()
    cols = peaks[:, 1:] + offsets[None, :, 0].long()
    patch = score[rows, cols]  # (N, K)
    # Scores relative to the window's range (detached): ASLFeat's fused map sits on a large
    # constant level, so relative to the maximum alone its windows look flat (measured on the
    # shipped weights: dispersity 1.8 px, close to a uniform 5x5 window's 1.6 px).
    top = patch.detach().amax(dim=1, keepdim=True)
    span = (top - patch.detach().amin(dim=1, keepdim=True)).clamp_min(1e-6)
    weights = torch.softmax((patch - top) / (span * temperature), dim=1)
    mean_offset = weights @ offsets  # (N, 2)
    keypoints = peaks.flip(1).to(score.dtype) + mean_offset
    spread = torch.sqrt(((offsets[None] - mean_offset[:, None]) ** 2).sum(-1) + 1e-8)
    return keypoints, (weights * spread).sum(dim=1)


def newton_keypoints(score: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Sub-pixel keypoints (N, 2) x, y by inference's refinement, differentiable in ``score``.

    One Newton step on the 3x3 finite differences around each integer (row, col) peak,
    clipped to NEWTON_CLIP, with a zero step where the Hessian is singular: the same arithmetic
    as ``aslfeat_cli.keypoints.refine``, so the loss trains the positions users get (the
    soft-argmax is only close to them where a window is symmetric). Peaks lie at least one
    pixel inside the map (``nms_peaks`` keeps a border).
    """
    if len(peaks) == 0:
        return score.new_zeros((0, 2)) + score.sum() * 0
    i, j = peaks[:, 0], peaks[:, 1]
    c = score[i, j]
    up, down = score[i - 1, j], score[i + 1, j]
    left, right = score[i, j - 1], score[i, j + 1]
    di = 0.5 * (down - up)
    dj = 0.5 * (right - left)
    dii = down - 2 * c + up
    djj = right - 2 * c + left
    corners = score[i + 1, j + 1] - score[i + 1, j - 1] - score[i - 1, j + 1] + score[i - 1, j - 1]
    dij = 0.25 * corners
    det = dii * djj - dij * dij
    singular = det == 0
    inv = 1.0 / torch.where(singular, torch.ones_like(det), det)
    inv = torch.where(singular, torch.zeros_like(inv), inv)
    step_i = -(djj * inv * di - dij * inv * dj)
    step_j = -(-dij * inv * di + dii * inv * dj)
    steps = torch.stack([step_j, step_i], dim=1).clamp(-NEWTON_CLIP, NEWTON_CLIP)
    return peaks.flip(1).to(score.dtype) + steps


def _inside(points: torch.Tensor, size: tuple[int, int], border: float = 0.0) -> torch.Tensor:
    width, height = size
    return (
        (points[:, 0] >= border)
        & (points[:, 0] <= width - 1 - border)
        & (points[:, 1] >= border)
        & (points[:, 1] <= height - 1 - border)
    )


def _mutual_pairs(
    a_in_b: torch.Tensor,
    b_in_a: torch.Tensor,
    keypoints_b: torch.Tensor,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    cap: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (ia, ib) of the mutual nearest neighbours in B's frame, both visible in the
    other view and closer than ``cap``; and the visibility mask of A's keypoints in B."""
    visible_a = _inside(a_in_b, size_b)
    visible_b = _inside(b_in_a, size_a)
    with torch.no_grad():
        dist = torch.cdist(a_in_b, keypoints_b)
        dist[~visible_a] = torch.inf
        dist[:, ~visible_b] = torch.inf
        nn_ab = dist.argmin(dim=1)
        nn_ba = dist.argmin(dim=0)
        idx_a = torch.arange(len(a_in_b), device=dist.device)
        mutual = (nn_ba[nn_ab] == idx_a) & (dist[idx_a, nn_ab] < cap)
    return idx_a[mutual], nn_ab[mutual], visible_a


def reprojection_loss(
    keypoints_a: torch.Tensor,
    keypoints_b: torch.Tensor,
    homography: torch.Tensor,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    cap: float = DISTANCE_CAP,
) -> tuple[torch.Tensor, dict[str, float]]:
    """ALIKE's reprojection loss between the sub-pixel keypoints of two views.

    Keypoints of A are warped into B (``homography`` maps A to B) and those of B into A;
    pairs that are mutual nearest neighbours (in B's frame), both visible in the other view and
    closer than ``cap`` pixels, contribute the mean of the two reprojection distances
    (A->B in B's pixels, B->A in A's pixels). Sizes are (W, H). Returns the mean over pairs (a
    graph-connected zero when there is none) and stats: ``pairs`` and ``repeatable`` (the
    fraction of visible A keypoints with a partner) and ``distance`` (mean, pixels).
    """
    zero = keypoints_a.sum() * 0 + keypoints_b.sum() * 0
    if len(keypoints_a) == 0 or len(keypoints_b) == 0:
        return zero, {"pairs": 0, "repeatable": 0.0, "distance": float("nan")}
    a_in_b = warp(keypoints_a, homography)
    b_in_a = warp(keypoints_b, torch.linalg.inv(homography.double()).to(keypoints_b.dtype))
    ia, ib, visible_a = _mutual_pairs(a_in_b.detach(), b_in_a.detach(), keypoints_b.detach(),
                                      size_a, size_b, cap)  # fmt: skip
    n_visible = int(visible_a.sum())
    if len(ia) == 0:
        return zero, {"pairs": 0, "repeatable": 0.0, "distance": float("nan")}
    d_ab = torch.sqrt(((a_in_b[ia] - keypoints_b[ib]) ** 2).sum(-1) + 1e-8)
    d_ba = torch.sqrt(((b_in_a[ib] - keypoints_a[ia]) ** 2).sum(-1) + 1e-8)
    per_pair = 0.5 * (d_ab + d_ba)
    stats = {
        "pairs": int(len(ia)),
        "repeatable": len(ia) / max(n_visible, 1),
        "distance": float(per_pair.detach().mean()),
    }
    return per_pair.mean(), stats


def _splat(offsets: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, K) bilinear weights of sub-pixel ``points`` (N, 2) on window ``offsets`` (K, 2)."""
    d = (offsets[None] - points[:, None]).abs()
    return (1 - d[..., 0]).clamp_min(0) * (1 - d[..., 1]).clamp_min(0)


def peak_target_loss(
    score: torch.Tensor,
    targets: torch.Tensor,
    radius: int = WINDOW_RADIUS,
    temperature: float = TEMPERATURE,
) -> tuple[torch.Tensor, int]:
    """Cross-entropy that asks ``score``'s integer peak and its neighbours to sit at sub-pixel
    ``targets`` (N, 2) x, y: the other view's keypoints warped into this one.

    Each target's (2r+1)^2 window around its nearest pixel goes through the soft-argmax's
    softmax; the target distribution is the bilinear splat of the target on that window's
    pixels. Unlike the reprojection term, whose keypoints are the current peaks plus a step of
    at most half a pixel, this moves which pixel is the peak: the fused map's peaks snap to the
    coarse levels' 2- and 4-pixel lattice (``benchmarks/bench_lattice.py``). Targets closer
    than ``radius`` to the edge are left out. Returns the mean over targets (a graph-connected
    zero when none) and their count.
    """
    height, width = score.shape
    centre = torch.round(targets.detach())
    inside = _inside(centre, (width, height), radius)
    if not bool(inside.any()):
        return score.sum() * 0, 0
    centre, points = centre[inside], targets.detach()[inside]
    offsets = window_offsets(radius, score.device, score.dtype)
    rows = centre[:, 1:].long() + offsets[None, :, 1].long()
    cols = centre[:, :1].long() + offsets[None, :, 0].long()
    patch = score[rows, cols]  # (N, K)
    top = patch.detach().amax(dim=1, keepdim=True)
    span = (top - patch.detach().amin(dim=1, keepdim=True)).clamp_min(1e-6)
    log_p = torch.log_softmax((patch - top) / (span * temperature), dim=1)
    target = _splat(offsets, points - centre)
    return -(target * log_p).sum(dim=1).mean(), int(inside.sum())


def warp_map(
    source: torch.Tensor, homography: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """View B's (H_b, W_b) map seen from A: ``out[y, x] = source(H (x, y))``, bilinear.

    ``homography`` maps A to B; ``size`` is A's (W, H). Returns the (H_a, W_a) warped map and a
    boolean mask of the pixels of A whose image lies inside B.
    """
    width, height = size
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=source.dtype, device=source.device),
        torch.arange(width, dtype=source.dtype, device=source.device),
        indexing="ij",
    )
    grid_a = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    in_b = warp(grid_a, homography)
    hb, wb = source.shape
    valid = _inside(in_b, (wb, hb)).reshape(height, width)
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    gx = in_b[:, 0] / max(wb - 1, 1) * 2 - 1
    gy = in_b[:, 1] / max(hb - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=1).reshape(1, height, width, 2)
    out = F.grid_sample(source[None, None], grid, mode="bilinear", align_corners=True)
    return out[0, 0], valid


def repeatability_loss(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    homography: torch.Tensor,
    patch: int = PATCH_SIZE,
) -> tuple[torch.Tensor, dict[str, float]]:
    """R2D2's repeatability loss: 1 - mean cosine similarity of local patches.

    B's score map is warped into A (``homography`` maps A to B); both maps are cut into
    ``patch`` x ``patch`` windows at stride ``patch / 2``, and windows not fully visible in B
    are left out. Each window's mean is removed first (a local normalised cross-correlation),
    so the term sees the peaks, not the map's constant level, and windows count in proportion
    to their contrast. Returns the loss (a graph-connected zero when no window is visible) and
    ``{"windows": count}``.
    """
    height, width = score_a.shape
    warped, valid = warp_map(score_b, homography, (width, height))
    stride = max(patch // 2, 1)
    cols_a = F.unfold(score_a[None, None], patch, stride=stride)[0]  # (patch^2, L)
    cols_b = F.unfold(warped[None, None], patch, stride=stride)[0]
    full = F.unfold(valid[None, None].to(score_a.dtype), patch, stride=stride)[0].amin(dim=0)
    keep = full > 0.5
    if not bool(keep.any()):
        return score_a.sum() * 0 + score_b.sum() * 0, {"windows": 0}
    # Patch means removed: ASLFeat's fused scores sit on a large constant level (mean ~0.5,
    # peaks ~1-3), which makes the plain cosine ~1 everywhere (measured 0.9997 on real pairs).
    cols_a = cols_a[:, keep] - cols_a[:, keep].mean(dim=0, keepdim=True)
    cols_b = cols_b[:, keep] - cols_b[:, keep].mean(dim=0, keepdim=True)
    cosine = F.cosine_similarity(cols_a, cols_b, dim=0, eps=1e-6)
    # Windows weighted by their (detached) contrast: the cosine of two nearly flat windows is
    # noise, and it would otherwise count as much as a window holding a peak.
    weight = (cols_a.norm(dim=0) * cols_b.norm(dim=0)).detach()
    loss = ((1 - cosine) * weight).sum() / weight.sum().clamp_min(1e-12)
    return loss, {"windows": int(keep.sum())}


def shift_image(images: torch.Tensor, shift: int) -> torch.Tensor:
    """(B, C, H, W) images with their content moved ``shift`` pixels right and down (reflect
    padding at the top and left, the last rows and columns dropped): the same size, so the
    network's padding and lattice stay those of the original."""
    if shift == 0:
        return images
    height, width = images.shape[-2:]
    return F.pad(images, (shift, 0, shift, 0), mode="reflect")[..., :height, :width]


def shift_consistency_loss(
    score: torch.Tensor, shifted_score: torch.Tensor, shift: int, patch: int = PATCH_SIZE
) -> tuple[torch.Tensor, dict[str, float]]:
    """Equivariance to integer shifts: R2D2's repeatability between the fused map of an image
    and the map of the same image moved ``shift`` pixels along the diagonal (:func:`shift_image`).

    The coarse levels are computed on a 2- and 4-pixel lattice and upsampled, so the fused
    map's peaks snap to that lattice; moved by a pixel, the content moves but the lattice does
    not, and the peaks land on other nodes. An equivariant map scores 0. Averaging the maps of
    the four diagonal shifts at inference (``Extractor(shifts=4)``) removed the lattice
    and raised MMA@1 from 0.302 to 0.417 on 20 held-out pairs; this term asks one pass for it.
    """
    return repeatability_loss(score, shifted_score, _translation(shift, score), patch)


def _translation(shift: int, like: torch.Tensor) -> torch.Tensor:
    h = torch.eye(3, dtype=like.dtype, device=like.device)
    h[0, 2] = h[1, 2] = float(shift)
    return h


def peakiness_loss(score: torch.Tensor, patch: int = PATCH_SIZE) -> torch.Tensor:
    """R2D2's peakiness term: 1 - mean(local max - local mean) of the max-normalised map.

    The map is divided by its (detached) global maximum so the term asks for peaks, not for a
    larger scale (inference thresholds the raw score).
    """
    s = (score / score.detach().max().clamp_min(1e-6))[None, None]
    pad = patch // 2
    local_max = F.max_pool2d(s, patch + 1, stride=1, padding=pad)
    local_mean = F.avg_pool2d(s, patch + 1, stride=1, padding=pad, count_include_pad=False)
    return 1 - (local_max - local_mean).mean()


def localization_loss(
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    homography: torch.Tensor,
    *,
    reprojection_weight: float = 1.0,
    dispersity_weight: float = 1.0,
    repeatability_weight: float = 0.0,
    peakiness_weight: float = 0.0,
    target_weight: float = 0.0,
    radius: int = WINDOW_RADIUS,
    temperature: float = TEMPERATURE,
    num_peaks: int = NUM_PEAKS,
    cap: float = DISTANCE_CAP,
    patch: int = PATCH_SIZE,
    position: str = POSITION,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled terms for one pair of (H, W) fused score maps.

    Terms with weight 0 are not computed. ``position`` (POSITIONS) says where the reprojection
    term takes the keypoints; dispersity always uses the soft-argmax windows. Returns the loss
    and per-term stats (``reproj``, ``disp``, ``rep``, ``peaky``, ``target`` values; ``pairs``,
    ``repeatable``, ``distance``).
    """
    size_a = (score_a.shape[1], score_a.shape[0])
    size_b = (score_b.shape[1], score_b.shape[0])
    total = score_a.sum() * 0 + score_b.sum() * 0
    stats: dict[str, float] = {}
    if reprojection_weight > 0 or dispersity_weight > 0 or target_weight > 0:
        peaks_a = nms_peaks(score_a, num_peaks, radius)
        peaks_b = nms_peaks(score_b, num_peaks, radius)
        kp_a, disp_a = soft_argmax(score_a, peaks_a, radius, temperature)
        kp_b, disp_b = soft_argmax(score_b, peaks_b, radius, temperature)
        if position == "newton":
            kp_a, kp_b = newton_keypoints(score_a, peaks_a), newton_keypoints(score_b, peaks_b)
        elif position != "softargmax":
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}")
        if reprojection_weight > 0:
            reproj, rstats = reprojection_loss(kp_a, kp_b, homography, size_a, size_b, cap)
            total = total + reprojection_weight * reproj
            stats.update(reproj=float(reproj.detach()), **rstats)
        if dispersity_weight > 0 and len(disp_a) + len(disp_b) > 0:
            disp = torch.cat([disp_a, disp_b]).mean()
            total = total + dispersity_weight * disp
            stats["disp"] = float(disp.detach())
        if target_weight > 0:
            # Each view's keypoints that have a partner (mutual nearest, closer than the cap),
            # warped, are the targets of the other view's map: a keypoint without one is not
            # a localization error, and asking the other map for a peak there measured no gain
            # (target cross-entropy flat near 3.9 over 400 steps, above a uniform window's 3.2).
            a_in_b = warp(kp_a.detach(), homography)
            b_in_a = warp(kp_b.detach(), torch.linalg.inv(homography.double()).to(kp_b.dtype))
            ia, ib, _ = _mutual_pairs(a_in_b, b_in_a, kp_b.detach(), size_a, size_b, cap)
            t_b, n_b = peak_target_loss(score_b, a_in_b[ia], radius, temperature)
            t_a, n_a = peak_target_loss(score_a, b_in_a[ib], radius, temperature)
            target = (t_a * n_a + t_b * n_b) / max(n_a + n_b, 1)
            total = total + target_weight * target
            stats["target"] = float(target.detach())
    if repeatability_weight > 0:
        rep, rep_stats = repeatability_loss(score_a, score_b, homography, patch)
        total = total + repeatability_weight * rep
        stats.update(rep=float(rep.detach()), **rep_stats)
    if peakiness_weight > 0:
        peaky = 0.5 * (peakiness_loss(score_a, patch) + peakiness_loss(score_b, patch))
        total = total + peakiness_weight * peaky
        stats["peaky"] = float(peaky.detach())
    return total, stats
