"""Images to a sparse COLMAP model: extract -> pairs -> match -> database -> incremental mapping.

Output folder layout (hloc-like)::

    OUT/features.h5     features (hloc layout)           OUT/pairs.txt     pairs matched
    OUT/matches.h5      matches (hloc layout, int32)     OUT/database.db   COLMAP database
    OUT/models/<i>/     every model the mapper made (binary)
    OUT/sparse/         the largest model, binary        OUT/sparse_text/  the same, as text
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import colmap_db, h5io
from .cameras import CameraSpec
from .errors import UserError
from .match_refinement import DescriptorMapFn, TrackRefinement, check_refinement, refine_tracks
from .matching import MatchOptions, match_pairs
from .outputs import prepare_output_dir
from .pairs import Pair, exhaustive, fits_pairs_file, natural_key, sequential, write_pairs

logger = logging.getLogger(__name__)


@dataclass
class ReconstructionStats:
    """Summary of the largest model."""

    n_images: int
    registered: int
    points: int
    mean_track_length: float
    mean_reprojection_error: float
    n_models: int
    verified_pairs: int
    seconds: float
    model_path: Path | None
    # seconds per step (extraction: 0 when features were given)
    extract_seconds: float = 0.0
    match_seconds: float = 0.0
    verify_seconds: float = 0.0
    map_seconds: float = 0.0
    refine_seconds: float = 0.0  # --refine-matches (after verification, before mapping)

    def table(self) -> str:
        """The stats as an aligned two-column table."""
        rows = [
            ("images", f"{self.n_images}"),
            ("registered images", f"{self.registered}"),
            ("3D points", f"{self.points}"),
            ("mean track length", f"{self.mean_track_length:.2f}"),
            ("mean reprojection error (px)", f"{self.mean_reprojection_error:.3f}"),
            ("models", f"{self.n_models}"),
            ("verified pairs", f"{self.verified_pairs}"),
            ("extraction seconds", f"{self.extract_seconds:.1f}"),
            ("matching seconds", f"{self.match_seconds:.1f}"),
            ("verification seconds", f"{self.verify_seconds:.1f}"),
            ("refinement seconds", f"{self.refine_seconds:.1f}"),
            ("mapping seconds", f"{self.map_seconds:.1f}"),
            ("seconds", f"{self.seconds:.1f}"),
            ("model", str(self.model_path) if self.model_path else "-"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def configure_colmap_logging(verbose: bool) -> None:
    """COLMAP's own log (glog) to stderr, and only errors unless ``verbose``."""
    pycolmap = colmap_db._pycolmap()
    pycolmap.logging.logtostderr = True
    pycolmap.logging.minloglevel = 0 if verbose else 2


def image_root(images: Sequence[tuple[Path, str]]) -> Path:
    """The folder that all image names are relative to (names from ``find_images``)."""
    roots = set()
    for path, name in images:
        root = Path(path).resolve()
        for _ in Path(name).parts:
            root = root.parent
        roots.add(root)
    if len(roots) != 1:
        raise UserError("the images do not share one root folder; give --image-root")
    return roots.pop()


def choose_pairs(names: Sequence[str], sequential_overlap: int | None, loop_stride: int) -> list:
    """Exhaustive pairs by default, sequential ones (natural name order) on request."""
    if sequential_overlap is None:
        return exhaustive(list(names))
    return sequential(sorted(names, key=natural_key), sequential_overlap, loop_stride)


def _check_database(database: Path, names: set[str], overwrite: bool) -> None:
    """Refuse a database holding images other than ours (unless overwrite: start anew)."""
    if not database.exists():
        return
    if overwrite:
        database.unlink()
        return
    other = sorted(set(colmap_db.image_ids(database)) - names)
    if other:
        raise UserError(
            f"{database} already holds {len(other)} image(s) that are not inputs "
            f"(e.g. {other[0]!r}); use a new output folder or --overwrite"
        )


def _mapper_options(
    pycolmap: Any, num_threads: int, seed: int | None, camera: CameraSpec | None = None
) -> Any:
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    if seed is not None:
        options.random_seed = seed
    if camera is not None:
        camera.configure_mapper(options)
    return options


def _map(
    pycolmap: Any,
    database: Path,
    images_dir: Path,
    out_dir: Path,
    n_images: int,
    attempts: int,
    num_threads: int,
    seed: int | None,
    progress: bool = False,
    camera: CameraSpec | None = None,
) -> dict:
    """Incremental mapping into OUT/models, retried while images stay unregistered.

    With ``progress``, a bar counts registered images (the mapper's callbacks, as hloc does).
    """
    from tqdm import tqdm

    best: dict = {}
    best_count = -1
    for attempt in range(max(1, attempts)):
        models_dir = out_dir / "models"
        if models_dir.exists():
            shutil.rmtree(models_dir)
        models_dir.mkdir()
        run_seed = None if seed is None else seed + attempt
        options = _mapper_options(pycolmap, num_threads, run_seed, camera)
        with tqdm(
            total=n_images,
            desc=f"mapping (attempt {attempt + 1})",
            unit="img",
            disable=not progress,
        ) as bar:

            def registered(bar: tqdm = bar) -> None:
                bar.update(1)

            def restart(bar: tqdm = bar) -> None:  # a new model starts from an image pair
                bar.reset()
                bar.update(2)

            models = pycolmap.incremental_mapping(
                database,
                images_dir,
                models_dir,
                options,
                initial_image_pair_callback=restart,
                next_image_callback=registered,
            )
        count = max((m.num_reg_images() for m in models.values()), default=0)
        if count > best_count:
            best, best_count = models, count
            kept = out_dir / "models_best"
            if kept.exists():
                shutil.rmtree(kept)
            shutil.copytree(models_dir, kept)
        if best_count >= n_images:
            break
        logger.warning(
            "mapping attempt %d registered %d of %d images", attempt + 1, count, n_images
        )
    # Keep the folder of the best attempt as OUT/models.
    shutil.rmtree(out_dir / "models")
    (out_dir / "models_best").rename(out_dir / "models")
    return best


def reconstruct_from_features(
    images: Sequence[tuple[Path, str]],
    features: Path,
    out_dir: Path,
    pairs: Sequence[Pair] | None = None,
    match_options: MatchOptions | None = None,
    single_camera: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    num_threads: int = -1,
    seed: int | None = 0,
    attempts: int = 3,
    colmap_descriptors: str = "raw",
    descriptor_map: DescriptorMapFn | None = None,
    camera: CameraSpec | None = None,
) -> ReconstructionStats:
    """Match, build the database and map, from features already in ``features``.

    ``images`` are (path, name) pairs; ``pairs`` default to exhaustive. Returns the stats
    of the largest model, written to OUT/sparse (binary) and OUT/sparse_text (text).
    The mapper runs again (up to ``attempts`` times in all) while images stay unregistered:
    COLMAP's incremental mapper is not deterministic with several threads, and on hard
    image sets an unlucky initial pair can strand part of the images.
    ``descriptor_map`` (the extractor's, ``--refine-matches``): after geometric
    verification, the matched keypoints move towards their tracks' descriptors
    (:func:`refine_database_keypoints`) in the database; ``features`` stay as extracted, and
    the database is built anew on every run. ``camera``: the COLMAP camera model, known
    parameters and whether bundle adjustment keeps them or refines the principal point too
    (:mod:`.cameras`, which needs ``single_camera`` for that; default: COLMAP's guess, focal
    length and distortion refined).
    """
    if camera is not None:
        camera.check_shared(single_camera)
    pycolmap = colmap_db._pycolmap()
    match_options = match_options or MatchOptions()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    prepare_output_dir(out_dir)
    names = [name for _, name in images]
    available = set(h5io.list_names(features))
    missing = [n for n in names if n not in available]
    if missing:
        raise UserError(f"{features}: no features for {len(missing)} image(s), e.g. {missing[0]!r}")
    if pairs is None:
        pairs = exhaustive(names)
    database = out_dir / "database.db"
    _check_database(database, set(names), overwrite)
    if descriptor_map is not None and database.exists():
        database.unlink()  # it holds refined keypoints, which the import check would refuse
    colmap_db.check_cameras(database, camera or CameraSpec())

    if all(fits_pairs_file(name) for pair in pairs for name in pair):
        write_pairs(out_dir / "pairs.txt", pairs)
    else:  # the pairs still go to pycolmap through its API; only this record is left out
        logger.warning("image names hold spaces: %s is not written", out_dir / "pairs.txt")
    matches = out_dir / "matches.h5"
    step = time.perf_counter()
    summary = match_pairs(
        features, pairs, matches, match_options, overwrite=overwrite, progress=progress
    )
    logger.info(
        "matched %d pair(s), mean %.0f matches",
        summary.n_matched + summary.n_skipped,
        summary.mean_matches,
    )
    match_seconds = time.perf_counter() - step
    paths = {name: Path(path) for path, name in images}
    colmap_db.require_space(database, features, names, matches, pairs)
    colmap_db.import_features(
        database, features, names, paths, single_camera, progress, colmap_descriptors, camera
    )
    colmap_db.import_matches(database, matches, pairs, progress=progress)
    step = time.perf_counter()
    verified = colmap_db.verify_matches(database, pairs, progress=progress)
    verify_seconds = time.perf_counter() - step
    logger.info("%d pair(s) geometrically verified", verified)
    refine_seconds = 0.0
    if descriptor_map is not None:
        step = time.perf_counter()
        refine_database_keypoints(database, features, names, paths, descriptor_map, progress)
        refine_seconds = time.perf_counter() - step

    step = time.perf_counter()
    models = _map(
        pycolmap,
        database,
        image_root(images),
        out_dir,
        len(names),
        attempts,
        num_threads,
        seed,
        progress,
        camera,
    )
    map_seconds = time.perf_counter() - step
    stats = ReconstructionStats(
        n_images=len(names),
        registered=0,
        points=0,
        mean_track_length=0.0,
        mean_reprojection_error=0.0,
        n_models=len(models),
        verified_pairs=verified,
        seconds=0.0,
        model_path=None,
        match_seconds=match_seconds,
        verify_seconds=verify_seconds,
        refine_seconds=refine_seconds,
        map_seconds=map_seconds,
    )
    if models:
        best = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
        # COLMAP's text format ends a name at the first space or line break (measured: a
        # model written with 'my photo.jpg' reads back as 'my'): such names get binary only.
        text = all(fits_pairs_file(name) for name in names)
        for sub in ("sparse", "sparse_text"):
            if (out_dir / sub).exists():
                shutil.rmtree(out_dir / sub)
        (out_dir / "sparse").mkdir()
        best.write_binary(str(out_dir / "sparse"))
        if text:
            (out_dir / "sparse_text").mkdir()
            best.write_text(str(out_dir / "sparse_text"))
        else:
            logger.warning(
                "image names hold spaces or line breaks, which COLMAP's text format cannot "
                "store: only the binary model (%s) is written",
                out_dir / "sparse",
            )
        stats.registered = best.num_reg_images()
        stats.points = best.num_points3D()
        stats.mean_track_length = float(best.compute_mean_track_length())
        stats.mean_reprojection_error = float(best.compute_mean_reprojection_error())
        stats.model_path = out_dir / "sparse"
    else:
        logger.warning("the mapper built no model (too few verified matches?)")
    stats.seconds = time.perf_counter() - start
    return stats


def refine_database_keypoints(
    database: Path,
    features: Path,
    names: Sequence[str],
    paths: Mapping[str, Path],
    descriptor_map: DescriptorMapFn,
    progress: bool = True,
) -> TrackRefinement:
    """Move the verified matches' keypoints in ``database`` towards their tracks' roots'
    descriptors (:func:`.match_refinement.refine_tracks`; tracks from the inlier matches, so
    a wrong match does not join two tracks); one network pass per image with matches."""
    from .images import read_image

    keypoints, sizes = {}, {}
    for name in names:  # descriptors are read again only for images that root tracks
        feats = h5io.read_features(features, name)
        keypoints[name] = feats["keypoints"]
        sizes[name] = tuple(int(v) for v in feats["image_size"])
    matches = colmap_db.read_verified_matches(database)
    refined, summary = refine_tracks(
        names,
        keypoints,
        lambda name: h5io.read_features(features, name)["descriptors"],
        matches,
        lambda name: descriptor_map(read_image(paths[name])),
        sizes,
        progress=progress,
    )
    colmap_db.update_keypoint_positions(database, refined)
    return summary


def run_reconstruction(
    images: Sequence[tuple[Path, str]],
    out_dir: Path,
    extractor: Any,
    pairs: Sequence[Pair] | None = None,
    match_options: MatchOptions | None = None,
    single_camera: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    num_threads: int = -1,
    seed: int | None = 0,
    attempts: int = 3,
    colmap_descriptors: str = "raw",
    refine_matches: bool = False,
    camera: CameraSpec | None = None,
) -> ReconstructionStats:
    """Extract features with ``extractor`` into OUT/features.h5 (resuming), then
    :func:`reconstruct_from_features` (with ``refine_matches``, given the extractor's
    descriptor maps; ``camera`` as there)."""
    from .extraction import run_extraction

    if refine_matches:
        check_refinement(extractor.upscale, extractor.multi_scale, extractor.pool_scales)
    if camera is not None:
        camera.check_shared(single_camera)  # before the extraction
    out_dir = Path(out_dir)
    prepare_output_dir(out_dir)
    features = out_dir / "features.h5"
    step = time.perf_counter()
    result = run_extraction(
        list(images), features, extractor, fmt="h5", overwrite=overwrite, progress=progress
    )
    if result.n_failed:
        failed = {name for name, _ in result.failures}
        for name, message in result.failures:
            logger.warning("skipping %s: %s", name, message)
        images = [(p, n) for p, n in images if n not in failed]
        if pairs is not None:
            pairs = [(a, b) for a, b in pairs if a not in failed and b not in failed]
    if len(images) < 2:
        raise UserError("fewer than two images with features: nothing to reconstruct")
    extract_seconds = time.perf_counter() - step
    stats = reconstruct_from_features(
        images,
        features,
        out_dir,
        pairs=pairs,
        match_options=match_options,
        single_camera=single_camera,
        overwrite=overwrite,
        progress=progress,
        num_threads=num_threads,
        seed=seed,
        attempts=attempts,
        colmap_descriptors=colmap_descriptors,
        descriptor_map=extractor.descriptor_map if refine_matches else None,
        camera=camera,
    )
    stats.extract_seconds = extract_seconds
    stats.seconds += extract_seconds
    return stats
