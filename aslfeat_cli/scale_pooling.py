"""Descriptors pooled over input scales (``--pool-scales``): domain-size pooling.

The network describes a keypoint by what its conv6 receptive field sees, a fixed window in
network pixels. Where two views differ in scale (zoom, distance), the windows of a keypoint
cover different parts of the scene. DSP-SIFT (Dong and Soatto, CVPR 2015) pools SIFT
descriptors over several window sizes for this; here the window stays and the image is resized:
the network also runs on the image resized by each pooling scale, each map is sampled at the
keypoint (mapped with the pixel-centre convention) and the unit descriptors are summed with the
detection pass's and L2-normalised again. Keypoints and scores stay those of the detection
pass; only the descriptors change (same size, unit length), so matching, files and COLMAP see
ordinary descriptors.

What it measured (README, "Precise keypoints"): with ``--upscale 2``, a descriptor from the
pass on the image as given alone made fewer wrong matches but fewer within 1 px, the
detection pass's alone the reverse; their sum keeps the fine pass's detail and adds the
coarse one's context, so MMA rises at every threshold on zoomed pairs. The keypoints do not
move: the extra correct matches include imprecise ones, and the SfM reprojection error rises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .images import resize_image, scale_keypoints, scaled_size
from .keypoints import sample_descriptors

#: Smallest pooling scale: at 1/4 the network's 4-px descriptor cells are 16 image pixels.
MIN_POOL_SCALE = 0.25


def check_pool_scales(
    scales: Sequence[float], upscale: float = 1.0, multi_scale: bool = False
) -> tuple[float, ...]:
    """The pooling scales as a tuple of floats, or ValueError.

    Each must lie in [:data:`MIN_POOL_SCALE`, max(1, ``upscale``)] (so the largest network
    input, the one the memory check counts, stays the detection pass's), differ from
    ``upscale`` (the detection pass, pooled already) and appear once; none with
    ``multi_scale`` (each pyramid level would need its own scales, and the pyramid already
    gives every level's keypoints that level's descriptors).
    """
    out = tuple(float(s) for s in scales)
    if out and multi_scale:
        raise ValueError("pool scales and multi-scale (the image pyramid) do not combine")
    high = max(1.0, float(upscale))
    for s in out:
        if not MIN_POOL_SCALE <= s <= high:
            raise ValueError(
                f"pool scales must be between {MIN_POOL_SCALE:g} and {high:g} (the --upscale "
                f"factor or 1), got {s:g}"
            )
        if s == upscale:
            raise ValueError(f"pool scale {s:g} is the detection pass's (--upscale): already in")
    if len(set(out)) != len(out):
        raise ValueError("pool scales must not repeat")
    return out


def format_pool_scales(scales: Sequence[float]) -> str:
    """The record of ``pool_scales`` in features files and settings: "1,0.5", or "none"."""
    return ",".join(f"{s:g}" for s in scales) or "none"


def parse_pool_scales(text: str) -> tuple[float, ...]:
    """Comma-separated factors ("1,0.5"; "" or "none": none) as floats; ValueError if not."""
    text = text.strip()
    if text in ("", "none"):
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"pool scales are comma-separated numbers, got {text!r}") from None


def pooled_descriptors(
    dense: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    gray: np.ndarray,
    keypoints: np.ndarray,
    descriptors: np.ndarray,
    scales: Sequence[float],
    min_size: int = 1,
) -> np.ndarray:
    """``descriptors`` (N, D unit, of ``keypoints`` (N, 2) x, y in ``gray``'s pixels) summed
    with the network's descriptors at the same points of ``gray`` resized by each of
    ``scales``, L2-normalised: (N, D) float32.

    ``dense`` maps an image to (score map, descriptor map) (:meth:`.Extractor.dense`). Scales
    whose image would have a side below ``min_size`` (the network's minimum) are left out.
    """
    total = np.asarray(descriptors, np.float64).copy()
    if len(total) == 0 or not scales:
        return np.asarray(descriptors, np.float32)
    h, w = gray.shape[:2]
    for scale in scales:
        size = scaled_size(w, h, scale)
        if min(size) < min_size:
            continue
        _, descriptor_map = dense(resize_image(gray, size))
        rows_cols = scale_keypoints(keypoints, (w, h), size)[:, ::-1]
        total += sample_descriptors(descriptor_map, np.ascontiguousarray(rows_cols))
    norm = np.sqrt(np.maximum((total * total).sum(axis=1, keepdims=True), 1e-12))
    return (total / norm).astype(np.float32)
