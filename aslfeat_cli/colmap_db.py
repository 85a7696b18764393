"""Write features and matches into a COLMAP ``database.db`` through pycolmap.

This is the only module that applies COLMAP's keypoint convention: COLMAP puts the origin
at the corner of the top-left pixel, hloc (and this package) at its centre, so keypoints
get +0.5 on the way in and -0.5 on the way out.

Descriptors: pycolmap 4.2.1 stores descriptors as uint8 blobs with a feature type.
``FeatureDescriptorsFloat`` exists, but only for ALIKED/LOMA types (converting to SIFT
quantises and ``UNDEFINED`` is refused). Two layouts, chosen by ``descriptors``
(:data:`DESCRIPTOR_TYPES`), both the exact float32 bytes (little-endian, row-major, 4 x D
uint8 columns), so :func:`read_colmap_descriptors` gives them back bit-exact either way:

* ``raw`` (default): type ``UNDEFINED``. No COLMAP matcher claims them; match with
  ``aslfeat match``. (COLMAP's SIFT matcher on such a database aborts the process.)
* ``aliked``: type ``ALIKED_N16ROT``, so a COLMAP built with ONNX matches them itself with
  ``--FeatureMatching.type ALIKED_BRUTEFORCE`` (cosine mutual nearest neighbours). Its
  default ``--AlikedMatching.brute_force_min_cossim 0.85`` is far too strict for ASLFeat
  (median cosine of our mutual matches: 0.47): use 0.5 or less. Never ALIKED's LightGlue:
  it was trained on ALIKED descriptors, not ours. pip's pycolmap wheels lack ONNX, and
  calling that matcher from Python aborts the process, so this package never calls it.

Cameras follow COLMAP's image reader (:mod:`.cameras`): SIMPLE_RADIAL, focal length from EXIF
when the image has it (``prior_focal_length`` set), else 1.2 x max(width, height), unless a
:class:`~.cameras.CameraSpec` gives the model and its known parameters.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import numpy as np

from .cameras import CameraSpec
from .errors import UserError

logger = logging.getLogger(__name__)

COLMAP_SHIFT = 0.5  # hloc pixel centre at integers -> COLMAP pixel centre at .5
# --colmap-descriptors choice -> pycolmap.FeatureExtractorType name (see the module docstring).
DESCRIPTOR_TYPES = {"raw": "UNDEFINED", "aliked": "ALIKED_N16ROT"}
ALIKED_DIM = 128  # COLMAP's ALIKED descriptors are 128 floats, as ours are


def _pycolmap():
    try:
        import pycolmap
    except ImportError as exc:  # the colmap extra is optional
        raise UserError(
            "pycolmap is not installed: pip install 'aslfeat[colmap]' (pycolmap>=3.10)"
        ) from exc
    return pycolmap


def _open_database(database: Path):
    pycolmap = _pycolmap()
    database = Path(database)
    if database.exists() and database.stat().st_size > 0:
        with open(database, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise UserError(f"{database}: not a COLMAP database (not SQLite)")
    if database.is_dir():
        raise UserError(f"{database}: is a folder, not a COLMAP database")
    if not database.exists():
        from .outputs import prepare_output_dir

        prepare_output_dir(database.parent)
    try:
        return pycolmap.Database.open(database)
    except Exception as exc:  # pycolmap raises ValueError/RuntimeError on bad files
        raise UserError(f"{database}: cannot open as a COLMAP database ({exc})") from exc


def exif_focal_length(image_path: Path | None) -> float | None:
    """Focal length in pixels from the image's EXIF (COLMAP's logic), or None."""
    if image_path is None or not Path(image_path).is_file():
        return None
    bitmap = _pycolmap().Bitmap.read(str(image_path), False)
    if bitmap is None:
        return None
    focal = bitmap.exif_focal_length()
    return float(focal) if focal else None


class ColmapFeatureWriter:
    """Add images (camera, rig, frame, keypoints, descriptors) to a new or existing database.

    Use as a context manager::

        with ColmapFeatureWriter(Path("database.db")) as writer:
            if name not in writer.names():
                writer.add(name, path, keypoints, descriptors, (width, height))

    ``camera``: the model and any known parameters of new cameras (default: COLMAP's
    image reader's guess, :mod:`.cameras`).
    """

    def __init__(
        self,
        database: Path,
        single_camera: bool = False,
        descriptors: str = "raw",
        camera: CameraSpec | None = None,
    ) -> None:
        if descriptors not in DESCRIPTOR_TYPES:
            raise UserError(
                f"unknown COLMAP descriptor type {descriptors!r}: use one of "
                f"{', '.join(DESCRIPTOR_TYPES)}"
            )
        self.database = Path(database)
        self.single_camera = single_camera
        self.descriptors = descriptors
        self.camera = camera or CameraSpec()
        self._db = None
        self._lock_fd: int | None = None
        self._names: set[str] = set()
        self._shared: tuple[int, int, tuple[int, int]] | None = None  # camera, rig, size

    def __enter__(self) -> ColmapFeatureWriter:
        self._lock()
        try:
            self._db = _open_database(self.database)
        except BaseException:
            self._unlock()
            raise
        self._names = {image.name for image in self._db.read_all_images()}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._unlock()

    def _lock(self) -> None:
        """One writer per database: a second run would add a camera for every image it
        then fails to add (SQLite locks per transaction, not per run). flock does not
        interact with SQLite's own fcntl locks."""
        self.database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.database, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(
                f"{self.database} is being written by another aslfeat run; "
                "wait for it or choose another output"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def names(self) -> set[str]:
        """Image names already in the database."""
        return set(self._names)

    def _new_camera(self, width: int, height: int, focal: float | None) -> tuple[int, int]:
        pycolmap = _pycolmap()
        camera = self.camera.create(pycolmap, width, height, focal)
        camera.camera_id = self._db.write_camera(camera)
        # COLMAP >= 3.12 needs a rig per camera and a frame per image for mapping.
        rig = pycolmap.Rig()
        rig.add_ref_sensor(camera.sensor_id)
        return camera.camera_id, self._db.write_rig(rig)

    def _existing_shared_camera(self, width: int, height: int) -> tuple[int, int] | None:
        # When extending a single-camera database, reuse its camera of the same size.
        for camera in self._db.read_all_cameras():
            if (camera.width, camera.height) == (width, height):
                rig = self._db.read_rig_with_sensor(camera.sensor_id)
                if rig is not None:
                    return camera.camera_id, rig.rig_id
        return None

    def _camera_for(self, image_path: Path | None, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if not self.single_camera:
            return self._new_camera(width, height, exif_focal_length(image_path))
        if self._shared is None:
            found = self._existing_shared_camera(width, height)
            if found is None:
                found = self._new_camera(width, height, exif_focal_length(image_path))
            self._shared = (*found, size)
        if self._shared[2] != size:
            raise UserError(
                f"--single-camera needs images of one size: {size[0]}x{size[1]} differs "
                f"from {self._shared[2][0]}x{self._shared[2][1]}"
            )
        return self._shared[0], self._shared[1]

    def add(
        self,
        name: str,
        image_path: Path | None,
        keypoints: np.ndarray,
        descriptors: np.ndarray,
        image_size: tuple[int, int] | np.ndarray,
    ) -> None:
        """Register one image with its camera and store its keypoints and float descriptors.

        ``keypoints`` are N x 2 in hloc's convention (shifted by +0.5 here), ``descriptors``
        N x D float, ``image_size`` (W, H) of the original image. Raises UserError when the
        database already holds an image of that name.
        """
        if self._db is None:
            raise RuntimeError("ColmapFeatureWriter must be used as a context manager")
        pycolmap = _pycolmap()
        if name in self._names:
            raise UserError(f"{self.database}: already holds image {name!r}")
        keypoints = np.asarray(keypoints, dtype=np.float32)
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if keypoints.ndim != 2 or keypoints.shape[1] != 2 or len(descriptors) != len(keypoints):
            raise ValueError(
                f"{name}: keypoints {keypoints.shape} and descriptors {descriptors.shape} disagree"
            )
        width, height = (int(v) for v in np.asarray(image_size).reshape(2))
        camera_id, rig_id = self._camera_for(image_path, (width, height))
        # One transaction per image so that an image is never half written.
        with pycolmap.DatabaseTransaction(self._db):
            image_id = self._db.write_image(pycolmap.Image(name=name, camera_id=camera_id))
            frame = pycolmap.Frame()
            frame.rig_id = rig_id
            sensor = pycolmap.sensor_t(type=pycolmap.SensorType.CAMERA, id=camera_id)
            frame.add_data_id(pycolmap.data_t(sensor_id=sensor, id=image_id))
            self._db.write_frame(frame)
            self._db.write_keypoints(image_id, keypoints + COLMAP_SHIFT)
            self._db.write_descriptors(image_id, self._typed(name, descriptors))
        self._names.add(name)

    def _typed(self, name: str, descriptors: np.ndarray):  # noqa: ANN202 (pycolmap type)
        """N x D float32 -> pycolmap.FeatureDescriptors of the chosen type (same bytes)."""
        pycolmap = _pycolmap()
        kind = getattr(pycolmap.FeatureExtractorType, DESCRIPTOR_TYPES[self.descriptors])
        if self.descriptors == "aliked":
            if descriptors.shape[1] != ALIKED_DIM:
                raise UserError(
                    f"{name}: --colmap-descriptors aliked needs {ALIKED_DIM}-d descriptors, "
                    f"got {descriptors.shape[1]}"
                )
            return pycolmap.FeatureDescriptorsFloat(kind, descriptors).to_bytes()
        # An explicit row width: reshape(0, -1) is undefined for an image without keypoints.
        width = 4 * (descriptors.shape[1] if descriptors.ndim == 2 else 0)
        blob = np.ascontiguousarray(descriptors, np.float32).view(np.uint8)
        return pycolmap.FeatureDescriptors(kind, blob.reshape(len(descriptors), width))


def image_ids(database: Path) -> dict[str, int]:
    """Image name -> image id of a database."""
    db = _open_database(database)
    try:
        return {image.name: image.image_id for image in db.read_all_images()}
    finally:
        db.close()


def _image_id(db, database: Path, name: str) -> int:
    image = db.read_image_with_name(name)
    if image is None:
        raise UserError(f"{database}: no image named {name!r}")
    return image.image_id


def read_colmap_keypoints(database: Path, name: str) -> np.ndarray:
    """An image's keypoints (N, 2) float32 in hloc's convention (COLMAP's +0.5 undone)."""
    db = _open_database(database)
    try:
        kp = db.read_keypoints(_image_id(db, database, name))
    finally:
        db.close()
    return np.asarray(kp[:, :2], dtype=np.float32) - COLMAP_SHIFT


def read_colmap_descriptors(database: Path, name: str) -> np.ndarray:
    """An image's descriptors (N, D) float32.

    Our float descriptors are given back bit-exact in both layouts (UNDEFINED raw float32
    bytes, or typed ALIKED); SIFT uint8 descriptors are converted to float and L2-normalised;
    LOMA through pycolmap.
    """
    pycolmap = _pycolmap()
    db = _open_database(database)
    try:
        desc = db.read_descriptors(_image_id(db, database, name))
    finally:
        db.close()
    return _float_descriptors(pycolmap, desc, database, name)


def _float_descriptors(pycolmap, desc, database: Path, name: str) -> np.ndarray:  # noqa: ANN001
    """pycolmap.FeatureDescriptors -> N x D float32 (see read_colmap_descriptors)."""
    data = np.ascontiguousarray(desc.data)
    if desc.type == pycolmap.FeatureExtractorType.UNDEFINED:
        if data.shape[1] % 4:
            raise UserError(f"{database}: descriptors of {name!r} are not float32 rows")
        return data.view(np.float32).reshape(len(data), -1).copy()
    if desc.type == pycolmap.FeatureExtractorType.SIFT:
        out = data.astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.asarray(desc.to_float().data, dtype=np.float32)


def require_space(
    database: Path,
    features_path: Path,
    names: Iterable[str],
    matches_path: Path | None = None,
    pairs: Iterable[tuple[str, str]] = (),
) -> None:
    """UserError when the disk cannot hold what importing would add to ``database``.

    SQLite returns "database or disk is full" mid-transaction, and pycolmap then aborts the
    process (SIGABRT, "cannot commit - no transaction is active"), so the room is checked
    before anything is written. The estimate is generous: keypoints and raw descriptors,
    every keypoint of image 0 matched (raw and verified), twice over for SQLite's journal.
    """
    import shutil

    import h5py

    existing = set(image_ids(database)) if Path(database).exists() else set()
    need = 0
    with h5py.File(features_path, "r") as fh:
        for name in names:
            if name not in existing and name in fh:
                shape = fh[name]["descriptors"].shape
                need += int(np.prod(shape)) * 4 + fh[name]["keypoints"].shape[0] * 24
    if matches_path is not None:
        with h5py.File(matches_path, "r") as fh:
            from . import h5io

            for a, b in pairs:
                for key in (h5io.names_to_pair(a, b), h5io.names_to_pair(b, a)):
                    if key in fh and "matches0" in fh[key]:
                        need += fh[key]["matches0"].shape[0] * 16
                        break
    need = 2 * need + 1024 * 1024
    folder = Path(database).resolve().parent
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(
            f"not enough disk space for {database}: need about {need / 2**20:.1f} MiB, "
            f"{free / 2**20:.1f} MiB free in {folder}; nothing was written"
        )


def is_database(path: Path) -> bool:
    """True for an existing SQLite file (what a COLMAP database is)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def export_features(database: Path, features_path: Path) -> list[str]:
    """Write a database's keypoints and float descriptors to an HDF5 features file.

    COLMAP keeps no detection scores: they are written as ones. Returns the image names.
    Images without keypoints in the database are left out.
    """
    import h5py

    from . import h5io

    pycolmap = _pycolmap()
    db = _open_database(database)
    names = []
    try:
        images = db.read_all_images()
        cameras = {camera.camera_id: camera for camera in db.read_all_cameras()}
        with h5py.File(features_path, "w") as fh:
            for image in images:
                if db.num_keypoints_for_image(image.image_id) == 0:
                    continue
                keypoints = db.read_keypoints(image.image_id)[:, :2] - COLMAP_SHIFT
                desc = _float_descriptors(
                    pycolmap, db.read_descriptors(image.image_id), database, image.name
                )
                camera = cameras[image.camera_id]
                h5io.write_features(
                    fh,
                    image.name,
                    keypoints,
                    np.ones(len(keypoints), np.float32),
                    desc,
                    (camera.width, camera.height),
                )
                names.append(image.name)
    finally:
        db.close()
    return names


def read_cameras(database: Path) -> list:
    """The ``pycolmap.Camera`` objects of a database, in id order."""
    db = _open_database(database)
    try:
        return sorted(db.read_all_cameras(), key=lambda camera: camera.camera_id)
    finally:
        db.close()


def check_cameras(database: Path, camera: CameraSpec) -> None:
    """Refuse a database whose cameras are not of ``camera``'s model (and known parameters,
    where it has them): its images would keep them, whatever the run asked for."""
    if not Path(database).exists():
        return
    for cam in read_cameras(database):
        same = cam.model.name == camera.model and (
            camera.params is None or np.allclose(cam.params, camera.params, rtol=0, atol=1e-6)
        )
        if not same:
            params = ",".join(f"{v:g}" for v in cam.params)
            raise UserError(
                f"{database} holds a {cam.model.name} camera ({params}), not the one asked "
                "for; use a new output folder or --overwrite"
            )


def import_features(
    database: Path,
    features_path: Path,
    names: Iterable[str],
    image_paths: Mapping[str, Path] | None = None,
    single_camera: bool = False,
    progress: bool = True,
    descriptors: str = "raw",
    camera: CameraSpec | None = None,
) -> dict[str, int]:
    """Add images from an HDF5 features file to a database; returns name -> image id.

    Images already in the database are kept when their keypoints equal ours (a resumed
    import) and refused otherwise, before anything is written. ``descriptors``: the
    layout of new images' descriptors, ``raw`` or ``aliked`` (module docstring);
    ``camera``: new cameras' model and known parameters (:class:`~.cameras.CameraSpec`).
    """
    from tqdm import tqdm

    from . import h5io

    names = list(names)
    existing = image_ids(database) if Path(database).exists() else {}
    for name in names:
        if name in existing:
            ours = h5io.read_features(features_path, name)["keypoints"]
            theirs = read_colmap_keypoints(database, name)
            if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-3):
                raise UserError(
                    f"{database} already holds image {name!r} with other keypoints; "
                    "use a new database"
                )
    with ColmapFeatureWriter(database, single_camera, descriptors, camera) as writer:
        for name in tqdm(names, desc="database", disable=not progress, unit="img"):
            if name in writer.names():
                continue
            feats = h5io.read_features(features_path, name)
            # The image file is read only for its EXIF focal length.
            path = image_paths.get(name) if image_paths is not None else None
            writer.add(name, path, feats["keypoints"], feats["descriptors"], feats["image_size"])
    ids = image_ids(database)
    return {name: ids[name] for name in names}


def import_matches(
    database: Path,
    matches_path: Path,
    pairs: Iterable[tuple[str, str]],
    min_score: float | None = None,
    inliers_only: bool = False,
    progress: bool = True,
) -> int:
    """Write the matches of ``pairs`` into the database's raw matches table.

    Pairs already holding matches are left alone. Matches whose indices do not fit the
    database keypoints raise UserError before that pair is written. Returns pairs written.
    """
    from tqdm import tqdm

    from . import h5io

    pairs = list(pairs)
    db = _open_database(database)
    written = 0
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        missing = sorted({n for pair in pairs for n in pair if n not in ids})
        if missing:
            raise UserError(
                f"{database}: {len(missing)} image(s) of the pairs are not in the database, "
                f"e.g. {missing[0]!r}"
            )
        counts = {}
        for name0, name1 in tqdm(pairs, desc="import matches", disable=not progress):
            id0, id1 = ids[name0], ids[name1]
            if id0 == id1 or db.exists_matches(id0, id1):
                continue
            matches, scores = h5io.read_match_pairs(
                matches_path, name0, name1, inliers_only=inliers_only
            )
            if min_score is not None:
                matches = matches[scores >= min_score]
            for name, image_id, col in ((name0, id0, 0), (name1, id1, 1)):
                if image_id not in counts:
                    counts[image_id] = db.num_keypoints_for_image(image_id)
                if len(matches) and matches[:, col].max() >= counts[image_id]:
                    raise UserError(
                        f"matches of ({name0}, {name1}) index past the {counts[image_id]} "
                        f"keypoints of {name!r} in {database}: features and matches differ"
                    )
            db.write_matches(id0, id1, matches.astype(np.uint32))
            written += 1
    finally:
        db.close()
    return written


def verify_matches(
    database: Path,
    pairs: Iterable[tuple[str, str]] | None = None,
    max_error: float = 4.0,
    max_num_trials: int = 20000,
    min_inlier_ratio: float = 0.1,
    progress: bool = False,
) -> int:
    """pycolmap's two-view geometric verification of the matched pairs (hloc's settings).

    Runs on the pairs that hold raw matches in the database (``pairs``, imported by
    :func:`import_matches`, are among them), through pycolmap's API rather than a
    space-separated pairs file, so that image names may hold spaces and newlines. Pairs
    verified before are left alone. Returns the number of verified pairs afterwards.
    ``progress`` shows the elapsed time meanwhile (pycolmap prints nothing for tens of
    seconds).
    """
    from .progress import spinner

    pycolmap = _pycolmap()
    options = pycolmap.TwoViewGeometryOptions()
    options.ransac.max_error = max_error
    options.ransac.max_num_trials = max_num_trials
    options.ransac.min_inlier_ratio = min_inlier_ratio
    with spinner("geometric verification", progress):
        pycolmap.geometric_verification(
            database,
            pairing_options=pycolmap.ExistingMatchedPairingOptions(),
            two_view_geometry_options=options,
        )
    db = _open_database(database)
    try:
        return int(db.num_verified_image_pairs())
    finally:
        db.close()


def read_verified_matches(database: Path) -> list[tuple[str, str, np.ndarray]]:
    """The inlier matches of every geometrically verified pair of a database:
    (name0, name1, (M, 2) int64 keypoint indices)."""
    pycolmap = _pycolmap()
    names = {image_id: name for name, image_id in image_ids(database).items()}
    db = _open_database(database)
    try:
        pair_ids, geometries = db.read_two_view_geometries()
    finally:
        db.close()
    out = []
    for pair_id, geometry in zip(pair_ids, geometries, strict=True):
        inliers = np.asarray(geometry.inlier_matches, np.int64).reshape(-1, 2)
        if len(inliers):
            id0, id1 = pycolmap.pair_id_to_image_pair(pair_id)
            out.append((names[id0], names[id1], inliers))
    return out


def update_keypoint_positions(database: Path, positions: Mapping[str, np.ndarray]) -> None:
    """Replace the positions of images' keypoints (N, 2 in hloc's convention; COLMAP's +0.5
    added here), keeping their order and any other columns COLMAP stores."""
    db = _open_database(database)
    try:
        for name, xy in positions.items():
            image_id = _image_id(db, database, name)
            stored = np.array(db.read_keypoints(image_id), dtype=np.float32)
            if len(stored) != len(xy):
                raise UserError(
                    f"{database}: image {name!r} holds {len(stored)} keypoints, not {len(xy)}"
                )
            stored[:, :2] = np.asarray(xy, np.float32) + COLMAP_SHIFT
            db.update_keypoints(image_id, stored)
    finally:
        db.close()
