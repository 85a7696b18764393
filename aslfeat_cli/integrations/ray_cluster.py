"""Extraction and matching over a Ray cluster (``extract --ray``, ``match --ray``).

Ray (``pip install 'aslfeat[ray]'``) schedules, we do not: the driver splits the work into
small batches and hands them to a pool of actors (:class:`ray.util.ActorPool`); each actor
loads the model once and writes what it does to files of its own in ``<output>.parts/``,
with the same rules as a single-process run (features: :func:`run_extraction`, flushed per
image; matches: :func:`match_pairs`, crash-safe journal). At the end the driver merges the
parts into the output (:func:`aslfeat_cli.merge.merge_files`: settings checked, entries
copied byte for byte) and deletes them.

Faults: actors are restarted by Ray and their batch retried (``max_restarts``,
``max_task_retries``); a restarted extraction actor reopens its part and skips the images it
had written. A re-run after the driver died resumes from the parts and the output. The parts
folder must be on a filesystem every node sees (on one machine: any folder).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from .. import h5io
from ..atomic import lock_folder
from ..errors import UserError
from ..extraction import ExtractionSummary, _one_line
from ..matching import MatchSummary
from ..merge import merge_files

logger = logging.getLogger(__name__)

RAY_SHARD = "ray"  # the shard attribute of a worker's part file
MAX_RESTARTS = 3  # per actor: a crashing image must not restart it forever


def parts_dir(output: Path) -> Path:
    """The folder of the workers' files for ``output``."""
    return output.with_name(output.name + ".parts")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'aslfeat[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` None or "local" starts (or joins, when ``RAY_ADDRESS``
    is set) a local instance; "auto" or "ray://host:port" joins a cluster. ``actors`` None:
    as many as the cluster's CPUs (or GPUs) allow; ``threads`` per actor."""

    address: str | None = None
    actors: int | None = None
    threads: int = 1
    batch_size: int | None = None  # images (or pairs) per task; None: chosen from the job


@contextmanager
def _connected(options: RayOptions) -> Iterator[Any]:
    ray = _import_ray()
    address = None if options.address in (None, "", "local") else options.address
    start = time.perf_counter()
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=logger.isEnabledFor(logging.DEBUG),
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except Exception as exc:  # ConnectionError, ValueError for a bad address ...
        raise UserError(f"cannot start or join Ray at {address or 'local'}: {exc}") from None
    logger.info(
        "ray: %s, %s CPU(s), %s GPU(s) (%.1f s to start)",
        address or "local instance",
        int(ray.cluster_resources().get("CPU", 0)),
        int(ray.cluster_resources().get("GPU", 0)),
        time.perf_counter() - start,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _pool_size(ray: Any, options: RayOptions, gpus: bool, n_tasks: int) -> int:
    if options.actors:
        return max(1, min(options.actors, n_tasks))
    resources = ray.cluster_resources()
    slots = resources.get("GPU", 0) if gpus else resources.get("CPU", 1) // options.threads
    return max(1, min(int(slots), n_tasks))


@contextmanager
def _locked_parts(output: Path, fresh: bool) -> Iterator[Path]:
    folder = parts_dir(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from None
    fd = lock_folder(
        folder, f"{output} is being written by another aslfeat run; wait for it or use another"
    )
    try:
        if fresh:  # --overwrite: parts of an earlier run belong to the old output
            for old in folder.iterdir():
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        yield folder
    finally:
        os.close(fd)


def _batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _run_pool(
    ray: Any,
    actors: list[Any],
    call: Callable[[Any, Any], Any],
    tasks: list[Any],
    total: int,
    progress: bool,
    unit: str,
    on_result: Callable[[Any], None],
) -> None:
    """Run ``tasks`` on the actor pool as they free up; a worker's error becomes one line."""
    from ray.util import ActorPool
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, disable=not progress or not total, dynamic_ncols=True) as bar:
        try:
            for count, summary in ActorPool(actors).map_unordered(call, tasks):
                on_result(summary)
                bar.update(count)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(cause.message) from None
            raise UserError(f"a Ray worker failed: {_one_line(cause or exc)}") from None
        except ray.exceptions.RayActorError as exc:
            raise UserError(
                f"a Ray worker died {MAX_RESTARTS + 1} times ({_one_line(exc)}); what was "
                "written is kept: run the same command again to resume"
            ) from None


def _finish(parts: list[Path], output: Path, fresh: bool, progress: bool) -> None:
    """Merge the parts (and the output's earlier content) into the output, then drop them."""
    inputs = ([output] if output.exists() and not fresh else []) + parts
    if inputs:
        merge_files(inputs, output, overwrite=True, partial=True, progress=progress)
    for part in parts:
        part.unlink()


# --------------------------------------------------------------------------- extraction


class ExtractActor:
    """One Ray actor: one Extractor, one part file (``part-<index>.h5``) it appends to."""

    def __init__(
        self, index: int, folder: str, extractor_kwargs: dict[str, Any], options: dict[str, Any]
    ) -> None:
        from ..extractor import Extractor

        self.part = Path(folder) / f"part-{index:05d}.h5"
        self.options = options
        self.extractor = Extractor(**extractor_kwargs)
        if self.part.exists():
            try:
                with h5py.File(self.part, "r"):
                    pass
            except OSError:  # killed in a write it could not survive: redo its images
                self.part.rename(self.part.with_suffix(".h5.damaged"))

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()

    def settings(self) -> dict[str, Any]:
        """The settings this actor's files record (:func:`extraction_settings`)."""
        from ..settings import extraction_settings

        return extraction_settings(self.extractor, self.options["descriptor_dtype"])

    def extract(self, batch: list[tuple[str, str]]) -> tuple[int, ExtractionSummary]:
        """Extract ``(path, name)`` images into this actor's part file."""
        from ..extraction import run_extraction

        summary = run_extraction(
            [(Path(path), name) for path, name in batch],
            self.part,
            self.extractor,
            progress=False,
            shard=RAY_SHARD,
            **self.options,
        )
        return len(batch), summary


def _done_images(files: list[Path], images: dict[str, Path]) -> set[str]:
    """Images complete in ``files``; refuses, as a resume does, when an image file changed."""
    from ..extraction import check_unchanged_images

    done: set[str] = set()
    for path in files:
        with h5io._opened(path) as fh:
            names = h5io.complete_images(fh) & images.keys()
            check_unchanged_images(fh, [(images[name], name) for name in names], path)
        done |= names
    return done


def _check_settings(ray: Any, actors: list[Any], existing: list[Path], output: Path) -> None:
    """Before any work: every actor runs the same settings, and those of the files resumed."""
    from ..settings import differences, read_attrs

    found = ray.get([actor.settings.remote() for actor in actors])
    for other in found[1:]:
        changed = differences(found[0], other)
        if changed:
            raise UserError(
                f"Ray workers disagree on settings ({', '.join(changed)}: nodes of different "
                "kinds?); give --backend and --precision explicitly"
            )
    for path in existing:
        with h5io._opened(path) as fh:
            changed = differences(read_attrs(fh.attrs), found[0])
            has_images = bool(h5io.complete_images(fh))
        if changed and has_images:
            raise UserError(
                f"{output} holds features made with other settings: {', '.join(changed)}; "
                "use --overwrite to start it anew, or another output"
            )


def ray_extract(
    images: list[tuple[Path, str]],
    output: Path,
    extractor_kwargs: dict[str, Any],
    options: RayOptions = RayOptions(),
    overwrite: bool = False,
    descriptor_dtype: str = "float32",
    workers: int = 1,
    progress: bool = True,
) -> ExtractionSummary:
    """:func:`~aslfeat_cli.extraction.run_extraction` for ``images`` on a Ray actor pool,
    into the hloc features file ``output``; same resume, failure and summary rules."""
    output = Path(output)
    if output.exists() and not h5py.is_hdf5(output):
        raise UserError(f"output {output} exists and is not an HDF5 file; refusing to touch it")
    summary = ExtractionSummary()
    start = time.perf_counter()
    with _locked_parts(output, fresh=overwrite) as folder:
        parts = sorted(folder.glob("part-*.h5"))
        by_name = {name: path for path, name in images}
        existing = ([output] if output.exists() and not overwrite else []) + parts
        done = _done_images(existing, by_name)
        todo = [(str(path), name) for path, name in images if name not in done]
        summary.n_skipped = len(images) - len(todo)
        if todo:
            with _connected(options) as ray:
                gpus = (
                    extractor_kwargs.get("device") != "cpu"
                    and ray.cluster_resources().get("GPU", 0) > 0
                )
                size = options.batch_size or _batch_size(len(todo), ray, options, gpus)
                batches = _batches(todo, size)
                n_actors = _pool_size(ray, options, gpus, len(batches))
                kwargs = dict(extractor_kwargs, threads=options.threads)
                if gpus:
                    kwargs["device"] = "cuda"
                actor_class = ray.remote(
                    num_cpus=0 if gpus else options.threads,
                    num_gpus=1 if gpus else 0,
                    max_restarts=MAX_RESTARTS,
                    max_task_retries=MAX_RESTARTS,
                )(ExtractActor)
                run_options = {"workers": workers, "descriptor_dtype": descriptor_dtype}
                actors = [
                    actor_class.remote(i, str(folder), kwargs, run_options) for i in range(n_actors)
                ]
                _check_settings(ray, actors, existing, output)
                logger.info(
                    "%d image(s) in %d batch(es) over %d actor(s) x %d thread(s)",
                    len(todo), len(batches), n_actors, options.threads,
                )  # fmt: skip
                keypoints = 0.0

                def collect(part: ExtractionSummary) -> None:
                    nonlocal keypoints
                    # A retried batch skips what its killed actor wrote: done in this run too.
                    summary.n_images += part.n_images + part.n_skipped
                    summary.failures.extend(part.failures)
                    keypoints += part.mean_keypoints * part.n_images

                _run_pool(
                    ray,
                    actors,
                    lambda actor, batch: actor.extract.remote(batch),
                    batches,
                    len(todo),
                    progress,
                    "img",
                    collect,
                )
                summary.n_failed = len(summary.failures)
                summary.mean_keypoints = keypoints / summary.n_images if summary.n_images else 0
        _finish(sorted(folder.glob("part-*.h5")), output, overwrite, progress)
    shutil.rmtree(parts_dir(output), ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def _batch_size(n_items: int, ray: Any, options: RayOptions, gpus: bool) -> int:
    """About 8 tasks per actor (even progress, cheap retries), 1 to 64 images each."""
    slots = _pool_size(ray, options, gpus, n_items)
    return max(1, min(64, math.ceil(n_items / (8 * slots))))


# --------------------------------------------------------------------------- matching


class MatchActor:
    """One Ray actor matching chunks of pairs; each chunk goes to a file of its own."""

    def __init__(self, features: str, folder: str, options: Any, verify: Any) -> None:
        self.features = Path(features)
        self.folder = Path(folder)
        self.options = options
        self.verify = verify

    def match(self, chunk: tuple[str, list[tuple[str, str]]]) -> tuple[int, MatchSummary]:
        """Match ``(chunk id, pairs)`` into ``chunk-<id>.h5`` (resumed when retried)."""
        from ..matching import match_pairs

        chunk_id, pairs = chunk
        summary = match_pairs(
            self.features,
            [tuple(p) for p in pairs],
            self.folder / f"chunk-{chunk_id}.h5",
            self.options,
            self.verify,
            progress=False,
            shard=RAY_SHARD,
        )
        return len(pairs), summary


def _fold_leftover_journals(folder: Path) -> None:
    """A chunk whose actor was killed keeps a journal: fold it in (MatchesWriter does)."""
    from ..matches_writer import MatchesWriter

    for journal in folder.glob("chunk-*.h5.journal"):
        with MatchesWriter(journal.with_suffix("")):
            pass


def ray_match(
    features: Path,
    pairs: list[tuple[str, str]],
    output: Path,
    match_options: Any,
    verify: Any,
    options: RayOptions = RayOptions(),
    overwrite: bool = False,
    progress: bool = True,
) -> MatchSummary:
    """:func:`~aslfeat_cli.matching.match_pairs` on a Ray actor pool; same output."""
    import uuid

    from ..matching import check_pair_keys, clean_pairs
    from ..settings import matching_settings

    features, output = Path(features), Path(output)
    names = h5io.list_names(features)
    if not names:
        raise UserError(f"{features}: holds no features (run aslfeat extract first)")
    pairs = clean_pairs(pairs, names)
    check_pair_keys(pairs)
    summary = MatchSummary(n_pairs=len(pairs))
    start = time.perf_counter()
    with _locked_parts(output, fresh=overwrite) as folder:
        _fold_leftover_journals(folder)
        chunks = sorted(folder.glob("chunk-*.h5"))
        done = _done_pairs(
            features, ([output] if output.exists() and not overwrite else []) + chunks,
            matching_settings(match_options, verify), verify is not None,
        )  # fmt: skip
        todo = [p for p in pairs if frozenset(p) not in done]
        summary.n_skipped = len(pairs) - len(todo)
        if todo:
            with _connected(options) as ray:
                size = options.batch_size or max(1, min(2000, math.ceil(len(todo) / 16)))
                run_id = uuid.uuid4().hex[:8]
                batches = [
                    (f"{run_id}-{i:06d}", chunk) for i, chunk in enumerate(_batches(todo, size))
                ]
                n_actors = _pool_size(ray, options, False, len(batches))
                actor_class = ray.remote(
                    num_cpus=options.threads,
                    max_restarts=MAX_RESTARTS,
                    max_task_retries=MAX_RESTARTS,
                )(MatchActor)
                actors = [
                    actor_class.remote(str(features), str(folder), match_options, verify)
                    for _ in range(n_actors)
                ]
                logger.info(
                    "%d pair(s) in %d chunk(s) over %d actor(s)", len(todo), len(batches), n_actors
                )
                if verify is not None:
                    summary.total_inliers = 0

                def collect(part: MatchSummary) -> None:
                    summary.n_matched += part.n_matched
                    summary.n_empty += part.n_empty
                    summary.total_matches += part.total_matches
                    if part.total_inliers is not None:
                        summary.total_inliers += part.total_inliers

                _run_pool(
                    ray,
                    actors,
                    lambda actor, chunk: actor.match.remote(chunk),
                    batches,
                    len(todo),
                    progress,
                    "pair",
                    collect,
                )
        _finish(sorted(folder.glob("chunk-*.h5")), output, overwrite, progress)
    shutil.rmtree(parts_dir(output), ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def _done_pairs(
    features: Path, files: list[Path], settings: dict[str, Any], verify: bool
) -> set[frozenset[str]]:
    """Pairs already in ``files``, checked as a resumed ``match`` checks its output (same
    settings, same features file); with ``verify`` only pairs that were verified."""
    from ..matching import _settings_to_record, pair_done

    done: set[frozenset[str]] = set()
    with h5py.File(features, "r") as ffh:
        for path in files:
            with h5io._opened(path) as mfh:
                _settings_to_record(mfh, ffh, settings, output=path, features=features)
                for a, b in h5io.list_pairs(path):
                    if pair_done(mfh, a, b, verify):
                        done.add(frozenset((a, b)))
    return done
