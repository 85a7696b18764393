"""Descriptor-guided refinement of matched keypoints (``--refine-matches``).

Two views' keypoints are detected independently, so a correct match can join points 1–3 px
apart: each score map peaks where its own view puts it. Given a match, the other view already
says what the point looks like: its descriptor. Here a matched keypoint moves, within a small
window of network pixels, to where its own image's dense descriptor map is most similar to the
descriptor it was matched to (a grid search over bilinear samples, re-centred while the best
sample lies on the window's edge, then a 1-D quadratic fit per axis and a quarter-step pass).
The idea is featuremetric
keypoint adjustment (Pixel-Perfect SfM, Lindenberger et al., ICCV 2021) with the network's own
descriptors as the features.

The descriptor map is the detection pass's (stride 4 in network pixels), so it is fine enough
only on an enlarged image: with ``--upscale 2`` its lattice is 2 image pixels and the
refinement raises MMA@1; on the image as given (4-pixel lattice) it lowers it (README), which is
why :func:`check_refinement` asks for ``upscale >= MIN_UPSCALE``.

* :func:`refine_towards` moves points towards target descriptors in one descriptor map;
* :func:`refine_two_view` refines two-view matches (``evaluate``): the points of the view in
  which the scene looks smaller move towards the other view's descriptors (measured better
  than the other way round, in both directions of zoom; README);
* :func:`refine_tracks` refines the keypoints of a matched image set track by track, each
  towards its track's root (the keypoint with the most matches), before COLMAP
  (``reconstruct``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .images import scale_keypoints
from .keypoints import DESCRIPTOR_STRIDE, sample_descriptors

logger = logging.getLogger(__name__)

#: Half-width of the search window in network pixels (one descriptor cell each way on a
#: 2x-enlarged image is 4 network pixels; 2 measured best, README).
SEARCH_RADIUS = 2.0
#: Grid step of the search in network pixels; the quadratic fit works below it.
SEARCH_STEP = 0.5
#: Times the window may re-centre on an edge sample before the search stops there.
MAX_RECENTRES = 2
#: Smallest ``upscale`` the refinement is allowed with (the descriptor lattice must be fine).
MIN_UPSCALE = 2.0

#: The dense descriptor map of an image's detection pass and the (W, H) it was computed at.
DenseDescriptors = tuple[np.ndarray, tuple[int, int]]
#: An image -> its :data:`DenseDescriptors` (``Extractor.descriptor_map``).
DescriptorMapFn = Callable[[np.ndarray], DenseDescriptors]


def check_refinement(
    upscale: float, multi_scale: bool = False, pool_scales: Sequence[float] = ()
) -> None:
    """Raise ValueError where the refinement cannot help (see the module docstring)."""
    if multi_scale:
        raise ValueError("match refinement cannot be combined with multi-scale extraction")
    if pool_scales:
        # Pooled descriptors are not samples of the detection pass's map: measured, the
        # search then lowers MMA@1 (200 synthetic pairs 0.598 -> 0.478, README).
        raise ValueError("match refinement cannot be combined with --pool-scales")
    if upscale < MIN_UPSCALE:
        raise ValueError(
            f"match refinement needs --upscale {MIN_UPSCALE:g} or more (the descriptor map's "
            f"lattice is {DESCRIPTOR_STRIDE / upscale:g} px of the image at --upscale "
            f"{upscale:g}: too coarse, it lowers MMA@1)"
        )


def search_grid(radius: float = SEARCH_RADIUS, step: float = SEARCH_STEP) -> np.ndarray:
    """Offsets (side, side, 2) as (row, col), from -radius to radius in steps of ``step``."""
    offsets = np.arange(-radius, radius + step / 2, step)
    return np.stack(np.meshgrid(offsets, offsets, indexing="ij"), -1)


def _parabola_vertex(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three equally spaced samples, in steps from the centre
    (within ±0.5; 0 where the samples do not curve down)."""
    curvature = minus - 2 * centre + plus
    safe = np.where(curvature < 0, curvature, -1.0)
    return np.where(curvature < 0, np.clip(0.5 * (minus - plus) / safe, -0.5, 0.5), 0.0)


def _grid_search(
    targets: np.ndarray,
    centres: np.ndarray,
    descriptor_map: np.ndarray,
    radius: float,
    step: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The offset (M, 2) row, col from each of ``centres`` to its most similar sample on a
    grid of ``step`` within ``radius`` (plus the quadratic sub-step where that sample is inside
    the grid), and whether it lies on the grid's edge (M,)."""
    grid = search_grid(radius, step)
    side = grid.shape[0]
    flat = grid.reshape(-1, 2)
    samples = (centres[:, None, :] + flat[None]).reshape(-1, 2)
    descriptors = sample_descriptors(descriptor_map, samples).reshape(len(centres), len(flat), -1)
    similarity = np.einsum("mgd,md->mg", descriptors, targets).reshape(-1, side, side)
    best = similarity.reshape(len(centres), -1).argmax(1)
    bi, bj = np.divmod(best, side)
    edge = (bi == 0) | (bi == side - 1) | (bj == 0) | (bj == side - 1)
    k = np.flatnonzero(~edge)
    i, j = bi[k], bj[k]
    sub = np.zeros((len(centres), 2))
    sub[k, 0] = _parabola_vertex(
        similarity[k, i - 1, j], similarity[k, i, j], similarity[k, i + 1, j]
    )
    sub[k, 1] = _parabola_vertex(
        similarity[k, i, j - 1], similarity[k, i, j], similarity[k, i, j + 1]
    )
    return flat[best] + sub * step, edge


def refine_towards(
    targets: np.ndarray,
    positions: np.ndarray,
    descriptor_map: np.ndarray,
    radius: float = SEARCH_RADIUS,
    step: float = SEARCH_STEP,
    max_recentres: int = MAX_RECENTRES,
) -> np.ndarray:
    """Move each of ``positions`` (M, 2) x, y in network pixels to where ``descriptor_map``
    (h, w, D; stride 4, as the network gives it) is most similar to its row of ``targets``
    (M, D, unit length). Returns (M, 2) float64 x, y.

    The search samples a square grid of ``step`` around each point; while the best sample
    lies on the grid's edge the grid re-centres there (at most ``max_recentres`` times); a
    1-D quadratic fit per axis through the best sample and its neighbours gives the sub-step
    offset, and a second grid of a quarter step around the result refines it (the fit on the
    coarse grid is biased by the bilinear interpolation's kinks).
    """
    current = np.asarray(positions, np.float64)[:, ::-1].copy()  # row, col
    targets = np.asarray(targets, np.float32)
    todo = np.arange(len(current))
    for _ in range(max_recentres + 1):
        offset, edge = _grid_search(targets[todo], current[todo], descriptor_map, radius, step)
        current[todo] += offset
        todo = todo[edge]
        if len(todo) == 0:
            break
    offset, _ = _grid_search(targets, current, descriptor_map, step, step / 4)
    return (current + offset)[:, ::-1]


def refine_pair(
    keypoints_b: np.ndarray,
    targets: np.ndarray,
    dense_b: DenseDescriptors,
    image_size_b: tuple[int, int],
) -> np.ndarray:
    """Refined (M, 2) x, y of B's matched keypoints ``keypoints_b`` (pixels of B as given),
    each moved towards its match's descriptor in ``targets`` (M, D) through B's detection-pass
    descriptor map ``dense_b``."""
    descriptor_map, network_size = dense_b
    on_network = scale_keypoints(keypoints_b, image_size_b, network_size).astype(np.float64)
    refined = refine_towards(targets, on_network, descriptor_map)
    return scale_keypoints(refined, network_size, image_size_b).astype(np.float64)


def zoom_between(points0: np.ndarray, points1: np.ndarray, samples: int = 4000) -> float:
    """How much larger the scene looks in view 1 than in view 0, from matched points (M, 2):
    the median ratio of the distances between random pairs of matches (robust to a minority
    of wrong matches; 1.0 for fewer than two matches)."""
    if len(points0) < 2:
        return 1.0
    rng = np.random.default_rng(0)
    i = rng.integers(0, len(points0), samples)
    j = rng.integers(0, len(points0), samples)
    d0 = np.linalg.norm(points0[i] - points0[j], axis=1)
    d1 = np.linalg.norm(points1[i] - points1[j], axis=1)
    keep = (d0 > 1.0) & (d1 > 1.0)  # pairs of one point or of neighbours say nothing
    return float(np.median(d1[keep] / d0[keep])) if keep.any() else 1.0


def refine_two_view(
    points0: np.ndarray,
    points1: np.ndarray,
    descriptors0: np.ndarray,
    descriptors1: np.ndarray,
    dense0: Callable[[], DenseDescriptors],
    dense1: Callable[[], DenseDescriptors],
    image_size0: tuple[int, int],
    image_size1: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Refined (M, 2) x, y of two views' matched points (row i of each is match i): the
    points of the view in which the scene looks smaller (:func:`zoom_between`) move towards
    their matches' descriptors (``descriptors0``/``descriptors1``, (M, D)) in that view's
    descriptor map (``dense0()``/``dense1()``, only the one needed is called); the other
    view's points stay."""
    points0 = np.asarray(points0, np.float64)
    points1 = np.asarray(points1, np.float64)
    if zoom_between(points0, points1) > 1.0:
        return refine_pair(points0, descriptors1, dense0(), image_size0), points1
    return points0, refine_pair(points1, descriptors0, dense1(), image_size1)


# --------------------------------------------------------------------------- tracks


def track_roots(
    counts: Mapping[str, int], matches: Iterable[tuple[str, str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """For every image, the root of each keypoint's track as a global node id (-1: the
    keypoint is unmatched or is its track's root).

    ``counts``: keypoints per image; ``matches``: (name0, name1, (M, 2) indices). Tracks are
    the connected components of the match graph; the root of a track is its keypoint with the
    most matches (ties: the first in ``counts`` order, then the lower index), so that the most
    connected observation stays put and the others align to it.
    """
    names = list(counts)
    starts = np.cumsum([0, *[counts[n] for n in names]])[:-1].tolist()
    offsets = dict(zip(names, starts, strict=True))
    total = sum(counts.values())
    parent = list(range(total))
    degree = np.zeros(total, np.int64)

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    for name0, name1, pairs in matches:
        if len(pairs) == 0:
            continue
        a = offsets[name0] + np.asarray(pairs[:, 0], np.int64)
        b = offsets[name1] + np.asarray(pairs[:, 1], np.int64)
        np.add.at(degree, a, 1)
        np.add.at(degree, b, 1)
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = find(x), find(y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)
    component = np.array([find(node) for node in range(total)], np.int64)
    # The root of each component: most matches, then the lowest node id.
    order = np.lexsort((np.arange(total), -degree, component))
    first = np.ones(total, bool)
    first[1:] = component[order][1:] != component[order][:-1]
    root_of_component = np.full(total, -1)
    root_of_component[component[order][first]] = order[first]
    root = root_of_component[component]
    root[(degree == 0) | (root == np.arange(total))] = -1
    return {n: root[offsets[n] : offsets[n] + counts[n]] for n in names}


@dataclass
class TrackRefinement:
    """What :func:`refine_tracks` did: keypoints moved and their mean and median shift (px)."""

    moved: int
    mean_shift: float
    median_shift: float


def _root_descriptors(
    roots: Mapping[str, np.ndarray],
    counts: Mapping[str, int],
    descriptors: Callable[[str], np.ndarray],
) -> dict[str, np.ndarray]:
    """For every image, the descriptors (M, D) of the roots of its keypoints that move
    (``roots[name] >= 0``, global node ids in ``counts`` order). Each image that roots a
    track is read once (``descriptors(name)``), and only the rows needed are kept."""
    names = list(counts)
    starts = np.cumsum([0, *[counts[n] for n in names]])
    wanted = np.concatenate([r[r >= 0] for r in roots.values()] + [np.zeros(0, np.int64)])
    owners = np.unique(np.searchsorted(starts, wanted, side="right") - 1)
    by_node: dict[int, np.ndarray] = {}
    for k in owners.tolist():
        nodes = np.unique(wanted[(wanted >= starts[k]) & (wanted < starts[k + 1])])
        rows = np.asarray(descriptors(names[k]), np.float32)[nodes - starts[k]]
        by_node.update(zip(nodes.tolist(), rows, strict=True))
    return {
        n: np.array([by_node[node] for node in r[r >= 0].tolist()], np.float32)
        for n, r in roots.items()
    }


def refine_tracks(
    names: Sequence[str],
    keypoints: Mapping[str, np.ndarray],
    descriptors: Callable[[str], np.ndarray],
    matches: Iterable[tuple[str, str, np.ndarray]],
    dense: Callable[[str], DenseDescriptors],
    image_sizes: Mapping[str, tuple[int, int]],
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], TrackRefinement]:
    """Refined keypoints (x, y, pixels of each image as given) of every image in ``names``.

    Each matched keypoint that is not its track's root moves towards the root's descriptor
    (``descriptors(name)``: an image's stored, unit-length ones, read once per image that
    roots a track) in its own image's descriptor map (``dense(name)``: the detection pass's
    map and its size; called once per image with keypoints to move). Roots and unmatched
    keypoints keep their positions.
    """
    from tqdm import tqdm

    counts = {n: len(keypoints[n]) for n in names}
    roots = track_roots(counts, matches)
    targets = _root_descriptors(roots, counts, descriptors)
    refined: dict[str, np.ndarray] = {}
    shifts = []
    for name in tqdm(names, desc="refine", unit="img", disable=not progress):
        points = np.asarray(keypoints[name], np.float64)
        moving = np.flatnonzero(roots[name] >= 0)
        out = points.copy()
        if len(moving):
            out[moving] = refine_pair(points[moving], targets[name], dense(name), image_sizes[name])
            shifts.append(np.linalg.norm(out[moving] - points[moving], axis=1))
        refined[name] = out.astype(np.float32)
    moved = np.concatenate(shifts) if shifts else np.zeros(0)
    summary = TrackRefinement(
        moved=len(moved),
        mean_shift=float(moved.mean()) if len(moved) else 0.0,
        median_shift=float(np.median(moved)) if len(moved) else 0.0,
    )
    logger.info(
        "refined %d matched keypoint(s): mean shift %.2f px, median %.2f px",
        summary.moved,
        summary.mean_shift,
        summary.median_shift,
    )
    return refined, summary
