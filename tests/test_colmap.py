"""COLMAP database writing through pycolmap: conventions, cameras, bad input, the command."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

pycolmap = pytest.importorskip("pycolmap")

from aslfeat_cli import colmap_db, h5io  # noqa: E402
from aslfeat_cli.cli import cli  # noqa: E402
from aslfeat_cli.errors import UserError  # noqa: E402
from aslfeat_cli.matching import match_pairs  # noqa: E402


def _feats(rng, n=20, dim=128):
    desc = rng.standard_normal((n, dim)).astype(np.float32)
    return (rng.random((n, 2)) * 300).astype(np.float32), desc / np.linalg.norm(desc, axis=1)[
        :, None
    ]


def test_keypoint_shift_and_float_descriptors(tmp_path):
    db_path = tmp_path / "database.db"
    rng = np.random.default_rng(0)
    kp, desc = _feats(rng)
    with colmap_db.ColmapFeatureWriter(db_path) as writer:
        writer.add("dir/a.jpg", None, kp, desc, (640, 480))
        assert writer.names() == {"dir/a.jpg"}
    db = pycolmap.Database.open(db_path)
    try:
        image = db.read_image_with_name("dir/a.jpg")
        raw = db.read_keypoints(image.image_id)
        camera = db.read_camera(image.camera_id)
        assert db.num_frames() == 1 and db.num_rigs() == 1  # needed by COLMAP >= 3.12 mappers
    finally:
        db.close()
    np.testing.assert_allclose(raw[:, :2], kp + 0.5)  # COLMAP: pixel centres at .5
    np.testing.assert_allclose(colmap_db.read_colmap_keypoints(db_path, "dir/a.jpg"), kp)
    # float32 descriptors come back bit-exact
    np.testing.assert_array_equal(colmap_db.read_colmap_descriptors(db_path, "dir/a.jpg"), desc)
    assert (camera.width, camera.height) == (640, 480)
    assert camera.model_name == "SIMPLE_RADIAL"
    assert camera.focal_length == pytest.approx(1.2 * 640)  # COLMAP's default prior
    assert not camera.has_prior_focal_length


def test_exif_focal_length_prior(tmp_path):
    from PIL import Image

    path = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    exif.get_ifd(0x8769)[0xA405] = 50  # focal length in 35 mm film
    Image.fromarray(np.zeros((100, 150, 3), np.uint8)).save(path, exif=exif)
    kp, desc = _feats(np.random.default_rng(1))
    with colmap_db.ColmapFeatureWriter(tmp_path / "db.db") as writer:
        writer.add("exif.jpg", path, kp, desc, (150, 100))
    db = pycolmap.Database.open(tmp_path / "db.db")
    camera = db.read_all_cameras()[0]
    db.close()
    assert camera.has_prior_focal_length
    assert camera.focal_length == pytest.approx(50 / 36 * 150, rel=1e-3)


def test_single_camera_and_extending(tmp_path):
    db_path = tmp_path / "db.db"
    rng = np.random.default_rng(2)
    with colmap_db.ColmapFeatureWriter(db_path, single_camera=True) as writer:
        for name in ("a.jpg", "b.jpg"):
            writer.add(name, None, *_feats(rng), (320, 240))
        with pytest.raises(UserError, match="--single-camera needs images of one size"):
            writer.add("c.jpg", None, *_feats(rng), (240, 320))
    with colmap_db.ColmapFeatureWriter(db_path, single_camera=True) as writer:  # extend
        assert writer.names() == {"a.jpg", "b.jpg"}
        writer.add("d.jpg", None, *_feats(rng), (320, 240))
        with pytest.raises(UserError, match="already holds image 'a.jpg'"):
            writer.add("a.jpg", None, *_feats(rng), (320, 240))
    db = pycolmap.Database.open(db_path)
    assert db.num_cameras() == 1 and db.num_images() == 3 and db.num_frames() == 3
    db.close()


def test_not_a_database(tmp_path):
    bad = tmp_path / "database.db"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not a COLMAP database"):
        with colmap_db.ColmapFeatureWriter(bad):
            pass


@pytest.fixture(scope="module")
def planar_scene(tmp_path_factory):
    """Features and matches of skimage's astronaut and a homography warp of it."""
    root = tmp_path_factory.mktemp("planar")
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    H = np.array([[0.9, 0.08, 30.0], [-0.06, 0.95, 20.0], [1e-4, -5e-5, 1.0]])
    warped = cv2.warpPerspective(image, H, image.shape[::-1])
    sift = cv2.SIFT_create(1500)
    with h5py.File(root / "f.h5", "w") as fh:
        for name, img in (("a.png", image), ("b.png", warped)):
            kps, desc = sift.detectAndCompute(img, None)
            xy = np.array([k.pt for k in kps], np.float32)
            h5io.write_features(fh, name, xy, np.ones(len(xy)), desc, img.shape[::-1])
    match_pairs(root / "f.h5", [("a.png", "b.png")], root / "m.h5", progress=False)
    return root


def test_colmap_command_imports_and_verifies(planar_scene, tmp_path):
    db_path = tmp_path / "database.db"
    args = ["colmap", str(planar_scene / "f.h5"), str(planar_scene / "m.h5"), "-d", str(db_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "1 verified pair(s)" in result.stderr and result.stdout == ""
    db = pycolmap.Database.open(db_path)
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        raw = db.read_matches(ids["a.png"], ids["b.png"])
        inliers = db.read_two_view_geometry(ids["a.png"], ids["b.png"]).inlier_matches
    finally:
        db.close()
    ours, _ = h5io.read_match_pairs(planar_scene / "m.h5", "a.png", "b.png")
    np.testing.assert_array_equal(raw, ours)
    assert len(inliers) > 100
    result = CliRunner().invoke(cli, args)  # same files again: reused, nothing new
    assert result.exit_code == 0 and "0 new pair(s)" in result.stderr


def test_database_with_other_keypoints_is_refused_untouched(planar_scene, tmp_path):
    db_path = tmp_path / "database.db"
    with colmap_db.ColmapFeatureWriter(db_path) as writer:
        writer.add("a.png", None, *_feats(np.random.default_rng(3)), (512, 512))
        writer.add("other.png", None, *_feats(np.random.default_rng(4)), (512, 512))
    before = colmap_db.read_colmap_keypoints(db_path, "a.png")
    with pytest.raises(UserError, match="already holds image 'a.png' with other keypoints"):
        colmap_db.import_features(db_path, planar_scene / "f.h5", ["a.png", "b.png"])
    assert colmap_db.image_ids(db_path).keys() == {"a.png", "other.png"}  # b.png not added
    np.testing.assert_array_equal(colmap_db.read_colmap_keypoints(db_path, "a.png"), before)


def test_import_matches_bad_input(planar_scene, tmp_path):
    db_path = tmp_path / "database.db"
    colmap_db.import_features(db_path, planar_scene / "f.h5", ["a.png"], progress=False)
    with pytest.raises(UserError, match="not in the database, e.g. 'b.png'"):
        colmap_db.import_matches(
            db_path, planar_scene / "m.h5", [("a.png", "b.png")], progress=False
        )
    # b.png registered with too few keypoints: the matches do not fit
    with colmap_db.ColmapFeatureWriter(db_path) as writer:
        writer.add("b.png", None, *_feats(np.random.default_rng(5), n=3), (512, 512))
    with pytest.raises(UserError, match="features and matches differ"):
        colmap_db.import_matches(
            db_path, planar_scene / "m.h5", [("a.png", "b.png")], progress=False
        )
    db = pycolmap.Database.open(db_path)
    assert db.num_matched_image_pairs() == 0
    db.close()


def test_colmap_command_pairs_not_matched(planar_scene, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png b.png\na.png a.png\n")
    db_path = tmp_path / "database.db"
    result = CliRunner().invoke(
        cli,
        ["colmap", str(planar_scene / "f.h5"), str(planar_scene / "m.h5"), "-d", str(db_path)]
        + ["--pairs", str(pairs)],
    )
    assert result.exit_code == 0, result.output  # the self pair is dropped with a warning
    pairs.write_text("a.png c.png\n")
    result = CliRunner().invoke(
        cli,
        ["colmap", str(planar_scene / "f.h5"), str(planar_scene / "m.h5"), "-d", str(db_path)]
        + ["--pairs", str(pairs)],
    )
    assert result.exit_code == 1 and "have no features: 'c.png'" in result.output


def test_aliked_typed_descriptors_bit_exact(tmp_path):
    """--colmap-descriptors aliked: typed ALIKED_N16ROT, the same float32 values back."""
    db_path = tmp_path / "database.db"
    kp, desc = _feats(np.random.default_rng(7), n=50)
    with colmap_db.ColmapFeatureWriter(db_path, descriptors="aliked") as writer:
        writer.add("a.jpg", None, kp, desc, (640, 480))
    db = pycolmap.Database.open(db_path)
    try:
        stored = db.read_descriptors(db.read_image_with_name("a.jpg").image_id)
    finally:
        db.close()
    assert stored.type == pycolmap.FeatureExtractorType.ALIKED_N16ROT
    np.testing.assert_array_equal(stored.to_float().data, desc)  # COLMAP's own view
    np.testing.assert_array_equal(colmap_db.read_colmap_descriptors(db_path, "a.jpg"), desc)


def test_aliked_needs_128_dimensions(tmp_path):
    kp, desc = _feats(np.random.default_rng(8), dim=64)
    with colmap_db.ColmapFeatureWriter(tmp_path / "db.db", descriptors="aliked") as writer:
        with pytest.raises(UserError, match="needs 128-d descriptors, got 64"):
            writer.add("a.jpg", None, kp, desc, (640, 480))


@pytest.mark.parametrize("kind", ["raw", "aliked"])
def test_match_and_colmap_read_database_descriptors(planar_scene, tmp_path, kind):
    """`aslfeat match DATABASE` gives the matches of the HDF5 features, in both layouts."""
    db_path = tmp_path / "database.db"
    runner = CliRunner()
    args = ["colmap", str(planar_scene / "f.h5"), str(planar_scene / "m.h5"), "-d", str(db_path)]
    result = runner.invoke(cli, args + ["--colmap-descriptors", kind, "--skip-verification"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "m.h5"
    result = runner.invoke(cli, ["-q", "match", str(db_path), "-o", str(out), "--exhaustive"])
    assert result.exit_code == 0, result.output
    expected, _ = h5io.read_match_pairs(planar_scene / "m.h5", "a.png", "b.png")
    got, _ = h5io.read_match_pairs(out, "a.png", "b.png")
    np.testing.assert_array_equal(got, expected)
    # and `aslfeat colmap` accepts the database again (same keypoints: reused)
    result = runner.invoke(cli, args + ["--colmap-descriptors", kind])
    assert result.exit_code == 0 and "0 new pair(s)" in result.stderr, result.output


def test_extract_colmap_descriptors(tmp_path):
    """extract -o x.db --colmap-descriptors aliked types them; refused for HDF5 output."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)[:96, :128])
    db_path = tmp_path / "x.db"
    result = CliRunner().invoke(
        cli, ["-q", "extract", str(image), "-o", str(db_path), "--colmap-descriptors", "aliked"]
    )
    assert result.exit_code == 0, result.output
    db = pycolmap.Database.open(db_path)
    try:
        stored = db.read_descriptors(db.read_image_with_name("a.png").image_id)
    finally:
        db.close()
    assert stored.type == pycolmap.FeatureExtractorType.ALIKED_N16ROT and len(stored.data) > 0
    result = CliRunner().invoke(
        cli, ["extract", str(image), "-o", str(tmp_path / "f.h5"), "--colmap-descriptors", "aliked"]
    )
    assert result.exit_code != 0
    assert (
        "--colmap-descriptors" in result.output
        and "only applies to --format colmap" in result.output
    )


def test_colmap_command_writes_the_given_camera(planar_scene, tmp_path):
    db_path = tmp_path / "database.db"
    base = ["colmap", str(planar_scene / "f.h5"), str(planar_scene / "m.h5"), "-d", str(db_path)]
    base += ["--single-camera", "--camera-model", "PINHOLE"]
    result = CliRunner().invoke(cli, [*base, "--camera-params", "600,610,256.5,255.5"])
    assert result.exit_code == 0, result.output
    (camera,) = colmap_db.read_cameras(db_path)
    assert camera.model.name == "PINHOLE" and camera.has_prior_focal_length
    np.testing.assert_array_equal(camera.params, [600, 610, 256.5, 255.5])
    # Extending it with other parameters is refused (its images would keep the old ones);
    # without camera options it extends as before.
    result = CliRunner().invoke(cli, [*base, "--camera-params", "700,700,256,256"])
    assert result.exit_code == 1 and "holds a PINHOLE camera" in result.output
    args = base[:5]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "0 new pair(s)" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--camera-params", "1,2,3"])
    assert result.exit_code == 1 and "SIMPLE_RADIAL has 4 parameters" in result.output
