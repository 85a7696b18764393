"""Settings and identity recorded in output files, and the check made when a run resumes.

Every file we write records how it was made as plain root attributes (str, int, float, bool:
JSON-able, readable by any HDF5 tool), so that a resumed run, a later step or a merge of
shard files can tell whether two files belong together:

* features.h5: :data:`FEATURE_KEYS` (detection settings and the model's SHA-256) and
  ``features_id``, a random UUID made when the file is created (or started anew). Each image
  group also holds ``image_sha256``, the SHA-256 of the image file it was extracted from.
* COLMAP database (``extract -o x.db``): the features keys in a table ``aslfeat_settings``.
* matches.h5: :data:`MATCH_KEYS` (matching settings) and ``features_id``, copied from the
  features file the matches index into.

"Off" is written as 0 (``max_dim``, ``ratio``, ``max_distance``) or ``"none"`` (``verify``)
because HDF5 attributes cannot be None. ``aslfeat_version`` and ``model`` (the file name) are
recorded but not compared: a renamed model with the same SHA-256 is the same model.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .scale_pooling import format_pool_scales

FEATURES_ID = "features_id"
IMAGE_SHA256 = "image_sha256"
# "K/N" of a --shard run (``aslfeat merge`` counts the shards), "ray" for a Ray worker's part.
SHARD = "shard"
FEATURE_KEYS = (
    "model_sha256",
    "variant",
    "num_keypoints",
    "score_threshold",
    "edge_threshold",
    "nms_size",
    "multi_scale",
    "shifts",
    "upscale",
    "pool_scales",
    "max_dim",
    "precision",
    "descriptor_dtype",
)
MATCH_KEYS = ("ratio", "max_distance", "verify", "verify_threshold")
# backend: provenance only (onnxruntime and OpenVINO float32 agree; precision is compared).
NOT_COMPARED = ("aslfeat_version", "model", "backend", SHARD)


def new_id() -> str:
    """A fresh file identity (a random UUID, hex)."""
    return uuid.uuid4().hex


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (bytes -> str, numpy -> builtin)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """All root attributes of an HDF5 file/group (``fh.attrs``) as plain values."""
    return {key: plain(attrs[key]) for key in attrs}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return str(a) == str(b)


def differences(recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``key=old (now new)`` for each requested setting that the file records differently.

    Keys the file does not record (files from older versions, other tools) are not compared.
    """
    out = []
    for key, value in requested.items():
        if key in NOT_COMPARED or key not in recorded:
            continue
        old = plain(recorded[key])
        if not _same(old, value):
            out.append(f"{key}={old} (now {value})")
    return out


def check_compatible(
    recorded: Mapping[str, Any], requested: Mapping[str, Any], label: str, hint: str
) -> None:
    """Raise UserError when ``recorded`` settings disagree with ``requested`` ones.

    ``label`` names the file, ``hint`` says how to proceed (e.g. "use --overwrite").
    """
    changed = differences(recorded, requested)
    if changed:
        raise UserError(f"{label} was made with other settings: {', '.join(changed)}; {hint}")


def extraction_settings(extractor: Any, descriptor_dtype: Any = np.float32) -> dict[str, Any]:
    """Root attributes of a features file made by ``extractor`` (an :class:`Extractor`)."""
    from . import __version__

    config = extractor.config
    return {
        "aslfeat_version": __version__,
        "model": extractor.session.path.name,
        "model_sha256": file_sha256(extractor.session.path),
        "variant": extractor.model_metadata.get("variant", "unknown"),
        "num_keypoints": int(config.num_keypoints),
        "score_threshold": float(config.score_threshold),
        "edge_threshold": float(config.edge_threshold),
        "nms_size": int(config.nms_size),
        "multi_scale": bool(extractor.multi_scale),
        "shifts": int(extractor.shifts),
        "upscale": float(extractor.upscale),
        "pool_scales": format_pool_scales(extractor.pool_scales),
        "max_dim": int(extractor.max_dim or 0),
        "precision": extractor.session.precision,
        "backend": extractor.backend,
        "descriptor_dtype": np.dtype(descriptor_dtype).name,
    }


def matching_settings(options: Any, verify: Any) -> dict[str, Any]:
    """Root attributes of a matches file (``MatchOptions``, ``VerifyOptions`` or None);
    ``features_id`` is recorded and checked apart (:func:`check_same_features`)."""
    from . import __version__

    return {
        "aslfeat_version": __version__,
        "ratio": float(options.ratio or 0.0),
        "max_distance": float(options.max_distance or 0.0),
        "verify": verify.model if verify is not None else "none",
        "verify_threshold": float(verify.threshold) if verify is not None else 0.0,
    }


def check_same_features(
    matches_attrs: Mapping[str, Any], features_attrs: Mapping[str, Any], matches: Any, features: Any
) -> None:
    """UserError when a matches file records another features file's identity than
    ``features``'s (its indices would point at other keypoints). Files lacking an identity
    (older versions, hloc) are accepted."""
    ours = plain(features_attrs.get(FEATURES_ID, ""))
    theirs = plain(matches_attrs.get(FEATURES_ID, ""))
    if ours and theirs and ours != theirs:
        raise UserError(
            f"{matches} was made from another features file than {features} "
            f"(features_id {theirs} vs {ours}); match again with these features"
        )


# COLMAP databases have no attribute slot: the same keys go to a table of our own, which
# COLMAP ignores (it only creates and reads its own tables). Values are JSON text.
DB_TABLE = "aslfeat_settings"


def read_db_settings(database: str | Path) -> dict[str, Any]:
    """The settings recorded in a COLMAP database by ``extract`` ({} when none)."""
    import json
    import sqlite3

    if not Path(database).is_file() or Path(database).stat().st_size == 0:
        return {}
    con = sqlite3.connect(f"file:{Path(database).resolve()}?mode=ro", uri=True)
    try:
        rows = con.execute(f"SELECT key, value FROM {DB_TABLE}").fetchall()
    except sqlite3.DatabaseError:  # no such table (COLMAP's own or hloc's database)
        return {}
    finally:
        con.close()
    return {key: json.loads(value) for key, value in rows}


def db_has_images(database: str | Path) -> bool:
    """Whether a COLMAP database file holds any image (False for a new or empty file)."""
    import sqlite3

    if not Path(database).is_file() or Path(database).stat().st_size == 0:
        return False
    con = sqlite3.connect(f"file:{Path(database).resolve()}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM images").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def write_db_settings(database: str | Path, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in a COLMAP database (replacing keys of the same name)."""
    import json
    import sqlite3

    con = sqlite3.connect(Path(database))
    try:
        with con:
            con.execute(f"CREATE TABLE IF NOT EXISTS {DB_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
            con.executemany(
                f"INSERT OR REPLACE INTO {DB_TABLE} (key, value) VALUES (?, ?)",
                [(key, json.dumps(plain(value))) for key, value in settings.items()],
            )
    finally:
        con.close()
