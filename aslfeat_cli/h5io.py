"""Read and write features and matches in hloc's HDF5 layout.

Features file: one group per image name (nested on ``/`` like hloc), holding ``keypoints``
(N x 2 float32, hloc's pixel-centre convention), ``scores`` (N float32), ``descriptors``
(stored D x N as hloc does) and ``image_size`` (W, H).

Matches file: one group per pair named ``names_to_pair(name0, name1)`` (hloc's ``/``
separator, so groups nest) holding ``matches0`` (N0, index into image 1 or -1) and
``matching_scores0`` (N0). Two deliberate differences from hloc: ``matches0`` is int32
(hloc's int16 overflows past 32,767 keypoints) and scores are float32. The pair group also
keeps the original image names as attributes (``name0``, ``name1``) because the group name
replaces ``/`` in names with ``-`` and cannot be inverted; ``num_keypoints1`` lets a reader
flip the match direction; ``inliers0`` (bool) is written after geometric verification.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UserError

PathOrFile = str | Path | h5py.File | h5py.Group


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: both names with ``/`` replaced by ``-``, joined by ``separator``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


@contextmanager
def _opened(path_or_fh: PathOrFile, mode: str = "r") -> Iterator[h5py.Group]:
    """Yield an open file for a path (closing it afterwards) or the handle itself."""
    if isinstance(path_or_fh, h5py.Group):
        yield path_or_fh
        return
    path = Path(path_or_fh)
    if mode == "r" and not path.exists():
        raise UserError(f"{path}: no such file")
    if path.exists() and not h5py.is_hdf5(path):
        raise UserError(f"{path}: not an HDF5 file")
    try:
        fh = h5py.File(path, mode)
    except OSError as exc:
        raise UserError(f"{path}: cannot open as HDF5 ({exc})") from exc
    try:
        yield fh
    except (OSError, RuntimeError) as exc:
        # h5py's errors for damaged bytes (bad object header, symbol table, B-tree ...)
        raise UserError(f"{path}: damaged HDF5 file ({_first_line(exc)})") from exc
    finally:
        fh.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _file_label(fh: h5py.Group) -> str:
    return str(fh.file.filename)


def _replace_group(fh: h5py.Group, key: str) -> h5py.Group:
    """Create group ``key``, deleting an old one of that name first."""
    if key in fh:
        del fh[key]
    return fh.create_group(key)


def write_features(
    fh: h5py.File | h5py.Group,
    name: str,
    keypoints: np.ndarray,
    scores: np.ndarray,
    descriptors: np.ndarray,
    image_size: tuple[int, int] | np.ndarray,
    descriptor_dtype: Any = np.float32,
    uncertainty: float | None = None,
) -> None:
    """Write one image's features as hloc does (descriptors stored D x N).

    Replaces an existing group of that name. ``descriptors`` are given N x D.
    ``uncertainty`` (keypoint noise in original pixels) becomes the ``keypoints`` attribute
    hloc's extract_features writes and its triangulation reads.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    descriptors = np.asarray(descriptors)
    n = len(keypoints)
    if keypoints.ndim != 2 or keypoints.shape[1] != 2:
        raise ValueError(f"{name}: keypoints must be N x 2, got {keypoints.shape}")
    if descriptors.ndim != 2 or descriptors.shape[0] != n or scores.shape[0] != n:
        raise ValueError(
            f"{name}: {n} keypoints but scores {scores.shape} and descriptors {descriptors.shape}"
        )
    if name in fh and "keypoints" not in fh[name] and len(fh[name]) > 0:
        raise UserError(
            f"{_file_label(fh)}: cannot store image {name!r}: "
            "a folder of other images has that name"
        )
    grp = _replace_group(fh, name)
    grp.create_dataset("keypoints", data=keypoints)
    if uncertainty is not None:
        grp["keypoints"].attrs["uncertainty"] = np.float32(uncertainty)
    grp.create_dataset("scores", data=scores)
    grp.create_dataset("descriptors", data=np.ascontiguousarray(descriptors.T, descriptor_dtype))
    grp.create_dataset("image_size", data=np.asarray(image_size, dtype=np.int64).reshape(2))


def read_features(path_or_fh: PathOrFile, name: str) -> dict[str, np.ndarray]:
    """Read one image's features: keypoints, scores, descriptors (N, D) float32, image_size.

    Raises UserError when the image is missing or its datasets disagree in size.
    """
    with _opened(path_or_fh) as fh:
        label = _file_label(fh)
        if name not in fh or not isinstance(fh[name], h5py.Group) or "keypoints" not in fh[name]:
            raise UserError(f"{label}: no features for image {name!r}")
        grp = fh[name]
        try:
            keypoints = np.asarray(grp["keypoints"], dtype=np.float32)
            desc = np.asarray(grp["descriptors"])
            scores = (
                np.asarray(grp["scores"], dtype=np.float32).reshape(-1)
                if "scores" in grp
                else np.ones(len(keypoints), np.float32)
            )
            image_size = np.asarray(grp["image_size"]).astype(np.int64).reshape(-1)
        except KeyError as exc:
            raise UserError(f"{label}: image {name!r} lacks dataset {exc}") from exc
        except (OSError, RuntimeError) as exc:
            raise UserError(
                f"{label}: cannot read the features of {name!r}: damaged file ({_first_line(exc)})"
            ) from exc
    n = len(keypoints)
    if keypoints.ndim != 2 or keypoints.shape[1] != 2:
        raise UserError(f"{label}: {name!r} keypoints have shape {keypoints.shape}, not N x 2")
    # Stored D x N (hloc); a file written N x D by another tool is accepted when unambiguous.
    if desc.ndim == 2 and desc.shape[1] == n:
        desc = desc.T
    if desc.ndim != 2 or desc.shape[0] != n or scores.shape[0] != n:
        raise UserError(
            f"{label}: {name!r} has {n} keypoints but descriptors {desc.shape} "
            f"and scores {scores.shape}"
        )
    if not (np.isfinite(desc).all() and np.isfinite(keypoints).all()):
        # Random bytes read as floats hold NaN/inf; matching them warns and gives garbage.
        raise UserError(f"{label}: {name!r} holds non-finite keypoints or descriptors (damaged?)")
    return {
        "keypoints": keypoints,
        "scores": scores,
        "descriptors": np.ascontiguousarray(desc, dtype=np.float32),
        "image_size": image_size,
    }


def complete_images(fh: h5py.Group) -> set[str]:
    """Names of the images whose features are complete in an open features file.

    write_features writes image_size last, so a run killed inside a write leaves a group
    without it: that image does not count (and is redone by a resumed run).
    """
    names = set()

    def visit(key: str, obj: Any) -> None:
        if key.rsplit("/", 1)[-1] == "keypoints":
            group = obj.parent
            if "descriptors" in group and "image_size" in group:
                names.add(group.name.strip("/"))

    fh.visititems(visit)
    return names


def list_names(path: str | Path) -> list[str]:
    """Image names in a features file (groups holding ``keypoints``), sorted.

    Returns [] for a missing file; UserError for a file that is not HDF5.
    """
    path = Path(path)
    if not path.exists():
        return []
    names: list[str] = []
    with _opened(path) as fh:

        def visit(key: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and key.rsplit("/", 1)[-1] == "keypoints":
                parent = obj.parent.name.strip("/")
                if parent:
                    names.append(parent)

        fh.visititems(visit)
    return sorted(set(names))


def write_matches(
    fh: h5py.File | h5py.Group,
    name0: str,
    name1: str,
    matches0: np.ndarray,
    scores0: np.ndarray,
    inliers: np.ndarray | None = None,
    num_keypoints1: int | None = None,
) -> None:
    """Write one pair's matches (hloc layout, int32 indices, -1 = unmatched).

    ``inliers`` (N0 bool) marks matches kept by geometric verification. ``num_keypoints1``
    (recommended) lets readers flip the direction of the pair.
    """
    matches0 = np.asarray(matches0).reshape(-1)
    scores0 = np.asarray(scores0, dtype=np.float32).reshape(-1)
    if scores0.shape != matches0.shape:
        raise ValueError(f"matches0 {matches0.shape} and scores0 {scores0.shape} differ")
    pair = names_to_pair(name0, name1)
    grp = _replace_group(fh, pair)
    grp.attrs["name0"] = name0
    grp.attrs["name1"] = name1
    if num_keypoints1 is not None:
        grp.attrs["num_keypoints1"] = int(num_keypoints1)
    grp.create_dataset("matches0", data=matches0.astype(np.int32))
    grp.create_dataset("matching_scores0", data=scores0)
    if inliers is not None:
        inliers = np.asarray(inliers, dtype=bool).reshape(-1)
        if inliers.shape != matches0.shape:
            raise ValueError(f"inliers {inliers.shape} and matches0 {matches0.shape} differ")
        grp.create_dataset("inliers0", data=inliers)


def _complete(grp: h5py.Group) -> bool:
    return "matches0" in grp and "matching_scores0" in grp


def _find_pair(fh: h5py.Group, name0: str, name1: str) -> tuple[str, bool] | None:
    """The group key for a pair and whether it is stored reversed (hloc's find_pair)."""
    for a, b, reverse in ((name0, name1, False), (name1, name0, True)):
        key = names_to_pair(a, b)
        # Both datasets: a group cut short by an interrupted run does not count.
        if key in fh and isinstance(fh[key], h5py.Group) and _complete(fh[key]):
            return key, reverse
    return None


def has_pair(fh: h5py.Group, name0: str, name1: str) -> bool:
    """Whether the matches file already holds the pair, in either order."""
    return _find_pair(fh, name0, name1) is not None


def _read_pair(path_or_fh: PathOrFile, name0: str, name1: str) -> tuple[dict, bool]:
    with _opened(path_or_fh) as fh:
        found = _find_pair(fh, name0, name1)
        if found is None:
            raise UserError(f"{_file_label(fh)}: no matches for pair ({name0}, {name1})")
        grp = fh[found[0]]
        data = {
            "matches0": np.asarray(grp["matches0"]).astype(np.int32),
            "scores0": np.asarray(grp["matching_scores0"]).astype(np.float32),
            "inliers0": np.asarray(grp["inliers0"], dtype=bool) if "inliers0" in grp else None,
            "num_keypoints1": grp.attrs.get("num_keypoints1"),
        }
    return data, found[1]


def read_matches(path_or_fh: PathOrFile, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """matches0 (int32, -1 unmatched) and scores0 (float32) from name0 to name1, either order.

    When the pair is stored as (name1, name0) the matches are flipped; the length of the
    flipped array is the stored ``num_keypoints1`` (or the largest index + 1 for files that
    lack it, e.g. hloc's).
    """
    data, reverse = _read_pair(path_or_fh, name0, name1)
    m, s = data["matches0"], data["scores0"]
    if not reverse:
        return m, s
    valid = np.flatnonzero(m >= 0)
    n0 = data["num_keypoints1"]
    n0 = int(n0) if n0 is not None else (int(m[valid].max()) + 1 if len(valid) else 0)
    flipped = np.full(n0, -1, np.int32)
    flipped_scores = np.zeros(n0, np.float32)
    flipped[m[valid]] = valid
    flipped_scores[m[valid]] = s[valid]
    return flipped, flipped_scores


def read_match_pairs(
    path_or_fh: PathOrFile, name0: str, name1: str, inliers_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Matches as (M, 2) index pairs (image 0, image 1) and their scores, like hloc's get_matches.

    ``inliers_only`` keeps only the matches flagged by geometric verification (all matches
    when the pair was not verified).
    """
    data, reverse = _read_pair(path_or_fh, name0, name1)
    m = data["matches0"]
    keep = m >= 0
    if inliers_only and data["inliers0"] is not None:
        keep &= data["inliers0"]
    idx = np.flatnonzero(keep)
    pairs = np.stack([idx, m[idx]], -1).astype(np.int64)
    if reverse:
        pairs = pairs[:, ::-1]
    return np.ascontiguousarray(pairs), data["scores0"][idx]


def list_pairs(path: str | Path) -> list[tuple[str, str]]:
    """All pairs in a matches file as (name0, name1); [] for a missing file."""
    path = Path(path)
    if not path.exists():
        return []
    pairs: list[tuple[str, str]] = []
    with _opened(path) as fh:

        def visit(key: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and "matches0" in obj:
                if "name0" in obj.attrs and "name1" in obj.attrs:
                    pairs.append((str(obj.attrs["name0"]), str(obj.attrs["name1"])))
                elif "/" in key:  # hloc's own files: names without '/' survive the key
                    a, b = key.split("/", 1)
                    pairs.append((a, b))

        fh.visititems(visit)
    return pairs
