"""The extraction pipeline: images in, features out (hloc HDF5 or a COLMAP database).

Worker threads read, decode and downscale images into a small bounded queue while the main
thread runs the one network (onnxruntime session or OpenVINO model) and writes results; OpenCV,
onnxruntime and OpenVINO release the GIL, so the network does not wait for the disk. Every image
is written and flushed as soon as it is done, so an interrupted run keeps its work and the next
run resumes after it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .atomic import need_space
from .errors import UserError
from .images import (
    AUTO_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageError,
    check_memory,
    decode_image,
    fit_pixels,
    fit_size,
    header_size,
    read_bytes,
    resize_image,
    scale_keypoints,
    scaled_size,
    walk_images,
)
from .keypoints import DETECTION_NOISE
from .outputs import prepare_output_file as _prepare_output
from .settings import (
    FEATURES_ID,
    IMAGE_SHA256,
    SHARD,
    db_has_images,
    differences,
    extraction_settings,
    file_sha256,
    new_id,
    plain,
    read_attrs,
    read_db_settings,
    write_db_settings,
)
from .tiling import TILE_PIXELS

if TYPE_CHECKING:
    from .cameras import CameraSpec
    from .extractor import Extractor

logger = logging.getLogger(__name__)

FORMATS = ("h5", "colmap")
_SQLITE_MAGIC = b"SQLite format 3\x00"


# --------------------------------------------------------------------------- finding images


def _read_image_list(image_list: Path, root: Path) -> list[Path]:
    """Paths named in a list file (one per line, relative to ``root``; '#' starts a comment)."""
    try:
        lines = image_list.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read image list {image_list}: {exc}") from None
    # A comment is a line whose first non-blank character is '#' (indented ones too).
    paths = [root / line.strip() for line in lines if line.strip() and line.strip()[0] != "#"]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(f"{len(missing)} image(s) in {image_list} not found: {shown}")
    return paths


def find_images(
    inputs: Iterable[Path], image_list: Path | None = None, image_root: Path | None = None
) -> list[tuple[Path, str]]:
    """Resolve command-line inputs to ``(path, name)`` pairs, in a stable order.

    ``inputs`` are image files (taken whatever their extension) and folders (searched
    recursively for :data:`~aslfeat_cli.images.IMAGE_EXTENSIONS`, any letter case; other files
    are ignored). ``image_list`` names one image per line relative to ``image_root`` (default:
    the list file's folder). Names are paths relative to ``image_root`` with ``/``; without a
    root, relative to the deepest folder holding all inputs (a single folder input: that
    folder, so ``aslfeat extract images/`` names ``a.jpg``, not ``images/a.jpg``).

    Raises UserError for missing inputs, inputs outside ``image_root`` and when no image is
    found.
    """
    inputs = [Path(p) for p in inputs]
    for path in inputs:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    if image_list is not None and not Path(image_list).is_file():
        raise UserError(f"{image_list}: image list not found")
    if image_root is not None and not Path(image_root).is_dir():
        raise UserError(f"{image_root}: image root is not a folder")

    candidates: list[Path] = []
    for path in inputs:
        candidates.extend(walk_images(path) if path.is_dir() else [path])
    if image_list is not None:
        list_root = Path(image_root) if image_root is not None else Path(image_list).parent
        candidates.extend(_read_image_list(Path(image_list), list_root))

    if image_root is not None:
        root = os.path.abspath(image_root)
    else:
        bases = [os.path.abspath(p if p.is_dir() else p.parent) for p in inputs]
        if image_list is not None:
            bases.append(os.path.abspath(Path(image_list).parent))
        root = os.path.commonpath(bases)

    found: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for path in candidates:
        rel = os.path.relpath(os.path.abspath(path), root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise UserError(f"{path} is not inside the image root {root}")
        name = Path(rel).as_posix()
        if name not in seen:  # the same image given twice is extracted once
            seen.add(name)
            found.append((Path(path), name))
    if not found:
        where = ", ".join(str(p) for p in inputs + ([image_list] if image_list else []))
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise UserError(f"no images found in {where} (looked for {exts})")
    return found


# --------------------------------------------------------------------------- output sinks


class _Sink(Protocol):
    def done(self) -> set[str]: ...
    def add(self, name: str, path: Path, features: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head in (b"", _SQLITE_MAGIC)  # SQLite treats an empty file as an empty database


class _H5Sink:
    """hloc features file, opened in append mode and flushed after every image.

    The file's settings and identity (:mod:`aslfeat_cli.settings`) are checked against this
    run's before anything is written: a resume with other settings is refused, and with
    ``overwrite`` the file is started anew (a new ``features_id``).
    """

    def __init__(
        self, output: Path, settings: dict[str, Any], descriptor_dtype: Any, overwrite: bool
    ) -> None:
        import h5py

        from . import h5io

        self._h5io = h5io
        _prepare_output(output, h5py.is_hdf5, "an HDF5 file")
        self.fh = self._open(output)
        self.descriptor_dtype = np.dtype(descriptor_dtype)
        changed = differences(read_attrs(self.fh.attrs), settings) if self.done() else []
        if changed and not overwrite:
            self.fh.close()
            raise UserError(
                f"{output} holds features made with other settings: {', '.join(changed)}; "
                "use --overwrite to start it anew, or another output"
            )
        if changed:
            logger.warning("--overwrite: starting %s anew (%s)", output, ", ".join(changed))
            self.fh.close()
            output.unlink()
            self.fh = self._open(output)
        for key, value in settings.items():
            self.fh.attrs[key] = value
        if SHARD not in settings and SHARD in self.fh.attrs:
            del self.fh.attrs[SHARD]  # resumed without --shard: no longer one shard
        if FEATURES_ID not in self.fh.attrs:
            self.fh.attrs[FEATURES_ID] = new_id()
        self.fh.flush()

    @staticmethod
    def _open(output: Path) -> Any:
        import h5py

        try:
            return h5py.File(output, "a")
        except OSError as exc:
            raise UserError(f"cannot open {output} for writing: {exc}") from None

    def renew_id(self) -> None:
        """A new identity: entries are being replaced, old matches no longer index into them."""
        self.fh.attrs[FEATURES_ID] = new_id()
        self.fh.flush()

    def done(self) -> set[str]:
        return self._h5io.complete_images(self.fh)

    def add(self, name: str, path: Path, features: dict[str, Any]) -> None:
        # Room for the arrays (and HDF5's metadata) first: libhdf5 hitting a full disk
        # mid-write leaves the image's group half written.
        n = len(features["keypoints"])
        nbytes = n * (2 * 4 + 4) + features["descriptors"].size * self.descriptor_dtype.itemsize
        need_space(
            Path(self.fh.filename).parent,
            2 * nbytes,
            f"write the features of {name}",
            "images extracted so far are kept",
        )
        self._h5io.write_features(
            self.fh,
            name,
            features["keypoints"],
            features["scores"],
            features["descriptors"],
            features["image_size"],
            descriptor_dtype=self.descriptor_dtype,
            uncertainty=features.get("uncertainty"),
        )
        if features.get(IMAGE_SHA256):
            self.fh[name].attrs[IMAGE_SHA256] = features[IMAGE_SHA256]
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class _ColmapSink:
    """COLMAP database through :class:`aslfeat_cli.colmap_db.ColmapFeatureWriter`."""

    def __init__(
        self,
        output: Path,
        single_camera: bool,
        overwrite: bool,
        settings: dict[str, Any],
        descriptors: str = "raw",
        camera: CameraSpec | None = None,
    ) -> None:
        from .colmap_db import ColmapFeatureWriter, check_cameras

        _prepare_output(output, _is_sqlite, "an SQLite (COLMAP) database")
        recorded = read_db_settings(output)
        changed = differences(recorded, settings) if db_has_images(output) else []
        if changed and not overwrite:
            raise UserError(
                f"{output} holds features made with other settings: {', '.join(changed)}; "
                "use --overwrite to start it anew, or another output"
            )
        if overwrite and output.exists():
            # COLMAP images cannot be replaced in place: --overwrite starts a new database.
            logger.warning("--overwrite: replacing the COLMAP database %s", output)
            output.unlink()
        if camera is not None:  # asked for: a database being extended must hold those cameras
            check_cameras(output, camera)
        try:
            self.writer = ColmapFeatureWriter(output, single_camera, descriptors, camera)
            self.writer.__enter__()
        except UserError:
            raise
        except Exception as exc:  # pycolmap raises plain RuntimeError for unusable files
            raise UserError(f"cannot open COLMAP database {output}: {exc}") from None
        keep_id = recorded.get(FEATURES_ID) if output.exists() and not overwrite else None
        write_db_settings(output, {**settings, FEATURES_ID: keep_id or new_id()})

    def done(self) -> set[str]:
        return set(self.writer.names())

    def add(self, name: str, path: Path, features: dict[str, Any]) -> None:
        self.writer.add(
            name, path, features["keypoints"], features["descriptors"], features["image_size"]
        )

    def close(self) -> None:
        self.writer.__exit__(None, None, None)


# --------------------------------------------------------------------------- pipeline


@dataclass
class ExtractionSummary:
    """What a run did; ``failures`` holds (image name, one-line reason)."""

    n_images: int = 0  # extracted and written in this run
    n_skipped: int = 0  # already in the output (resume)
    n_failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    mean_keypoints: float = 0.0
    seconds: float = 0.0
    wait_seconds: float = 0.0  # time the session sat idle waiting for decoded images

    @property
    def rate(self) -> float:
        """Images extracted per second (0 when nothing ran)."""
        return self.n_images / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        """A one-line summary; failures are listed one per line below it."""
        parts = [f"{self.n_images} image(s) extracted"]
        if self.n_skipped:
            parts.append(f"{self.n_skipped} already done")
        if self.n_failed:
            parts.append(f"{self.n_failed} FAILED")
        line = ", ".join(parts)
        if self.n_images:
            line += (
                f" in {self.seconds:.1f} s ({self.rate:.2f} images/s), "
                f"mean {self.mean_keypoints:.0f} keypoints"
            )
        return "\n".join([line] + [f"  failed: {name}: {msg}" for name, msg in self.failures])


@dataclass
class _Loaded:
    image: np.ndarray  # what the network sees (possibly downscaled)
    original_size: tuple[int, int]  # (W, H) of the file
    sha256: str | None = None  # of the file's bytes: a resume can tell a changed image


class _OnceNotice:
    """The automatic downscaling notice, printed once per run (from any worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.shown = False

    def __call__(self) -> None:
        with self._lock:
            if not self.shown:
                self.shown = True
                logger.warning(
                    "images above %.1f MP are downscaled to %.1f MP for the network (keypoints "
                    "stay in original pixels; --max-dim N sets the long side instead)",
                    AUTO_MAX_PIXELS / 1e6,
                    AUTO_MAX_PIXELS / 1e6,
                )


_BIG_DECODE = 8_000_000  # pixels
_big_decodes = threading.Semaphore(1)


def network_size(width: int, height: int, max_dim: int | None) -> tuple[int, int]:
    """The size the network sees: --max-dim's long side, else at most AUTO_MAX_PIXELS."""
    if max_dim is not None:
        return fit_size(width, height, max_dim)
    return fit_pixels(width, height, AUTO_MAX_PIXELS)


def _load(
    path: Path,
    max_dim: int | None,
    notice: Callable[[], None] = lambda: None,
    tile_pixels: int | None = TILE_PIXELS,
    upscale: float = 1.0,
) -> _Loaded:
    """Worker-thread job: check the size from the header, decode and downscale one image.

    Memory is refused before decoding when the network input (enlarged by ``upscale`` in
    ``extract()``) would not fit (check_memory).
    """
    data = read_bytes(path)
    size = header_size(data)
    if size is not None:
        check_memory(scaled_size(*network_size(*size, max_dim), upscale), tile_pixels)
    if size is not None and size[0] * size[1] > _BIG_DECODE:
        with _big_decodes:  # one large decode at a time: --workers 4 must not mean 4x memory
            image = decode_image(data)  # JPEGs above the decoding limit come back reduced
    else:
        image = decode_image(data)
    height, width = image.shape[:2]
    original = size if size is not None else (width, height)
    target = network_size(*original, max_dim)
    if size is None:
        check_memory(scaled_size(*target, upscale), tile_pixels)
    if max_dim is None and target != tuple(original):
        notice()
    # float32 here, on the worker, so the main thread's to_gray() has nothing left to convert.
    image = resize_image(image, target).astype(np.float32, copy=False)
    return _Loaded(image, tuple(original), _sha256_or_none(path))


def _prefetch(
    items: list[tuple[Path, str]], job: Callable[[Path], _Loaded], workers: int
) -> Iterator[tuple[Path, str, Future]]:
    """Run ``job`` on worker threads, at most ``2 * workers`` ahead; yield in input order."""
    depth = 2 * workers  # bounded: memory stays a few decoded images whatever the folder size
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aslfeat-load")
    pending: deque[tuple[Path, str, Future]] = deque()
    todo = iter(items)
    finished = False
    try:
        for path, name in todo:
            pending.append((path, name, pool.submit(job, path)))
            if len(pending) >= depth:
                break
        while pending:
            yield pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[0], nxt[1], pool.submit(job, nxt[0])))
        finished = True
    finally:
        # Run out of images: the last decodes are still wanted (inference threads take them
        # later). Stopped early (Ctrl-C, a broken output): cancel what has not started.
        pool.shutdown(wait=True, cancel_futures=not finished)


SMALL_PIXELS = 500_000  # network inputs up to this run several at once with --streams


class _Inference:
    """Inference-thread job: wait for the decoded image, then run it.

    With ``streams`` > 1, images whose network input is at most :data:`SMALL_PIXELS` run
    ``streams`` at a time, one per lane (:meth:`Extractor.lanes`: an OpenVINO stream each,
    0.88x the time per 640x480 image of one at a time, measured on 2 cores). Each stream
    keeps buffers for the largest image it has run, so the first larger image retires the
    lanes (their memory is freed) and the run goes on one image at a time with every thread:
    the memory bound of large inputs is the same as without streams.
    """

    def __init__(self, extractor: Extractor, streams: int) -> None:
        self._extractor = extractor
        self._streams = streams
        self._cond = threading.Condition()
        self._free: list[Extractor] | None = None  # lanes not in use; None: not made yet
        self._in_use = 0
        self.retired = streams <= 1
        self._alone = threading.Lock()  # one image at a time on the extractor itself

    def __call__(self, loading: Future) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        loaded = loading.result()
        waited = time.perf_counter() - start
        small = loaded.image.shape[0] * loaded.image.shape[1] <= SMALL_PIXELS
        lane = self._take_lane() if small else self._retire()
        if lane is None:
            with self._alone:
                return _extract_one(self._extractor, loaded), waited
        try:
            return _extract_one(lane, loaded), waited
        finally:
            with self._cond:
                self._free.append(lane)
                self._in_use -= 1
                self._cond.notify_all()

    def _take_lane(self) -> Extractor | None:
        with self._cond:
            if self._free is None and not self.retired:
                self._free = self._extractor.lanes(self._streams)  # compiled on first use
                if len(self._free) < 2:  # this backend has no lanes (onnxruntime)
                    self.retired = True
            while not self.retired and not self._free:
                self._cond.wait()
            if self.retired:
                return None
            self._in_use += 1
            return self._free.pop()

    def _retire(self) -> None:
        """A large image: wait for the lanes to finish, then drop them for good."""
        with self._cond:
            self.retired = True
            self._cond.notify_all()
            while self._in_use:
                self._cond.wait()
            if self._free:
                logger.debug("a network input above %d pixels: streams off", SMALL_PIXELS)
            self._free = []
        return None


def default_streams() -> int:
    """--streams default: 2 on CPUs with at least 2 cores, else 1."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def default_workers() -> int:
    """Decoding threads: enough to keep one session fed, few enough not to starve it."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def run_extraction(
    images: list[tuple[Path, str]],
    output: Path,
    extractor: Extractor,
    fmt: str = "h5",
    overwrite: bool = False,
    descriptor_dtype: Any = np.float32,
    single_camera: bool = False,
    progress: bool = True,
    workers: int | None = None,
    colmap_descriptors: str = "raw",
    shard: str | None = None,
    streams: int = 1,
    camera: CameraSpec | None = None,
) -> ExtractionSummary:
    """Extract features for ``images`` (from :func:`find_images`) into ``output``.

    Without ``overwrite`` images already in the output are skipped (resume). With it they are
    extracted again: in HDF5 their entries are replaced (other images in the file are kept);
    a COLMAP database is started anew (COLMAP images cannot be replaced in place). Images that
    cannot be read or processed are recorded in the summary's ``failures`` and the run goes
    on; problems with the output itself raise UserError. ``shard`` (``"K/N"``, or ``"ray"``
    for a Ray worker's part) is recorded in an HDF5 output for ``aslfeat merge``.
    ``streams`` > 1 runs that many small images at once (see :class:`_Inference`).
    ``camera``: a COLMAP database's new cameras (:class:`~.cameras.CameraSpec`; default:
    COLMAP's guess).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if fmt not in FORMATS:
        raise UserError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    output = Path(output)
    descriptor_dtype = np.dtype(descriptor_dtype)
    if fmt == "h5":
        settings = extraction_settings(extractor, descriptor_dtype)
        if shard:
            settings[SHARD] = shard
        sink: _Sink = _H5Sink(output, settings, descriptor_dtype, overwrite)
    else:
        settings = extraction_settings(extractor, np.float32)  # COLMAP stores float32
        sink = _ColmapSink(output, single_camera, overwrite, settings, colmap_descriptors, camera)

    summary = ExtractionSummary()
    start = time.perf_counter()
    total_keypoints = 0
    try:
        done = sink.done()
        if isinstance(sink, _H5Sink):
            _check_unchanged(sink, images, done, output, overwrite)
        if overwrite:
            if isinstance(sink, _H5Sink) and done & {name for _, name in images}:
                sink.renew_id()
            done = set()
        todo = [(path, name) for path, name in images if name not in done]
        summary.n_skipped = len(images) - len(todo)
        if summary.n_skipped:
            logger.debug("%d image(s) already in %s: skipped", summary.n_skipped, output)
        max_dim = extractor.max_dim  # resized here on the workers; extract() sees a fit image
        notice = _OnceNotice()
        tiles = extractor.effective_tile_pixels  # for the memory estimate before decoding
        infer = _Inference(extractor, streams)
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=len(todo), unit="img", disable=not progress or not todo, dynamic_ncols=True
            ) as bar,
            ThreadPoolExecutor(max(1, streams), thread_name_prefix="aslfeat-infer") as pool,
        ):
            # Up to one image more than lanes in flight, so no lane idles while results of
            # finished images are written (in input order, on this thread).
            pending: deque[tuple[Path, str, Future]] = deque()

            def write_oldest() -> None:
                nonlocal total_keypoints
                path, name, job = pending.popleft()
                try:
                    features, waited = job.result()
                    summary.wait_seconds += waited
                except ImageError as exc:
                    _fail(summary, name, str(exc))
                except Exception as exc:  # a bad image must not stop the other images
                    logger.debug("extraction of %s failed", name, exc_info=True)
                    _fail(summary, name, f"{type(exc).__name__}: {_one_line(exc)}")
                else:
                    try:
                        sink.add(name, path, features)
                    except UserError:
                        raise
                    except Exception as exc:  # the output is broken: stop, keep what is there
                        raise UserError(
                            f"cannot write {name} to {output}: {_one_line(exc)}"
                        ) from exc
                    summary.n_images += 1
                    total_keypoints += len(features["keypoints"])
                bar.update(1)

            try:
                for path, name, loading in _prefetch(
                    todo,
                    lambda p: _load(p, max_dim, notice, tiles, extractor.upscale),
                    workers or default_workers(),
                ):
                    pending.append((path, name, pool.submit(infer, loading)))
                    if len(pending) > streams:
                        write_oldest()
                while pending:
                    write_oldest()
            finally:
                for _, _, job in pending:  # Ctrl-C or a broken output: start nothing new
                    job.cancel()
    finally:
        sink.close()
        summary.seconds = time.perf_counter() - start
        summary.mean_keypoints = total_keypoints / summary.n_images if summary.n_images else 0.0
        logger.debug(
            "waited %.2f s of %.2f s for image decoding", summary.wait_seconds, summary.seconds
        )
    return summary


def _check_unchanged(
    sink: _H5Sink, images: list[tuple[Path, str]], done: set[str], output: Path, overwrite: bool
) -> None:
    """Refuse to resume over features of an image whose file has changed since (a folder of
    other photos with the same names, an edited photo), unless ``overwrite`` redoes them."""
    if not overwrite:
        check_unchanged_images(sink.fh, [(p, n) for p, n in images if n in done], output)


def check_unchanged_images(fh: Any, images: Iterable[tuple[Path, str]], label: Path) -> None:
    """UserError when an image's file no longer has the SHA-256 recorded for its features in
    the open features file ``fh`` (named ``label``); images recorded without one pass."""
    for path, name in images:
        recorded = fh[name].attrs.get(IMAGE_SHA256)
        if recorded is not None and str(plain(recorded)) != _sha256_or_none(path):
            raise UserError(
                f"{label} holds features of {name!r} made from another file (the image "
                f"{path} has changed since); use --overwrite or another output"
            )


def _sha256_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _extract_one(extractor: Extractor, loaded: _Loaded) -> dict[str, Any]:
    """Run the network; keypoints and image_size refer to the original image."""
    result = extractor.extract(loaded.image)
    keypoints = np.asarray(result.keypoints, dtype=np.float32)
    height, width = loaded.image.shape[:2]
    if (width, height) != loaded.original_size:
        keypoints = scale_keypoints(keypoints, (width, height), loaded.original_size)
    return {
        "keypoints": keypoints,
        "scores": np.asarray(result.scores, dtype=np.float32),
        "descriptors": np.asarray(result.descriptors, dtype=np.float32),
        "image_size": loaded.original_size,
        IMAGE_SHA256: loaded.sha256,
        # hloc's rule: the detection noise times the mean resize factor (the noise is in
        # network pixels, so --upscale divides it)
        "uncertainty": DETECTION_NOISE
        / extractor.upscale
        * float(np.mean(np.divide(loaded.original_size, (width, height)))),
    }


def _fail(summary: ExtractionSummary, name: str, message: str) -> None:
    summary.n_failed += 1
    summary.failures.append((name, message))
    # Listed once, in the summary at the end (a log line here printed every failure twice).
    logger.debug("%s: %s", name, message)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
