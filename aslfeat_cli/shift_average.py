"""Score maps averaged over passes of the image moved along the diagonal (``--shifts N``).

The network computes its coarse detector levels (conv3, conv6) at strides 2 and 4 and
upsamples them onto the input grid (the official fusion, TF1's legacy bilinear resize puts
their samples on every 2nd and 4th pixel). A bilinear surface peaks at its samples, so the
fused map's maxima snap to that lattice: 0.70 of the peak coordinates of the weights shipped
until 2026-12-06 are even and 0.46 divisible by 4 (``benchmarks/bench_lattice.py``; 0.72 and
0.36 with the current ones), up to 1-2 px from where the image puts them. Moving the image by
k pixels moves the content but not the lattice; averaging the maps of k = 0, 4/N, 2*4/N, ...
(moved back) leaves a map without the lattice. The network, its
weights and everything after the score map stay as they are; the descriptors come from the
first, unmoved pass (averaging them over the passes measured no gain), and with N = 1 the
result is the official single pass, bit for bit.

Measured (``benchmarks/eval_quality.py --shifts``): see the README's benchmark table.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

#: Allowed pass counts: divisors of the coarsest level's stride (4), so the shifts are even.
SHIFT_COUNTS = (1, 2, 4)


def diagonal_shifts(count: int, stride: int = 4) -> list[int]:
    """Pixel offsets of ``count`` passes spread evenly over one lattice period: 4 -> 0, 1, 2, 3."""
    if count not in SHIFT_COUNTS or stride % count:
        raise ValueError(f"shifts must be one of {', '.join(map(str, SHIFT_COUNTS))}")
    return [k * (stride // count) for k in range(count)]


def shift_averaged(
    dense: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    gray: np.ndarray,
    count: int,
    stride: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean score map of ``count`` diagonally moved passes of ``dense`` and the descriptor
    map of the unmoved pass.

    A pass moved by k pads the image with k reflected rows/columns at the top and left and
    ``stride - k`` at the bottom and right: its size stays congruent to the image's modulo the
    stride, so the network pads it ('SAME') the way it pads the image.
    """
    score_map, descriptor_map = dense(gray)
    if count == 1:
        return score_map, descriptor_map
    h, w = gray.shape
    total = score_map.astype(np.float32, copy=True)
    for k in diagonal_shifts(count, stride)[1:]:
        moved = cv2.copyMakeBorder(gray, k, stride - k, k, stride - k, cv2.BORDER_REFLECT_101)
        total += dense(moved)[0][k : k + h, k : k + w]
    return total / np.float32(count), descriptor_map
