"""Image pairs to match: generation (exhaustive, sequential) and hloc-style pairs files.

A pairs file holds one ``name0 name1`` per line (hloc's format); blank lines and lines
starting with ``#`` are ignored. Names in a pairs file therefore cannot contain spaces;
the commands themselves pass pairs around as Python tuples (and to pycolmap through its API),
so such names work everywhere else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

Pair = tuple[str, str]


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders frame2 before frame10 (video frames, numbered captures)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def exhaustive(names: Sequence[str]) -> list[Pair]:
    """Every unordered pair of distinct names, in the given order."""
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential(names: Sequence[str], overlap: int, loop_stride: int = 0) -> list[Pair]:
    """Pairs for ordered captures (video frames).

    Each image is paired with its next ``overlap`` images. With ``loop_stride`` > 0, every
    ``loop_stride``-th image is also a key frame and all key frames are matched with each
    other, so that revisited places (loops) get connected.
    """
    if overlap < 1:
        raise UserError(f"--sequential needs a window of at least 1 image, got {overlap}")
    if loop_stride < 0:
        raise UserError(f"--loop-stride must be positive, got {loop_stride}")
    pairs = [
        (names[i], names[j])
        for i in range(len(names))
        for j in range(i + 1, min(i + 1 + overlap, len(names)))
    ]
    if loop_stride:
        keys = list(range(0, len(names), loop_stride))
        pairs += [
            (names[keys[a]], names[keys[b]])
            for a in range(len(keys))
            for b in range(a + 1, len(keys))
            if keys[b] - keys[a] > overlap  # closer ones are already in the window
        ]
    return pairs


def _read_lines(path: Path, kind: str) -> list[str]:
    """The lines of a UTF-8 text file; UserError for unreadable or binary files."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text {kind} (binary or not UTF-8)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {kind} ({exc.strerror or exc})") from None


def read_pairs(path: Path) -> list[Pair]:
    """Parse a pairs file; UserError with the line number for a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such pairs file")
    pairs = []
    for lineno, line in enumerate(_read_lines(path, "pairs file"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise UserError(f"{path}:{lineno}: expected 'name0 name1', got {line!r}")
        pairs.append((fields[0], fields[1]))  # extra columns (hloc scores) are ignored
    return pairs


def read_image_list(path: Path) -> list[str]:
    """Names from a text file, one per line (extra columns such as intrinsics ignored)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image list")
    names = []
    for line in _read_lines(path, "image list"):
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def fits_pairs_file(name: str) -> bool:
    """Whether a name can go in a (space-separated, line-based) pairs file."""
    return bool(name) and len(name.split()) == 1 and name == name.strip()


def write_pairs(path: Path, pairs: Iterable[Pair]) -> int:
    """Write a pairs file; returns the number of pairs written."""
    from .outputs import prepare_output_file

    path = Path(path)
    prepare_output_file(path)
    lines = [f"{a} {b}\n" for a, b in pairs]
    bad = [line for line in lines if len(line.split()) != 2]
    if bad:
        raise UserError(f"image names with spaces cannot go in a pairs file: {bad[0].strip()!r}")
    try:
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(lines)


def clean_pairs(pairs: Iterable[Pair], available: Iterable[str] | None = None) -> list[Pair]:
    """Drop self pairs and duplicates (in either order) with a warning; check names exist.

    Names missing from ``available`` (e.g. the features file) raise UserError listing a few,
    so that nothing is matched or written from a wrong list.
    """
    seen: set[frozenset[str]] = set()
    out, n_self, n_dup = [], 0, 0
    for a, b in pairs:
        if a == b:
            n_self += 1
            continue
        key = frozenset((a, b))
        if key in seen:
            n_dup += 1
            continue
        seen.add(key)
        out.append((a, b))
    if n_self:
        logger.warning("skipped %d pair(s) of an image with itself", n_self)
    if n_dup:
        logger.warning("skipped %d duplicate pair(s)", n_dup)
    if available is not None:
        available = set(available)
        missing = sorted({n for pair in out for n in pair} - available)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise UserError(
                f"{len(missing)} image(s) named in the pairs have no features: {shown}{more}"
            )
    return out


def make_pairs(
    names: Sequence[str],
    pairs_file: Path | None = None,
    exhaustive_mode: bool = False,
    sequential_overlap: int | None = None,
    loop_stride: int = 0,
) -> list[Pair]:
    """Pairs from exactly one mode: a pairs file, exhaustive, or sequential (natural order)."""
    modes = sum([pairs_file is not None, exhaustive_mode, sequential_overlap is not None])
    if modes != 1:
        raise UserError("give exactly one of --pairs FILE, --exhaustive, --sequential N")
    if loop_stride and sequential_overlap is None:
        raise UserError("--loop-stride only applies with --sequential")
    if pairs_file is not None:
        return read_pairs(pairs_file)
    if exhaustive_mode:
        return exhaustive(list(names))
    return sequential(sorted(names, key=natural_key), sequential_overlap, loop_stride)
