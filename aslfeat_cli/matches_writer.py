"""Crash-safe writing of a matches file: a journal of small batch files, folded in atomically.

HDF5 is not crash safe: a process killed (``kill -9``, SIGTERM, out of memory) while it has
a file open for writing leaves a file that h5py cannot open ("bad object header version
number"), and a full disk can crash libhdf5 itself. Measured on this project's matcher
(2026-12-01): a ``match`` run killed 1.5-3.5 s into a new file left it unreadable every time.
So the matches file is never open for writing while pairs are being matched:

* New pairs are buffered and written, every :data:`BATCH_SECONDS` (or :data:`BATCH_BYTES`),
  to a new HDF5 file in the journal folder ``<output>.journal/``: written as ``*.tmp``,
  fsynced, then renamed to ``batch-NNNNNN.h5``. A renamed batch is complete; a ``.tmp`` left
  by a killed run is deleted. A kill loses at most the pairs of the last second.
* At the end of the run (and at the start of the next one, for a journal left by a killed
  run) the batches are folded into a copy of the matches file, which is fsynced and renamed
  over it (``os.replace``, atomic on POSIX). Readers see the old file or the new one, never a
  half-written one; only then are the batches deleted.
* Free space is checked before every write (a batch, a fold), so a full disk ends with a
  one-line error before libhdf5 runs out of room, and the journal is kept for the re-run.
* The journal folder is locked (``flock``) while a run uses it: a second ``match`` on the
  same output is refused instead of interleaving writes.

The layout inside every file is :mod:`.h5io`'s (one place for the format).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from . import h5io
from .atomic import fsync_path as _fsync
from .atomic import lock_folder, need_space, replacing
from .errors import UserError

logger = logging.getLogger(__name__)

BATCH_SECONDS = 1.0  # a kill loses at most this much matching work
BATCH_BYTES = 32 * 1024 * 1024  # bound on the pairs held in memory between batches


def journal_dir(output: Path) -> Path:
    """The folder holding the batches of ``output`` not yet folded in."""
    return output.with_name(output.name + ".journal")


def _need_space(folder: Path, nbytes: int, what: str) -> None:
    need_space(folder, nbytes, what, "pairs matched so far are kept")


def _pair_groups(fh: h5py.File) -> list[h5py.Group]:
    groups: list[h5py.Group] = []

    def visit(key: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and "matches0" in obj and "name0" in obj.attrs:
            groups.append(obj)

    fh.visititems(visit)
    return groups


class MatchesWriter:
    """Write pairs to ``output`` crash-safely (see the module docstring).

    Use as a context manager; ``fresh=True`` (``--overwrite``) starts from an empty file,
    the old one stays in place until the new one replaces it at the end.
    """

    def __init__(self, output: Path, fresh: bool = False) -> None:
        self.output = Path(output)
        self.journal = journal_dir(self.output)
        self.fresh = fresh
        self._lock_fd: int | None = None
        # Root attributes (recorded settings, :mod:`.settings`) written with every batch and
        # folded into the file with it, so a killed run's pairs keep their settings.
        self.attrs: dict[str, Any] = {}
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._last_batch = time.monotonic()
        self._next_index = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MatchesWriter:
        if self.output.exists() and not h5py.is_hdf5(self.output):
            raise UserError(f"{self.output}: exists and is not an HDF5 file")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.journal.mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.journal}: {exc.strerror or exc}") from None
        self._lock()
        # A batch or a fold cut short by a killed run: never renamed, so never used.
        for stale in [*self.journal.glob("*.tmp"), *self._fold_leftovers()]:
            stale.unlink()
        self._batches_left = self._batches()
        if self.fresh:  # --overwrite: batches of an earlier run belong to the old file
            for batch in self._batches_left:
                batch.unlink()
            self._batches_left = []
        elif self._batches_left:
            logger.info(
                "%s: folding in %d batch(es) left by an interrupted run",
                self.output,
                len(self._batches_left),
            )
            self._fold()
        self._next_index = 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
                # Ctrl-C keeps what was matched, like a normal end.
                self._write_batch()
                self._fold()
                if not self._batches():
                    self.journal.rmdir()  # empty now; still locked by us, so no one uses it
            else:
                self._salvage()
        finally:
            self._unlock()

    def _fold_leftovers(self) -> list[Path]:
        return list(self.output.parent.glob(f".{self.output.name}.*.tmp"))

    def _salvage(self) -> None:
        """After an error: keep the pending pairs in the journal if there is room."""
        try:
            self._write_batch()
        except Exception:  # the error being raised matters more than this one
            logger.debug("could not write the last batch", exc_info=True)

    # ------------------------------------------------------------------ lock

    def _lock(self) -> None:
        self._lock_fd = lock_folder(
            self.journal,
            f"{self.output} is being written by another aslfeat run; "
            "wait for it or choose another output",
        )

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------ reading

    def open_done(self) -> h5py.File | None:
        """The matches file as it stands (read-only; None when there is none or --overwrite).

        Everything committed is in it: batches left by a killed run were folded in on enter.
        """
        if self.fresh or not self.output.exists():
            return None
        try:
            return h5py.File(self.output, "r")
        except OSError as exc:
            raise UserError(f"{self.output}: cannot open as HDF5 ({exc})") from None

    # ------------------------------------------------------------------ writing

    def add(
        self,
        name0: str,
        name1: str,
        matches0: np.ndarray,
        scores0: np.ndarray,
        inliers: np.ndarray | None = None,
        num_keypoints1: int | None = None,
    ) -> None:
        """Queue one pair; a batch is committed every BATCH_SECONDS or BATCH_BYTES."""
        item = {
            "name0": name0,
            "name1": name1,
            "matches0": np.asarray(matches0),
            "scores0": np.asarray(scores0),
            "inliers": None if inliers is None else np.asarray(inliers),
            "num_keypoints1": num_keypoints1,
        }
        self._pending.append(item)
        self._pending_bytes += sum(v.nbytes for v in item.values() if isinstance(v, np.ndarray))
        if (
            self._pending_bytes >= BATCH_BYTES
            or time.monotonic() - self._last_batch >= BATCH_SECONDS
        ):
            self._write_batch()

    def _batches(self) -> list[Path]:
        return sorted(self.journal.glob("batch-*.h5"))

    def _write_batch(self) -> None:
        self._last_batch = time.monotonic()
        if not self._pending:
            return
        _need_space(self.journal, 2 * self._pending_bytes, "write matched pairs")
        existing = {p.name for p in self._batches()}
        while f"batch-{self._next_index:06d}.h5" in existing:
            self._next_index += 1
        final = self.journal / f"batch-{self._next_index:06d}.h5"
        tmp = final.with_suffix(".h5.tmp")
        try:
            with h5py.File(tmp, "w") as fh:
                for key, value in self.attrs.items():
                    fh.attrs[key] = value
                for item in self._pending:
                    h5io.write_matches(
                        fh,
                        item["name0"],
                        item["name1"],
                        item["matches0"],
                        item["scores0"],
                        inliers=item["inliers"],
                        num_keypoints1=item["num_keypoints1"],
                    )
            _fsync(tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write matches to {self.journal}: {exc}") from None
        os.replace(tmp, final)
        _fsync(self.journal)
        self._next_index += 1
        self._pending.clear()
        self._pending_bytes = 0

    def _fold(self) -> None:
        """Fold every batch into a copy of the matches file and rename it over the file."""
        batches = self._batches()
        if not batches and self.output.exists() and not self.fresh:
            return
        base = None if self.fresh or not self.output.exists() else self.output
        needed = sum(b.stat().st_size for b in batches) + (base.stat().st_size if base else 0)
        _need_space(self.output.parent, needed, f"update {self.output}")
        with replacing(self.output, "update") as tmp:
            if base is not None:
                shutil.copyfile(base, tmp)
            with h5py.File(tmp, "a") as dst:
                for batch in batches:
                    with h5py.File(batch, "r") as src:
                        for key, value in src.attrs.items():
                            dst.attrs[key] = value
                        for grp in _pair_groups(src):
                            h5io.write_matches(
                                dst,
                                str(grp.attrs["name0"]),
                                str(grp.attrs["name1"]),
                                grp["matches0"][()],
                                grp["matching_scores0"][()],
                                inliers=grp["inliers0"][()] if "inliers0" in grp else None,
                                num_keypoints1=grp.attrs.get("num_keypoints1"),
                            )
        self.fresh = False  # the file now holds this run's pairs
        for batch in batches:
            batch.unlink()
