"""Readers for homography benchmarks: a folder of pairs, or the HPatches sequences release.

Two layouts are understood (see :func:`load_homography_pairs`):

* **pairs folder** (like ``../shared/data/pairs``): ``<pair>/A.*``, ``<pair>/B.*`` and
  ``<pair>/H_A_to_B.txt``, one pair per sub-folder;
* **HPatches sequences** (``hpatches-sequences-release``): ``<seq>/1.ppm .. 6.ppm`` and
  ``<seq>/H_1_2 .. H_1_6``; sequences named ``i_*`` (illumination) and ``v_*`` (viewpoint).
  Image 1 is paired with images 2..6, as in the ASLFeat / D2-Net protocol.

Homographies map homogeneous pixel coordinates of image A (origin at the centre of the
top-left pixel) to image B. Image names are paths relative to the dataset root with '/',
the names ``aslfeat extract <root>`` gives, so HDF5 feature files can be looked up by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .images import is_image_path

#: Sequences the official ASLFeat evaluation skips (configs/hseq_eval.yaml: ``ignored_v`` /
#: ``ignored_i``); they are the eight high-resolution sequences D2-Net also leaves out.
OFFICIAL_IGNORED_SEQUENCES: frozenset[str] = frozenset(
    {
        "v_artisans",
        "v_astronautis",
        "v_talent",
        "i_contruction",
        "i_crownnight",
        "i_dc",
        "i_pencils",
        "i_whitebuilding",
    }
)


@dataclass(frozen=True)
class HomographyPair:
    """One evaluation pair: two images and the homography from A to B."""

    sequence: str  # the sub-folder (pair folder or HPatches sequence)
    name_a: str  # image names relative to the dataset root, with '/'
    name_b: str
    path_a: Path
    path_b: Path
    homography: np.ndarray  # 3x3 float64, A -> B

    @property
    def split(self) -> str:
        """'i' (illumination) or 'v' (viewpoint) for HPatches-style names, else ''."""
        prefix = self.sequence[:2]
        return prefix[0] if prefix in ("i_", "v_") else ""

    @property
    def label(self) -> str:
        """Short label such as ``v_boat 1-3`` or ``graf_1_3``."""
        if self.split:
            return f"{self.sequence} {Path(self.name_a).stem}-{Path(self.name_b).stem}"
        return self.sequence


def read_homography(path: Path) -> np.ndarray:
    """Read a 3x3 homography from a whitespace-separated text file (UserError if invalid)."""
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read a 3x3 homography ({exc})") from exc
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise UserError(f"{path}: expected a 3x3 matrix of numbers, got shape {matrix.shape}")
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise UserError(f"{path}: the homography is singular")
    return matrix / matrix[2, 2] if matrix[2, 2] != 0 else matrix


def _single_image(folder: Path, stem: str) -> Path | None:
    found = [p for p in sorted(folder.glob(f"{stem}.*")) if is_image_path(p)]
    return found[0] if found else None


def read_pairs_folder(root: Path) -> list[HomographyPair]:
    """Pairs from a folder of ``<pair>/A.*``, ``<pair>/B.*``, ``<pair>/H_A_to_B.txt``.

    Sub-folders without ``H_A_to_B.txt`` are ignored; one with the file but without both
    images is a UserError.
    """
    pairs = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        h_file = folder / "H_A_to_B.txt"
        if not h_file.is_file():
            continue
        path_a, path_b = _single_image(folder, "A"), _single_image(folder, "B")
        if path_a is None or path_b is None:
            raise UserError(f"{folder}: H_A_to_B.txt found but image A.* or B.* is missing")
        pairs.append(_pair(root, folder.name, path_a, path_b, h_file))
    return pairs


def _pair(root: Path, sequence: str, path_a: Path, path_b: Path, h_file: Path) -> HomographyPair:
    """A pair whose image names are paths relative to the dataset ``root``."""
    return HomographyPair(
        sequence=sequence,
        name_a=path_a.relative_to(root).as_posix(),
        name_b=path_b.relative_to(root).as_posix(),
        path_a=path_a,
        path_b=path_b,
        homography=read_homography(h_file),
    )


def read_hpatches(
    root: Path, ignored: frozenset[str] | set[str] = OFFICIAL_IGNORED_SEQUENCES
) -> list[HomographyPair]:
    """Pairs 1-2 .. 1-6 of every HPatches sequence under ``root`` except ``ignored`` ones.

    The default ignores the eight sequences the official ASLFeat evaluation skips, leaving
    108 sequences (52 illumination, 56 viewpoint) and 540 pairs for the full release.
    """
    pairs = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if folder.name in ignored or not (folder / "H_1_2").is_file():
            continue
        path_1 = _single_image(folder, "1")
        if path_1 is None:
            raise UserError(f"{folder}: H_1_2 found but image 1.* is missing")
        for index in range(2, 7):
            h_file = folder / f"H_1_{index}"
            path_i = _single_image(folder, str(index))
            if not h_file.is_file() or path_i is None:
                raise UserError(f"{folder}: image {index}.* or H_1_{index} is missing")
            pairs.append(_pair(root, folder.name, path_1, path_i, h_file))
    return pairs


def load_homography_pairs(root: Path, include_ignored: bool = False) -> list[HomographyPair]:
    """Pairs of a dataset folder in either layout (detected from its contents).

    ``root`` may also be a single pair folder or a single sequence (names are then relative
    to its parent). ``include_ignored`` keeps the HPatches sequences the official protocol
    skips. Raises UserError when the folder is missing or holds no pairs of either layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    ignored = frozenset() if include_ignored else OFFICIAL_IGNORED_SEQUENCES
    if (root / "H_A_to_B.txt").is_file() or (root / "H_1_2").is_file():
        # One pair folder or one sequence given directly: read its parent, keep only it.
        parent = root.resolve().parent
        found = read_hpatches(parent, frozenset()) + read_pairs_folder(parent)
        return [p for p in found if p.sequence == root.resolve().name]
    pairs = read_hpatches(root, ignored) + read_pairs_folder(root)
    if not pairs:
        raise UserError(
            f"{root}: no homography pairs found (expected <pair>/A.*, B.*, H_A_to_B.txt "
            "or HPatches <seq>/1.ppm..6.ppm, H_1_2..H_1_6)"
        )
    return pairs
