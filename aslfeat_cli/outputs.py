"""Checks made before anything is written: the output can be created where it is asked for.

Every command calls these first, so that an unusable output (a file in the way, a read-only
folder, a folder where a file is wanted, a file of another kind) is one line and a non-zero
exit before any work is done, never a traceback half-way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import UserError


def prepare_output_dir(folder: Path) -> None:
    """Create ``folder`` (and its parents) or raise UserError saying why it cannot be."""
    folder = Path(folder)
    try:
        folder.exists()
    except PermissionError:
        raise UserError(f"output folder {folder} is not accessible (permission denied)") from None
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot create output folder {folder}: a file is in the way") from None
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable")


def prepare_output_file(
    output: Path, magic_check: Callable[[Path], bool] | None = None, kind: str = ""
) -> None:
    """Fail early, with one line, when ``output`` cannot be written (as ``kind``, when
    ``magic_check`` tells whether an existing file is of that kind)."""
    output = Path(output)
    try:
        if output.is_dir():
            raise UserError(f"output {output} is a folder; give a file name")
        if magic_check is not None and output.exists() and not magic_check(output):
            raise UserError(f"output {output} exists and is not {kind}; refusing to touch it")
    except PermissionError:  # a folder on the way that this user may not even look into
        raise UserError(
            f"output folder {output.parent} is not accessible (permission denied)"
        ) from None
    prepare_output_dir(output.parent)
    if output.exists() and not os.access(output, os.W_OK):
        raise UserError(f"output {output} is not writable")
