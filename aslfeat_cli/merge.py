"""Merge shard files (``extract --shard``, ``match --shard``, Ray workers) into one file.

Features shards become one hloc features file, matches shards one matches file; the entries
are copied byte for byte (datasets, dtypes and attributes: ``h5py``'s ``copy``), so the
merged file holds the same keypoints, descriptors and matches as a single-process run.
Before anything is written the shards are checked to belong together:

* all of one kind, made with the same settings (:mod:`aslfeat_cli.settings`); matches
  shards also index into the same features file (``features_id``);
* complete: no entry cut short by an interrupted run, no matches journal left to fold in,
  and, for ``--shard K/N`` files, every K from 0 to N-1 present (unless ``partial``);
* an image or pair found in two shards must be identical there (a conflict is refused).

The output is built next to its target and renamed over it (:mod:`aslfeat_cli.atomic`).
A merged features file gets a new ``features_id``, except when the output is one of the
inputs (adding shards to it): its entries are unchanged, so matches made from it stay valid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import h5io
from .atomic import need_space, replacing
from .errors import UserError
from .matches_writer import journal_dir
from .matching import check_pair_keys
from .outputs import prepare_output_file
from .settings import (
    FEATURE_KEYS,
    FEATURES_ID,
    MATCH_KEYS,
    SHARD,
    differences,
    new_id,
    plain,
    read_attrs,
)
from .sharding import parse_shard

logger = logging.getLogger(__name__)

FEATURES, MATCHES = "features", "matches"
_FEATURE_DATASETS = ("keypoints", "scores", "descriptors", "image_size")


@dataclass
class MergeSummary:
    """What a merge did."""

    kind: str
    n_files: int
    n_entries: int  # images or pairs in the output
    n_duplicates: int  # entries found identical in more than one input

    def format(self, output: Path) -> str:
        """One line for the command's summary."""
        unit = "image(s)" if self.kind == FEATURES else "pair(s)"
        line = f"{self.n_entries} {unit} from {self.n_files} file(s) merged into {output}"
        if self.n_duplicates:
            line += f" ({self.n_duplicates} identical duplicate(s) kept once)"
        return line


@dataclass
class _Shard:
    path: Path
    attrs: dict[str, Any]
    entries: dict[str, str]  # entry id (image name, or the pair's names) -> group path


def _entries(fh: h5py.File, path: Path) -> tuple[str | None, dict[str, str]]:
    """The file's kind (None for a file without entries) and its entries."""
    images: dict[str, str] = {}
    pairs: dict[str, str] = {}
    incomplete: list[str] = []

    def visit(key: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group):
            return
        if "keypoints" in obj:
            if all(name in obj for name in _FEATURE_DATASETS[2:]):
                images[key] = key
            else:
                incomplete.append(f"image {key!r}")
        elif "matches0" in obj or "matching_scores0" in obj:
            if not h5io._complete(obj):
                incomplete.append(f"pair group {key!r}")
                return
            if "name0" in obj.attrs and "name1" in obj.attrs:
                a, b = str(plain(obj.attrs["name0"])), str(plain(obj.attrs["name1"]))
            else:  # hloc's own files: names without '/' survive the key
                a, _, b = key.partition("/")
            pairs["\n".join(sorted((a, b)))] = key

    try:
        fh.visititems(visit)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{path}: damaged HDF5 file ({h5io._first_line(exc)})") from None
    if incomplete:
        raise UserError(
            f"{path}: {incomplete[0]} is incomplete (an interrupted run); run the command "
            "that wrote this shard again to finish it, then merge"
        )
    if images and pairs:
        raise UserError(f"{path} holds both features and matches; not a file aslfeat wrote")
    if images:
        return FEATURES, images
    if pairs:
        return MATCHES, pairs
    return None, {}


def _kind_from_attrs(attrs: dict[str, Any]) -> str | None:
    if "model_sha256" in attrs:
        return FEATURES
    if "ratio" in attrs or "verify" in attrs:
        return MATCHES
    return None


def _read_shard(path: Path) -> tuple[str | None, _Shard]:
    if journal_dir(path).exists() and any(journal_dir(path).glob("batch-*.h5")):
        raise UserError(
            f"{path}: its matching was interrupted ({journal_dir(path)} holds pairs not yet "
            "folded in); run that match again to finish it, then merge"
        )
    with h5io._opened(path) as fh:
        attrs = read_attrs(fh.attrs)
        kind, entries = _entries(fh, path)
    return kind or _kind_from_attrs(attrs), _Shard(path, attrs, entries)


def _check_settings(shards: Sequence[_Shard], kind: str) -> None:
    keys = FEATURE_KEYS if kind == FEATURES else MATCH_KEYS
    ref = shards[0]
    for other in shards[1:]:
        changed = differences(ref.attrs, {k: other.attrs[k] for k in keys if k in other.attrs})
        if changed:
            raise UserError(
                f"{other.path} was made with other settings than {ref.path}: "
                f"{', '.join(changed)}; only shards of one run can be merged"
            )
    if kind == MATCHES:
        ids = {str(s.attrs[FEATURES_ID]): s.path for s in shards if s.attrs.get(FEATURES_ID)}
        if len(ids) > 1:
            (id_a, path_a), (id_b, path_b) = list(ids.items())[:2]
            raise UserError(
                f"{path_a} and {path_b} were matched from different features files "
                f"(features_id {id_a} vs {id_b}); merge the features, then match again"
            )


def _check_complete(shards: Sequence[_Shard], partial: bool) -> None:
    """Every K of N present, when the inputs are --shard K/N files of one split."""
    specs = [s.attrs.get(SHARD) for s in shards]
    if partial or not specs or not all(specs):
        return
    try:
        parsed = [parse_shard(str(spec)) for spec in specs]
    except UserError:
        return  # not K/N files (Ray workers' parts): nothing to count
    counts = {p.count for p in parsed}
    if len(counts) > 1:
        raise UserError(
            f"the inputs come from different splits ({', '.join(sorted(map(str, set(specs))))})"
        )
    count = counts.pop()
    missing = sorted(set(range(count)) - {p.index for p in parsed})
    if missing:
        shown = ", ".join(f"{k}/{count}" for k in missing[:5]) + (
            " ..." if len(missing) > 5 else ""
        )
        raise UserError(
            f"shard(s) {shown} missing from the inputs; give every shard, or --partial to "
            "merge only these"
        )


def _same_features(a: h5py.Group, b: h5py.Group) -> bool:
    for name in _FEATURE_DATASETS:
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x[()], y[()]):
            return False
    return True


def _same_pair(fa: h5py.File, fb: h5py.File, entry: str) -> bool:
    name0, name1 = entry.split("\n")
    ma, sa = h5io.read_matches(fa, name0, name1)
    mb, sb = h5io.read_matches(fb, name0, name1)
    ia = h5io.read_match_pairs(fa, name0, name1, inliers_only=True)[0]
    ib = h5io.read_match_pairs(fb, name0, name1, inliers_only=True)[0]
    return np.array_equal(ma, mb) and np.array_equal(sa, sb) and np.array_equal(ia, ib)


def _plan(shards: Sequence[_Shard], kind: str) -> tuple[dict[str, tuple[_Shard, str]], int]:
    """Entry -> (shard, group path) taking each entry once; duplicates must be identical."""
    chosen: dict[str, tuple[_Shard, str]] = {}
    duplicates = 0
    handles: dict[Path, h5py.File] = {}

    def opened(path: Path) -> h5py.File:
        if path not in handles:
            handles[path] = h5py.File(path, "r")
        return handles[path]

    try:
        for shard in shards:
            for entry, key in shard.entries.items():
                if entry not in chosen:
                    chosen[entry] = (shard, key)
                    continue
                first, first_key = chosen[entry]
                fa, fb = opened(first.path), opened(shard.path)
                same = (
                    _same_features(fa[first_key], fb[key])
                    if kind == FEATURES
                    else _same_pair(fa, fb, entry)
                )
                if not same:
                    what = (
                        f"image {entry!r}"
                        if kind == FEATURES
                        else "pair ({}, {})".format(*entry.split("\n"))
                    )
                    raise UserError(
                        f"conflicting duplicates: {what} differs between {first.path} and "
                        f"{shard.path}; merge only one of them"
                    )
                duplicates += 1
    finally:
        for fh in handles.values():
            fh.close()
    return chosen, duplicates


def merge_files(
    inputs: Sequence[Path],
    output: Path,
    overwrite: bool = False,
    partial: bool = False,
    progress: bool = True,
) -> MergeSummary:
    """Merge features shards or matches shards into ``output`` (see the module docstring).

    ``output`` may be one of ``inputs`` (shards are added to it); otherwise an existing
    ``output`` is replaced only with ``overwrite``. Nothing is written when a check fails.
    """
    from tqdm import tqdm

    inputs = [Path(p) for p in inputs]
    output = Path(output)
    if not inputs:
        raise UserError("give the shard files to merge")
    resolved = [p.resolve() for p in inputs]
    if len(set(resolved)) != len(resolved):
        raise UserError("a file is given twice")
    output_is_input = output.resolve() in resolved
    if output.exists() and not output_is_input and not overwrite:
        raise UserError(
            f"{output} exists; use --overwrite to replace it, or name it among the inputs "
            "to add the shards to it"
        )
    prepare_output_file(output, h5py.is_hdf5, "an HDF5 file")

    read = [_read_shard(p) for p in inputs]
    kinds = {kind for kind, _ in read if kind is not None}
    if len(kinds) > 1:
        kind_of = {kind: s.path for kind, s in read if kind}
        raise UserError(
            f"cannot merge features ({kind_of[FEATURES]}) with matches ({kind_of[MATCHES]})"
        )
    if not kinds:
        raise UserError(f"{inputs[0]}: neither features nor matches of aslfeat (empty?)")
    kind = kinds.pop()
    shards = [s for _, s in read]
    _check_settings(shards, kind)
    _check_complete(shards, partial)
    chosen, duplicates = _plan(shards, kind)
    if kind == MATCHES:
        check_pair_keys([tuple(entry.split("\n")) for entry in chosen])

    attrs = {k: v for k, v in shards[0].attrs.items() if k != SHARD}
    if kind == FEATURES:
        keep = shards[resolved.index(output.resolve())] if output_is_input else None
        attrs[FEATURES_ID] = (keep.attrs.get(FEATURES_ID) if keep else None) or new_id()
    need_space(
        output.parent,
        sum(p.stat().st_size for p in inputs),
        f"write {output}",
        "the shards are unchanged",
    )

    by_shard: dict[Path, list[str]] = {}
    for shard, key in chosen.values():
        by_shard.setdefault(shard.path, []).append(key)
    with replacing(output) as tmp, h5py.File(tmp, "w") as dst:
        for key, value in attrs.items():
            dst.attrs[key] = value
        with tqdm(
            total=len(chosen),
            unit=kind[:-1] if kind == MATCHES else "img",
            desc="merge",
            disable=not progress or len(chosen) < 1000,
        ) as bar:
            for path, keys in by_shard.items():
                with h5py.File(path, "r") as src:
                    for key in keys:
                        parent, _, leaf = key.rpartition("/")
                        target = dst.require_group(parent) if parent else dst
                        src.copy(src[key], target, name=leaf)
                        bar.update(1)
    return MergeSummary(kind, len(inputs), len(chosen), duplicates)
