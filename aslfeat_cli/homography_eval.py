"""Feature quality on image pairs related by a known homography (the HPatches protocol).

Per pair, with mutual nearest-neighbour matching of the descriptors (dot product, as the
official ``utils/evaluator.py`` ``bf_matcher_graph`` with ``mutual_check=True``), the metrics
follow the official ASLFeat evaluation (lzx551402/ASLFeat, ``hseq_eval.py`` and
``utils/evaluator.py``), with ``t`` = the error threshold (official ``err_thld``: 3 px):

* **covisible** keypoints: those of A that the true homography maps inside B and those of B
  whose inverse maps inside A (strictly between 0 and W-1 / H-1: ``get_covisible_mask``);
  ``n_cov = min(#covisible in A, #covisible in B)``;
* **repeatability** = ``gt_num / n_cov`` where ``gt_num`` is the mean of "#covisible A points
  whose nearest covisible B point is within t" and the same from B (``get_gt_matches``);
* **precision** = correct / putative, and **matching score** = correct / ``n_cov``, and
  **recall** = correct / ``gt_num``, for mutual-NN matches among the covisible keypoints only,
  "correct" meaning the A point mapped by the true homography lies within t px of its match;
* **MMA@k** (mean matching accuracy, D2-Net / the paper's Fig. 3) = the fraction of mutual-NN
  matches over *all* keypoints within k px, for k = 1..10; the official script reports k = t;
* **n_features** = ``min(#A, #B)`` keypoints, **n_matches** = #mutual-NN matches (all keypoints);
* **homography accuracy** (SuperPoint's protocol, not in the official script): a homography is
  fitted to those matches with OpenCV RANSAC (3 px) and its error is the mean distance between
  the four corners of A mapped by it and by the true homography; accuracy@e is the fraction of
  pairs with error <= e px (1, 3, 5); pairs where no homography could be fitted count as wrong.

Averages are over pairs (the official script averages per sequence and then over sequences,
which is the same with five pairs per sequence), per sequence, per split (HPatches ``i_`` /
``v_``) and overall. Keypoints are (x, y) with integers at pixel centres; the homography maps
A to B in that convention.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from .match_refinement import check_refinement, refine_two_view
from .synthetic import image_corners, warp_points

logger = logging.getLogger(__name__)

MMA_THRESHOLDS: tuple[int, ...] = tuple(range(1, 11))
CORNER_THRESHOLDS: tuple[int, ...] = (1, 3, 5)
ERROR_THRESHOLD = 3.0  # official err_thld
RANSAC_THRESHOLD = 3.0


# --------------------------------------------------------------------------- matching & geometry


def mutual_nearest_neighbours(desc0: np.ndarray, desc1: np.ndarray) -> np.ndarray:
    """Mutual nearest neighbours by descriptor dot product: (M, 2) int64 index pairs.

    Uses the matcher of ``aslfeat match`` (:func:`~.matching.mutual_nn_match`, no ratio test),
    so the evaluation measures what users get. For unit-length descriptors this is the
    official ``bf_matcher_graph`` with ``mutual_check=True``.
    """
    from .matching import mutual_nn_match

    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    desc0 = np.ascontiguousarray(desc0, np.float32)
    desc1 = np.ascontiguousarray(desc1, np.float32)
    matches0, _ = mutual_nn_match(desc0, desc1)
    ids0 = np.flatnonzero(matches0 >= 0)
    return np.stack([ids0, matches0[ids0]], axis=1).astype(np.int64)


def covisible_masks(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    homography: np.ndarray,
    size0: tuple[int, int],
    size1: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of A seen in B and of B seen in A (official ``get_covisible_mask``).

    Sizes are (W, H). A point counts when it maps strictly inside ``(0, W-1) x (0, H-1)``.
    """

    def inside(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (
                (points[:, 0] > 0)
                & (points[:, 1] > 0)
                & (points[:, 0] < size[0] - 1)
                & (points[:, 1] < size[1] - 1)
            )

    mask0 = inside(warp_points(kpts0, homography), size1)
    mask1 = inside(warp_points(kpts1, np.linalg.inv(homography)), size0)
    return mask0, mask1


def nearest_distances(points0: np.ndarray, points1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point of one set, the distance to the nearest point of the other set.

    Returns (d0 (N0,), d1 (N1,)); inf where the other set is empty. Chunked to bound memory.
    """
    points0 = np.asarray(points0, np.float64).reshape(-1, 2)
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    d0 = np.full(len(points0), np.inf)
    d1 = np.full(len(points1), np.inf)
    if len(points0) == 0 or len(points1) == 0:
        return d0, d1
    for start in range(0, len(points0), 1024):
        chunk = points0[start : start + 1024]
        dist = np.sqrt(((chunk[:, None, :] - points1[None, :, :]) ** 2).sum(-1))
        d0[start : start + len(chunk)] = dist.min(axis=1)
        d1 = np.minimum(d1, dist.min(axis=0))
    return d0, d1


def match_errors(
    kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, homography: np.ndarray
) -> np.ndarray:
    """Reprojection error (px) of each match: |H·a - b| (official ``get_inlier_matches``)."""
    if len(matches) == 0:
        return np.zeros(0)
    projected = warp_points(np.asarray(kpts0)[matches[:, 0]], homography)
    return np.linalg.norm(projected - np.asarray(kpts1, np.float64)[matches[:, 1]], axis=1)


def estimate_homography(
    points0: np.ndarray, points1: np.ndarray, ransac_threshold: float = RANSAC_THRESHOLD
) -> tuple[np.ndarray | None, np.ndarray]:
    """Fit A->B with OpenCV RANSAC; returns (H or None, inlier mask (M,) bool)."""
    inliers = np.zeros(len(points0), bool)
    if len(points0) < 4:
        return None, inliers
    matrix, mask = cv2.findHomography(
        np.asarray(points0, np.float64),
        np.asarray(points1, np.float64),
        cv2.RANSAC,
        ransac_threshold,
        maxIters=10000,
        confidence=0.9999,
    )
    if matrix is None or mask is None:
        return None, inliers
    return matrix, mask.ravel().astype(bool)


def corner_error(estimated: np.ndarray | None, truth: np.ndarray, size0: tuple[int, int]) -> float:
    """Mean distance (px) between A's four corners mapped by ``estimated`` and ``truth``.

    Corners are the outer pixel centres (0, 0) .. (W-1, H-1); inf when ``estimated`` is None.
    """
    if estimated is None:
        return math.inf
    w, h = size0
    corners = image_corners(w, h)
    error = np.linalg.norm(warp_points(corners, estimated) - warp_points(corners, truth), axis=1)
    value = float(error.mean())
    return value if math.isfinite(value) else math.inf


# --------------------------------------------------------------------------- per pair


@dataclass
class PairMetrics:
    """Metrics of one image pair (see the module docstring for the definitions)."""

    n_features: int
    n_covisible: int
    repeatability: float
    precision: float
    matching_score: float
    recall: float
    mma: list[float]  # one value per threshold of MMA_THRESHOLDS (or the ones asked for)
    n_matches: int
    n_correct: int  # matches within the error threshold, all keypoints
    corner_error: float  # inf when no homography could be fitted
    n_ransac_inliers: int


def evaluate_pair(
    kpts0: np.ndarray,
    desc0: np.ndarray,
    kpts1: np.ndarray,
    desc1: np.ndarray,
    homography: np.ndarray,
    size0: tuple[int, int],
    size1: tuple[int, int],
    *,
    threshold: float = ERROR_THRESHOLD,
    mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
    ransac_threshold: float = RANSAC_THRESHOLD,
    refine: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> PairMetrics:
    """All metrics of one pair from keypoints (N, 2), descriptors (N, D) and the true A->B
    homography; sizes are (W, H) of A and B.

    ``refine(points0, points1, descriptors0, descriptors1)``, where given, returns the
    matched keypoints of A and B (M, 2 each, match i in row i; descriptors M x D) refined
    (``--refine-matches``, :func:`.match_refinement.refine_two_view`); the MMA and the
    homography then use them (the other metrics are of detection and stay on the keypoints
    as detected)."""
    kpts0 = np.asarray(kpts0, np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, np.float64).reshape(-1, 2)
    n_features = min(len(kpts0), len(kpts1))

    # MMA and homography on all keypoints (official: mma_putative_matches).
    matches = mutual_nearest_neighbours(desc0, desc1)
    matched0, matched1 = kpts0[matches[:, 0]], kpts1[matches[:, 1]]
    if refine is not None and len(matches):
        matched0, matched1 = refine(
            matched0, matched1, np.asarray(desc0)[matches[:, 0]], np.asarray(desc1)[matches[:, 1]]
        )
    in_order = np.repeat(np.arange(len(matches))[:, None], 2, axis=1)
    errors = match_errors(matched0, matched1, in_order, homography)
    n_matches = len(matches)
    mma = [float((errors <= t).sum() / max(n_matches, 1)) for t in mma_thresholds]
    estimated, ransac_inliers = estimate_homography(matched0, matched1, ransac_threshold)

    # Repeatability, precision, matching score and recall on covisible keypoints only.
    mask0, mask1 = covisible_masks(kpts0, kpts1, homography, size0, size1)
    cov0, cov1 = kpts0[mask0], kpts1[mask1]
    n_cov = min(len(cov0), len(cov1))
    d0, d1 = nearest_distances(warp_points(cov0, homography), cov1)
    gt_num = ((d0 <= threshold).sum() + (d1 <= threshold).sum()) / 2.0
    cov_matches = mutual_nearest_neighbours(np.asarray(desc0)[mask0], np.asarray(desc1)[mask1])
    n_inliers = int((match_errors(cov0, cov1, cov_matches, homography) <= threshold).sum())

    return PairMetrics(
        n_features=n_features,
        n_covisible=n_cov,
        repeatability=float(gt_num / max(n_cov, 1)),
        precision=float(n_inliers / max(len(cov_matches), 1)),
        matching_score=float(n_inliers / max(n_cov, 1)),
        recall=float(n_inliers / max(gt_num, 1)),
        mma=mma,
        n_matches=n_matches,
        n_correct=int((errors <= threshold).sum()),
        corner_error=corner_error(estimated, homography, size0),
        n_ransac_inliers=int(ransac_inliers.sum()),
    )


# --------------------------------------------------------------------------- runs and summaries


class FeatureSet(Protocol):
    """What a method returns for one image (the Extractor's Features satisfy it)."""

    keypoints: np.ndarray
    descriptors: np.ndarray


@dataclass
class Method:
    """A named way to get features for an image: ``features(name, image) -> FeatureSet``;
    ``descriptor_map(image)``, where given, is the detection pass's dense descriptor map and
    its size, for refining matches (:mod:`.match_refinement`)."""

    name: str
    features: Callable[[str, np.ndarray], FeatureSet]
    descriptor_map: Callable[[np.ndarray], tuple[np.ndarray, tuple[int, int]]] | None = None


def extractor_method(name: str, extractor: Any) -> Method:
    """A method that runs ``extractor.extract(image)`` (ours or :class:`~.sift.SiftExtractor`)."""
    return Method(name, lambda _name, image: extractor.extract(image))


def ours_method(
    model: Path | None = None,
    *,
    num_keypoints: int = 5000,
    multi_scale: bool = False,
    max_dim: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    shifts: int = 1,
    upscale: float = 1.0,
    pool_scales: Sequence[float] = (),
    refine_matches: bool = False,
    name: str | None = None,
) -> Method:
    """ASLFeat through :class:`~.extractor.Extractor` (official detection defaults).

    The default name is ``aslfeat`` (or the model file's stem), with ``-ms`` for multi-scale
    ``-sN`` for N shifted passes (``shifts``), ``-uF`` for images enlarged by F
    (``upscale``), ``-pA+B`` for descriptors pooled over scales A, B (``pool_scales``) and
    ``-r`` for matches refined towards each other's descriptors (``refine_matches``).
    """
    from .extractor import Extractor

    if refine_matches:
        check_refinement(upscale, multi_scale, pool_scales)

    extractor = Extractor(
        model,
        num_keypoints=num_keypoints,
        multi_scale=multi_scale,
        max_dim=max_dim,
        device=device,
        backend=backend,
        precision=precision,
        shifts=shifts,
        upscale=upscale,
        pool_scales=pool_scales,
    )
    if name is None:
        base = Path(model).stem if model is not None else "aslfeat"
        name = method_name(
            base,
            multi_scale=multi_scale,
            shifts=shifts,
            upscale=upscale,
            pool_scales=pool_scales,
            refine_matches=refine_matches,
        )
    method = extractor_method(name, extractor)
    if refine_matches:
        method.descriptor_map = extractor.descriptor_map
    return method


def method_name(
    base: str = "aslfeat",
    *,
    multi_scale: bool = False,
    shifts: int = 1,
    upscale: float = 1.0,
    pool_scales: Sequence[float] = (),
    refine_matches: bool = False,
) -> str:
    """``base`` with a suffix per non-default setting: ``-ms`` (multi-scale), ``-sN`` (N
    shifted passes), ``-uF`` (images enlarged by F), ``-pA+B`` (descriptors pooled over
    scales A, B), ``-r`` (refined matches); the row names of the tables."""
    name = base + ("-ms" if multi_scale else "")
    name += f"-s{shifts}" if shifts > 1 else ""
    name += f"-u{upscale:g}" if upscale != 1 else ""
    name += "-p" + "+".join(f"{s:g}" for s in pool_scales) if pool_scales else ""
    return name + ("-r" if refine_matches else "")


def sift_method(num_keypoints: int = 5000, name: str = "sift") -> Method:
    """OpenCV SIFT with RootSIFT descriptors and the same keypoint budget (:mod:`.sift`)."""
    from .sift import SiftExtractor

    return extractor_method(name, SiftExtractor(num_keypoints))


@dataclass
class _StoredFeatures:
    keypoints: np.ndarray
    descriptors: np.ndarray


def h5_method(name: str, path: Path) -> Method:
    """A method that reads precomputed features of each image name from an hloc HDF5 file."""
    from .h5io import read_features

    def features(image_name: str, _image: np.ndarray) -> FeatureSet:
        data = read_features(path, image_name)
        return _StoredFeatures(data["keypoints"], data["descriptors"])

    return Method(name, features)


class EvalPair(Protocol):
    """An evaluation pair: :class:`~.hpatches.HomographyPair` or :class:`ArrayPair`."""

    sequence: str
    name_a: str
    name_b: str
    homography: np.ndarray

    @property
    def split(self) -> str: ...

    @property
    def label(self) -> str: ...


@dataclass
class ArrayPair:
    """An in-memory pair (e.g. from :func:`~.synthetic.make_pair`)."""

    sequence: str
    image_a: np.ndarray
    image_b: np.ndarray
    homography: np.ndarray
    split: str = ""

    @property
    def name_a(self) -> str:
        return f"{self.sequence}/A"

    @property
    def name_b(self) -> str:
        return f"{self.sequence}/B"

    @property
    def label(self) -> str:
        return self.sequence


def load_pair_images(pair: Any) -> tuple[np.ndarray, np.ndarray]:
    """The two images of a pair (grey, as ``aslfeat extract`` reads them)."""
    if isinstance(pair, ArrayPair):
        return pair.image_a, pair.image_b
    from .errors import UserError
    from .images import ImageError, read_image

    images = []
    for path in (pair.path_a, pair.path_b):
        try:
            images.append(read_image(path))
        except ImageError as exc:
            raise UserError(f"{path}: {exc}") from exc
    return images[0], images[1]


@dataclass
class PairResult:
    """The metrics of one method on one pair."""

    method: str
    sequence: str
    split: str
    pair: str
    metrics: PairMetrics


def evaluate(
    pairs: Sequence[Any],
    methods: Sequence[Method],
    *,
    threshold: float = ERROR_THRESHOLD,
    mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
    progress: bool = True,
) -> list[PairResult]:
    """Evaluate every method on every pair; features of the last image are cached, so an
    HPatches reference image is processed once per sequence."""
    results: list[PairResult] = []
    cache: dict[tuple[str, str], FeatureSet] = {}
    bar = tqdm(total=len(pairs) * len(methods), desc="evaluate", disable=not progress)
    for pair in pairs:
        image_a, image_b = load_pair_images(pair)
        size_a = (image_a.shape[1], image_a.shape[0])
        size_b = (image_b.shape[1], image_b.shape[0])
        for method in methods:
            key = (method.name, pair.name_a)
            if key not in cache:
                cache = {k: v for k, v in cache.items() if k[0] != method.name}
                cache[key] = method.features(pair.name_a, image_a)
            feats_a = cache[key]
            feats_b = method.features(pair.name_b, image_b)
            refine = None
            if method.descriptor_map is not None:
                refine = partial(
                    refine_two_view,
                    dense0=partial(method.descriptor_map, image_a),
                    dense1=partial(method.descriptor_map, image_b),
                    image_size0=size_a,
                    image_size1=size_b,
                )
            metrics = evaluate_pair(
                feats_a.keypoints,
                feats_a.descriptors,
                feats_b.keypoints,
                feats_b.descriptors,
                pair.homography,
                size_a,
                size_b,
                threshold=threshold,
                mma_thresholds=mma_thresholds,
                refine=refine,
            )
            results.append(PairResult(method.name, pair.sequence, pair.split, pair.label, metrics))
            bar.update()
    bar.close()
    return results


@dataclass
class Summary:
    """Averages of :class:`PairMetrics` over a group of pairs."""

    n_pairs: int
    n_features: float
    repeatability: float
    precision: float
    matching_score: float
    recall: float
    mma: list[float]
    n_matches: float
    homography_accuracy: dict[int, float] = field(default_factory=dict)
    median_corner_error: float = math.inf


def summarize(
    metrics: Iterable[PairMetrics], corner_thresholds: Sequence[int] = CORNER_THRESHOLDS
) -> Summary:
    """Mean of each metric over pairs; homography accuracy = share of pairs under each error."""
    items = list(metrics)
    if not items:
        raise ValueError("summarize needs at least one pair")

    def mean(attribute: str) -> float:
        return float(np.mean([getattr(m, attribute) for m in items]))

    errors = np.array([m.corner_error for m in items])
    return Summary(
        n_pairs=len(items),
        n_features=mean("n_features"),
        repeatability=mean("repeatability"),
        precision=mean("precision"),
        matching_score=mean("matching_score"),
        recall=mean("recall"),
        mma=[float(v) for v in np.mean([m.mma for m in items], axis=0)],
        n_matches=mean("n_matches"),
        homography_accuracy={e: float((errors <= e).mean()) for e in corner_thresholds},
        median_corner_error=float(np.median(errors)),
    )


SPLIT_NAMES = {"i": "illumination", "v": "viewpoint"}


def group_summaries(
    results: Sequence[PairResult], per_sequence: bool = True
) -> dict[str, dict[str, Summary]]:
    """``{method: {group: Summary}}`` with groups 'overall', 'illumination', 'viewpoint'
    (when HPatches-style ``i_``/``v_`` sequences are present) and each sequence name."""
    out: dict[str, dict[str, Summary]] = {}
    for method in dict.fromkeys(r.method for r in results):
        mine = [r for r in results if r.method == method]
        groups: dict[str, Summary] = {"overall": summarize(r.metrics for r in mine)}
        for split, label in SPLIT_NAMES.items():
            chosen = [r.metrics for r in mine if r.split == split]
            if chosen:
                groups[label] = summarize(chosen)
        if per_sequence:
            for sequence in dict.fromkeys(r.sequence for r in mine):
                groups[sequence] = summarize(r.metrics for r in mine if r.sequence == sequence)
        out[method] = groups
    return out


# --------------------------------------------------------------------------- output


def format_table(
    summaries: dict[str, dict[str, Summary]],
    groups: Sequence[str] | None = None,
    mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
    shown_thresholds: Sequence[float] = (1, 3, 5),
) -> str:
    """A fixed-width text table: one row per (group, method)."""
    header = ["group", "method", "pairs", "#feat", "#match", "rep", "MS", "recall"]
    header += [f"MMA@{t:g}" for t in shown_thresholds]
    header += [f"H@{e}" for e in CORNER_THRESHOLDS]
    first = next(iter(summaries.values()))
    groups = list(groups) if groups is not None else list(first)
    rows = []
    for group in groups:
        for method, by_group in summaries.items():
            s = by_group.get(group)
            if s is None:
                continue
            row = [group, method, str(s.n_pairs), f"{s.n_features:.0f}", f"{s.n_matches:.0f}"]
            row += [f"{v:.3f}" for v in (s.repeatability, s.matching_score, s.recall)]
            row += [f"{s.mma[list(mma_thresholds).index(t)]:.3f}" for t in shown_thresholds]
            row += [f"{s.homography_accuracy[e]:.2f}" for e in CORNER_THRESHOLDS]
            rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _summary_record(s: Summary, mma_thresholds: Sequence[float]) -> dict[str, Any]:
    record = {k: v for k, v in asdict(s).items() if k not in ("mma", "homography_accuracy")}
    record.update({f"mma@{t:g}": v for t, v in zip(mma_thresholds, s.mma, strict=True)})
    record.update({f"h_acc@{e}": v for e, v in s.homography_accuracy.items()})
    return record


def write_json(
    path: Path,
    results: Sequence[PairResult],
    summaries: dict[str, dict[str, Summary]],
    settings: dict[str, Any],
    mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
) -> None:
    """Settings, per-group summaries and per-pair metrics as JSON (inf written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    payload = {
        "settings": settings,
        "mma_thresholds": list(mma_thresholds),
        "summary": {
            method: {g: _summary_record(s, mma_thresholds) for g, s in groups.items()}
            for method, groups in summaries.items()
        },
        "pairs": [
            {
                "method": r.method,
                "sequence": r.sequence,
                "split": r.split,
                "pair": r.pair,
                **asdict(r.metrics),
            }
            for r in results
        ],
    }
    Path(path).write_text(json.dumps(clean(payload), indent=1) + "\n")


def write_csv(
    path: Path,
    results: Sequence[PairResult],
    summaries: dict[str, dict[str, Summary]],
    mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
) -> None:
    """One row per (method, group) summary and per (method, pair), ``level`` telling which."""
    rows: list[dict[str, Any]] = []
    for method, groups in summaries.items():
        for group, s in groups.items():
            level = "split" if group in SPLIT_NAMES.values() else "sequence"
            level = "overall" if group == "overall" else level
            rows.append(
                {
                    "method": method,
                    "level": level,
                    "group": group,
                    **_summary_record(s, mma_thresholds),
                }
            )
    for r in results:
        m = r.metrics
        record = {"method": r.method, "level": "pair", "group": r.pair, "n_pairs": 1}
        record.update({k: v for k, v in asdict(m).items() if k != "mma"})
        record.update({f"mma@{t:g}": v for t, v in zip(mma_thresholds, m.mma, strict=True)})
        record.update({f"h_acc@{e}": float(m.corner_error <= e) for e in CORNER_THRESHOLDS})
        rows.append(record)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
