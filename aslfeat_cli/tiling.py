"""Large images through the network in overlapping tiles, so memory is bounded by the tile.

The network's peak memory grows about 1 GB per megapixel (``benchmarks/bench_memory.py``), so an
image with more than :data:`TILE_PIXELS` pixels runs as a grid of crops, each with
:data:`TILE_MARGIN` pixels of context on every inner side, and the dense maps are stitched from
the crops' cores. The result equals one whole-image run up to the margin's reach:

- the per-image standardisation is taken out of the graph and applied to the whole image first
  (:mod:`aslfeat_cli.standardization`), otherwise each crop would have its own statistics;
- crops start on multiples of 4 and their sizes are congruent to the image's modulo 4, so the
  stride-2 convolutions' TF "SAME" padding and the stride-4 descriptor grid fall as in the whole
  image;
- the deformable convolutions reach far: a 4x4-pixel change moved scores up to ~140 rows and ~170
  columns away (measured on fountain-P11), hence a 160-pixel margin. At 128 px, 99.4 % of the
  keypoints stayed within 0.5 px of the whole-image run (fountain-P11, 2x2 tiles).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Images with more pixels run in tiles of at most this many pixels (margins included); the
#: 1536x1024 photos of the SfM tests (1.57 MP) still run whole.
TILE_PIXELS = 1_600_000
#: Context around each tile's core, in pixels (a multiple of 4).
TILE_MARGIN = 160
_ALIGN = 4  # the descriptor stride and twice the stride-2 convolutions' step
_MAX_SPLITS = 256  # per axis: far more than 40 MP (the decoding limit) needs


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the crop [start, stop) and its core [core_start, core_stop)."""

    start: int
    stop: int
    core_start: int
    core_stop: int


def _spans(length: int, splits: int, margin: int) -> list[Span]:
    """``splits`` cores of about equal size cut at multiples of 4, each with its crop."""
    cuts = [0]
    for i in range(1, splits):
        cuts.append(_ALIGN * round(i * length / splits / _ALIGN))
    cuts.append(length)
    spans = []
    for core_start, core_stop in zip(cuts[:-1], cuts[1:], strict=True):
        start = max(0, core_start - margin)
        stop = min(length, core_stop + margin)
        # Sizes congruent to the image's modulo 4 (SAME padding depends on the parity).
        stop = min(length, stop + (length - stop + start) % _ALIGN)
        spans.append(Span(start, stop, core_start, core_stop))
    return spans


def _valid(spans: list[Span]) -> bool:
    return all(s.core_stop > s.core_start for s in spans)


def plan_tiles(
    height: int, width: int, tile_pixels: int = TILE_PIXELS, margin: int = TILE_MARGIN
) -> list[tuple[Span, Span]]:
    """The (row span, column span) of every tile for an image of ``height`` x ``width``: one
    tile when it has at most ``tile_pixels`` pixels, else the grid with the fewest computed
    pixels whose every crop has at most ``tile_pixels``. ValueError when no grid fits (a
    ``tile_pixels`` too small for the margin)."""
    if margin % _ALIGN:
        raise ValueError(f"the tile margin must be a multiple of {_ALIGN}, got {margin}")
    if height * width <= tile_pixels:
        return [(Span(0, height, 0, height), Span(0, width, 0, width))]
    best: tuple[int, list[tuple[Span, Span]]] | None = None
    max_rows = min(_MAX_SPLITS, math.ceil(height / _ALIGN))
    max_cols = min(_MAX_SPLITS, math.ceil(width / _ALIGN))
    for ny in range(1, max_rows + 1):
        rows = _spans(height, ny, margin)
        if not _valid(rows):
            break
        tallest = max(s.stop - s.start for s in rows)
        if tallest * min(width, 2 * margin + _ALIGN) > tile_pixels:
            continue  # even the narrowest columns would not fit
        for nx in range(1, max_cols + 1):
            cols = _spans(width, nx, margin)
            if not _valid(cols):
                break
            if tallest * max(s.stop - s.start for s in cols) > tile_pixels:
                continue
            cost = sum(r.stop - r.start for r in rows) * sum(c.stop - c.start for c in cols)
            if best is None or cost < best[0]:
                best = (cost, [(r, c) for r in rows for c in cols])
            break  # more columns only add margins
    if best is None:
        raise ValueError(
            f"no tiling of {width}x{height} into {tile_pixels}-pixel tiles with a {margin} px "
            "margin: raise the tile size"
        )
    return best[1]


def run_tiled(
    run_network: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
    stride: int,
    tiles: list[tuple[Span, Span]],
) -> tuple[np.ndarray, np.ndarray]:
    """Score map (H, W) and descriptor map (ceil(H/stride), ceil(W/stride), D) of the
    standardised image ``x``, stitched from ``run_network`` on each tile's crop."""
    height, width = x.shape
    score_map = np.empty((height, width), np.float32)
    descriptor_map: np.ndarray | None = None
    for rows, cols in tiles:
        crop = np.ascontiguousarray(x[rows.start : rows.stop, cols.start : cols.stop])
        scores, descriptors = run_network(crop)
        if descriptor_map is None:
            shape = (-(-height // stride), -(-width // stride), descriptors.shape[-1])
            descriptor_map = np.empty(shape, np.float32)
        r0, r1 = rows.core_start - rows.start, rows.core_stop - rows.start
        c0, c1 = cols.core_start - cols.start, cols.core_stop - cols.start
        score_map[rows.core_start : rows.core_stop, cols.core_start : cols.core_stop] = scores[
            r0:r1, c0:c1
        ]
        # Cores start on multiples of the stride; the last one ends at the image border.
        d0, d1 = r0 // stride, -(-r1 // stride)
        e0, e1 = c0 // stride, -(-c1 // stride)
        descriptor_map[
            rows.core_start // stride : -(-rows.core_stop // stride),
            cols.core_start // stride : -(-cols.core_stop // stride),
        ] = descriptors[d0:d1, e0:e1]
    assert descriptor_map is not None  # plan_tiles returns at least one tile
    return score_map, descriptor_map
