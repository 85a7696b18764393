"""Mutual nearest-neighbour matching of unit-length descriptors, pair by pair, to HDF5.

Descriptors are L2-normalised, so similarity is a dot product and the squared distance is
``2 - 2 sim``: the similarity matrix is one float32 BLAS product, computed in row blocks so
that memory stays bounded for large keypoint counts. Each block yields the row-wise best
(and second best, for the ratio test) and updates running column-wise bests; the mutual
check compares the two. Scores follow hloc's nearest-neighbour matcher: (sim + 1) / 2.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import h5io
from .errors import UserError
from .matches_writer import MatchesWriter
from .outputs import prepare_output_file
from .pairs import Pair, clean_pairs
from .settings import (
    FEATURES_ID,
    SHARD,
    check_compatible,
    check_same_features,
    matching_settings,
    plain,
    read_attrs,
)
from .verification import VerifyOptions, verify_pair

logger = logging.getLogger(__name__)

BLOCK_BYTES = 64 * 1024 * 1024  # bound on one block of the similarity matrix


@dataclass(frozen=True)
class MatchOptions:
    """``ratio``: Lowe's test on L2 distances (best < ratio x second, both directions);
    ``max_distance``: L2 distance bound (0..2 for unit descriptors); None disables either."""

    ratio: float | None = None
    max_distance: float | None = None

    def __post_init__(self) -> None:
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise UserError(f"--ratio must be in (0, 1], got {self.ratio}")
        if self.max_distance is not None and not 0 < self.max_distance <= 2:
            raise UserError(f"--max-distance must be in (0, 2], got {self.max_distance}")


def normalize(descriptors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32 (zero rows stay zero)."""
    d = np.asarray(descriptors, dtype=np.float32)
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    return np.ascontiguousarray(d / np.maximum(norm, 1e-12))


def _dist(sim: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0))


def mutual_nn_match(
    desc0: np.ndarray,
    desc1: np.ndarray,
    options: MatchOptions = MatchOptions(),
    block_bytes: int = BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours from desc0 (N0, D) to desc1 (N1, D), both unit length.

    Returns ``matches0`` (N0,) int32 with -1 where unmatched and ``scores0`` (N0,) float32
    ((sim + 1) / 2, 0 where unmatched).
    """
    n0, n1 = len(desc0), len(desc1)
    matches0 = np.full(n0, -1, np.int32)
    scores0 = np.zeros(n0, np.float32)
    if n0 == 0 or n1 == 0:
        return matches0, scores0
    if desc0.shape[1] != desc1.shape[1]:
        raise UserError(f"descriptor sizes differ: {desc0.shape[1]} and {desc1.shape[1]}")
    want_second = options.ratio is not None
    rows = max(1, block_bytes // (4 * n1))
    best0 = np.empty(n0, np.int64)
    sim0 = np.empty(n0, np.float32)
    second0 = np.full(n0, -np.inf, np.float32)
    col_best = np.full(n1, -np.inf, np.float32)
    col_second = np.full(n1, -np.inf, np.float32)
    for start in range(0, n0, rows):
        sim = desc0[start : start + rows] @ desc1.T  # float32 BLAS
        stop = start + len(sim)
        # Column maxima only (argmax along axis 0 is a slow strided scan in numpy); the
        # mutual check below needs values, not positions.
        cmax = sim.max(0)
        if want_second:
            csecond = np.where(sim == cmax, -np.inf, sim).max(0)
            col_second = np.maximum(np.minimum(col_best, cmax), np.maximum(col_second, csecond))
        col_best = np.maximum(col_best, cmax)
        # Row-wise best (and second best) are complete within the block.
        r = np.arange(len(sim))
        idx = sim.argmax(1)
        best0[start:stop] = idx
        sim0[start:stop] = sim[r, idx]
        if want_second and n1 > 1:
            sim[r, idx] = -np.inf
            second0[start:stop] = sim.max(1)
    # Row i's best column j is mutual when i holds j's maximum; on exact ties keep the first.
    keep = sim0 >= col_best[best0]
    first = np.zeros(n0, bool)
    first[np.unique(best0[keep], return_index=True)[1]] = True
    keep[keep] = first[: keep.sum()]
    # The kept similarities again, row by row (einsum, no BLAS): OpenBLAS's float32 products
    # change in the last bits with its thread count, and a one-thread Ray actor must write the
    # same scores (and take the same threshold decisions) as a two-thread run.
    rows_kept = np.flatnonzero(keep)
    sim0[rows_kept] = np.einsum("ij,ij->i", desc0[rows_kept], desc1[best0[rows_kept]])
    if options.max_distance is not None:
        keep &= _dist(sim0) <= options.max_distance
    if want_second:
        ratio = options.ratio
        keep &= _dist(sim0) <= ratio * _dist(second0)
        keep &= _dist(sim0) <= ratio * _dist(col_second[best0])
    matches0[keep] = best0[keep]
    scores0[keep] = (sim0[keep] + 1.0) / 2.0
    return matches0, scores0


def _checked(descriptors: np.ndarray, name: str, cache: FeatureCache) -> np.ndarray:
    """UserError for descriptors no extractor makes: norms that overflow (float64 here, so a
    huge value is caught rather than warned about) or, in our files, norms other than 1."""
    norms = np.linalg.norm(descriptors.astype(np.float64), axis=1)
    label = cache.fh.filename
    if not np.isfinite(norms).all() or (len(norms) and norms.max() > 1e15):
        raise UserError(
            f"{label}: descriptors of {name!r} hold values no extractor makes (damaged?)"
        )
    if cache.unit and np.any((norms > 0) & (np.abs(norms - 1) > 0.01)):
        raise UserError(f"{label}: descriptors of {name!r} are not unit length (damaged?)")
    return descriptors


class FeatureCache:
    """Least-recently-used cache of (keypoints, normalised descriptors) per image."""

    def __init__(self, fh: h5py.File, capacity: int = 128) -> None:
        self.fh = fh
        # Files we wrote hold unit descriptors; other tools' (SIFT...) need not.
        self.unit = "model_sha256" in fh.attrs
        self.capacity = max(2, capacity)
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.loads = 0

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (N,2), unit descriptors (N,D)) of an image, loading it on a miss."""
        if name in self._items:
            self._items.move_to_end(name)
            return self._items[name]
        feats = h5io.read_features(self.fh, name)
        item = (feats["keypoints"], normalize(_checked(feats["descriptors"], name, self)))
        self.loads += 1
        self._items[name] = item
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item


def order_for_cache(pairs: Sequence[Pair], capacity: int) -> list[Pair]:
    """Reorder pairs tile by tile so that an LRU cache of ``capacity`` images loads each
    image about n / (capacity / 2) times instead of once per pair."""
    index: dict[str, int] = {}
    for a, b in pairs:
        index.setdefault(a, len(index))
        index.setdefault(b, len(index))
    if len(index) <= capacity:
        return list(pairs)
    tile = max(1, capacity // 2)

    def key(pair: Pair) -> tuple[int, int, int, int]:
        i, j = sorted((index[pair[0]], index[pair[1]]))
        return (i // tile, j // tile, i, j)

    return sorted(pairs, key=key)


@dataclass
class MatchSummary:
    """What a matching run did."""

    n_pairs: int = 0  # pairs requested (after removing self and duplicate pairs)
    n_matched: int = 0  # pairs matched in this run
    n_skipped: int = 0  # pairs already in the output (resume)
    n_empty: int = 0  # pairs where an image has no keypoints
    total_matches: int = 0
    total_inliers: int | None = None
    seconds: float = 0.0

    @property
    def mean_matches(self) -> float:
        return self.total_matches / max(self.n_matched, 1)

    @property
    def pairs_per_second(self) -> float:
        return self.n_matched / self.seconds if self.seconds > 0 else 0.0


def _check_descriptor_sizes(fh: h5py.File, names: set[str], label: Path) -> None:
    """UserError when the images of the pairs hold descriptors of different sizes."""
    sizes: dict[int, str] = {}
    for name in sorted(names):
        grp = fh[name]
        if "descriptors" not in grp:
            raise UserError(f"{label}: image {name!r} has no descriptors")
        n = grp["keypoints"].shape[0]
        shape = grp["descriptors"].shape
        dim = shape[0] if len(shape) == 2 and shape[1] == n else shape[-1]
        sizes.setdefault(dim, name)
        if len(sizes) > 1:
            (d0, n0), (d1, n1) = list(sizes.items())[:2]
            raise UserError(
                f"{label}: descriptor sizes differ: {n0!r} has {d0}, {n1!r} has {d1} "
                "(features from different extractors?)"
            )


def check_pair_keys(pairs: Sequence[Pair]) -> None:
    """UserError naming both images when hloc's pair keys (``/`` in names becomes ``-``)
    would store two pairs in one group, or make a pair's direction ambiguous; hloc's
    ``find_pair`` tries ``names_to_pair(a, b)`` then ``(b, a)``, so both keys count."""
    owner: dict[str, Pair] = {}
    for a, b in pairs:
        if h5io.names_to_pair(a, b) == h5io.names_to_pair(b, a):
            raise UserError(_clash_message(a, b))
        for key in (h5io.names_to_pair(a, b), h5io.names_to_pair(b, a)):
            other = owner.setdefault(key, (a, b))
            if set(other) != {a, b}:
                first, second = sorted(set(other) ^ {a, b})
                raise UserError(_clash_message(first, second))


def _clash_message(a: str, b: str) -> str:
    return (
        f"image names {a!r} and {b!r} are the same once '/' becomes '-' (hloc's pair keys), "
        "so their matches would overwrite each other; rename one of them"
    )


def _stored_names(mfh: h5py.File, a: str, b: str) -> None:
    """UserError when the group found for (a, b) was written for other images."""
    key = h5io.names_to_pair(a, b)
    key = key if key in mfh else h5io.names_to_pair(b, a)
    attrs = mfh[key].attrs
    if "name0" in attrs and "name1" in attrs:
        stored = (str(plain(attrs["name0"])), str(plain(attrs["name1"])))
        if set(stored) != {a, b}:
            other = sorted(set(stored) - {a, b})[0]
            mine = sorted({a, b} - set(stored))[0]
            raise UserError(
                f"{mfh.filename}: group {key!r} holds the pair {stored}, not ({a!r}, {b!r}): "
                f"{_clash_message(other, mine)}"
            )


def _settings_to_record(
    mfh: h5py.File | None, ffh: h5py.File, settings: dict, output: Path, features: Path
) -> dict:
    """Check a resumed matches file against this run's settings and features file; return
    the root attributes to record (see :mod:`aslfeat_cli.settings`), none for a file whose
    pairs were made with unknown settings (hloc, older versions): we do not vouch for them."""
    recorded = read_attrs(mfh.attrs) if mfh is not None else {}
    if mfh is not None and len(mfh):
        check_same_features(recorded, ffh.attrs, output, features)
        check_compatible(recorded, settings, str(output), "use --overwrite or another output")
        if not any(key in recorded for key in settings if key != "aslfeat_version"):
            return {}
    attrs = dict(settings)
    features_id = plain(ffh.attrs.get(FEATURES_ID, ""))
    if features_id:
        attrs[FEATURES_ID] = features_id
    return attrs


def pair_shard_key(pair: Pair) -> str:
    """The name a pair is sharded by: its two image names in sorted order (so a pair falls
    in the same shard whichever way round a pairs file lists it)."""
    return "\n".join(sorted(pair))


def _pairs_to_do(
    writer: MatchesWriter, ffh: h5py.File, pairs: Sequence[Pair], verify: bool, settings: dict
) -> list[Pair]:
    """Check the output against this run (settings, features, pair keys), set the attributes
    to record and return the pairs not yet in it (with --verify: not yet verified)."""
    mfh = writer.open_done()
    writer.attrs = _settings_to_record(mfh, ffh, settings, writer.output, Path(ffh.filename))
    if mfh is None:
        return list(pairs)
    todo = []
    with mfh:
        for a, b in pairs:
            if not pair_done(mfh, a, b, verify):
                todo.append((a, b))
    return todo


def pair_done(mfh: h5py.File, a: str, b: str, verify: bool) -> bool:
    """Whether a resumed run may skip the pair: it is in the matches file (stored for these
    two images, else UserError) and, with ``verify``, verified."""
    found = h5io._find_pair(mfh, a, b)
    if found is None:
        return False
    _stored_names(mfh, a, b)
    return not verify or "inliers0" in mfh[found[0]]


def _write_empty_shard(output: Path, features: Path, settings: dict, shard: str) -> None:
    """A shard with no pairs still gets its file (settings only), so ``merge`` counts it."""
    from .atomic import replacing

    prepare_output_file(output)
    with h5py.File(features, "r") as ffh:
        attrs = _settings_to_record(None, ffh, settings, output, features)
    with replacing(output) as tmp, h5py.File(tmp, "w") as fh:
        for key, value in {**attrs, SHARD: shard}.items():
            fh.attrs[key] = value


def match_pairs(
    features: Path,
    pairs: Sequence[Pair],
    output: Path,
    options: MatchOptions = MatchOptions(),
    verify: VerifyOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
    cache_size: int = 128,
    shard: str | None = None,
) -> MatchSummary:
    """Match every pair of images of a features file and write hloc-style matches.

    Pairs already in ``output`` are skipped (resume) unless ``overwrite``. All inputs are
    checked (names present, one descriptor size) before the output is touched. ``shard``
    (``"K/N"`` or ``"ray"``) is recorded in the output for ``aslfeat merge``.
    """
    from tqdm import tqdm

    features, output = Path(features), Path(output)
    if features.resolve() == output.resolve():
        raise UserError("the matches file must differ from the features file")
    names = h5io.list_names(features)
    if not features.exists():
        raise UserError(f"{features}: no such features file")
    if not names:
        raise UserError(f"{features}: holds no features (run aslfeat extract first)")
    pairs = clean_pairs(pairs, names)
    check_pair_keys(pairs)
    summary = MatchSummary(n_pairs=len(pairs))
    if not pairs:
        logger.warning("no pairs to match")
        if shard and not output.exists():
            _write_empty_shard(output, features, matching_settings(options, verify), shard)
        return summary
    prepare_output_file(output)
    start = time.perf_counter()
    with h5py.File(features, "r") as ffh:
        _check_descriptor_sizes(ffh, {n for p in pairs for n in p}, features)
        # Crash safe: matches.h5 is replaced atomically at the end (see matches_writer).
        with MatchesWriter(output, fresh=overwrite) as writer:
            settings = matching_settings(options, verify)
            todo = _pairs_to_do(writer, ffh, pairs, verify is not None, settings)
            if shard and writer.attrs:
                writer.attrs[SHARD] = shard
            summary.n_skipped = len(pairs) - len(todo)
            if summary.n_skipped:
                logger.info("%d pair(s) already in %s: skipped", summary.n_skipped, output)
            cache = FeatureCache(ffh, cache_size)
            if verify is not None:
                summary.total_inliers = 0
            for a, b in tqdm(
                order_for_cache(todo, cache.capacity),
                desc="match",
                unit="pair",
                disable=not progress or not todo,
            ):
                kp0, d0 = cache.get(a)
                kp1, d1 = cache.get(b)
                m0, s0 = mutual_nn_match(d0, d1, options)
                if len(d0) == 0 or len(d1) == 0:
                    summary.n_empty += 1
                inliers = None
                if verify is not None:
                    valid = np.flatnonzero(m0 >= 0)
                    mask = verify_pair(kp0, kp1, np.stack([valid, m0[valid]], -1), verify)
                    inliers = np.zeros(len(m0), bool)
                    inliers[valid[mask]] = True
                    summary.total_inliers += int(inliers.sum())
                writer.add(a, b, m0, s0, inliers=inliers, num_keypoints1=len(d1))
                summary.n_matched += 1
                summary.total_matches += int((m0 >= 0).sum())
    summary.seconds = time.perf_counter() - start
    if summary.n_empty:
        logger.warning("%d pair(s) involve an image without keypoints", summary.n_empty)
    logger.debug("loaded %d feature sets for %d pairs", cache.loads, summary.n_matched)
    return summary
