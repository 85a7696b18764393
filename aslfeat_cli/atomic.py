"""Durable file replacement: write a temporary file, fsync it, rename it over the target.

HDF5 is not crash safe while a file is open for writing, so every file that is rewritten as
a whole (a folded matches file, a merged file) is built next to its target and renamed over
it (``os.replace``, atomic on POSIX): readers see the old file or the new one, never half.
Free space is checked first, so a full disk is a one-line error before libhdf5 runs out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

SPACE_MARGIN = 256 * 1024  # HDF5 metadata on top of the raw arrays, per write


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so that a rename in it is on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem holding ``folder``."""
    return shutil.disk_usage(folder).free


def need_space(folder: Path, nbytes: int, what: str, kept: str) -> None:
    """UserError when ``folder`` has less than ``nbytes`` (plus a margin) free.

    ``what`` is the job ("write matched pairs"), ``kept`` says what survives the refusal.
    """
    free = free_bytes(folder)
    if free < nbytes + SPACE_MARGIN:
        raise UserError(
            f"not enough disk space in {folder} to {what}: need about "
            f"{(nbytes + SPACE_MARGIN) / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; "
            f"{kept}, free some space and run the same command again"
        )


def temporary_sibling(output: Path) -> Path:
    """The temporary name ``output`` is built under (hidden, per process)."""
    return output.with_name(f".{output.name}.{os.getpid()}.tmp")


@contextmanager
def replacing(output: Path, verb: str = "write") -> Iterator[Path]:
    """Yield a temporary path next to ``output``; on success it replaces ``output``.

    On any error the temporary file is deleted and ``output`` is left as it was; an OSError
    becomes the one-line UserError "cannot <verb> <output>: ...".
    """
    output = Path(output)
    tmp = temporary_sibling(output)
    try:
        yield tmp
        fsync_path(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot {verb} {output}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    fsync_path(output.parent)


def lock_folder(folder: Path, busy: str) -> int:
    """Take an exclusive ``flock`` on ``folder``; UserError ``busy`` when another run holds it.

    Returns the descriptor; closing it (or the process ending, even by ``kill -9``) releases
    the lock, so a lock never outlives its run.
    """
    import errno
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(busy) from None
        raise
    return fd
