"""Camera model and known intrinsics for COLMAP (``--camera-model/--camera-params/
--fixed-intrinsics``): checks, the database's cameras, and what bundle adjustment keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pycolmap = pytest.importorskip("pycolmap")

from aslfeat_cli import colmap_db  # noqa: E402
from aslfeat_cli.cameras import CameraSpec, camera_spec  # noqa: E402
from aslfeat_cli.cli import cli  # noqa: E402
from aslfeat_cli.errors import UserError  # noqa: E402
from aslfeat_cli.reconstruct import _mapper_options  # noqa: E402

from .conftest import require_shared  # noqa: E402


def test_camera_spec_checks_model_and_parameter_count():
    spec = camera_spec("pinhole", "1380, 1382,760.1,503.2", fixed=True)
    assert spec == CameraSpec("PINHOLE", (1380.0, 1382.0, 760.1, 503.2), True)
    assert camera_spec() == CameraSpec("SIMPLE_RADIAL", None, False)
    with pytest.raises(UserError, match="unknown camera model 'FOO'"):
        camera_spec("foo")
    with pytest.raises(UserError, match=r"PINHOLE has 4 parameters \(fx, fy, cx, cy\), got 3"):
        camera_spec("PINHOLE", "1,2,3")
    with pytest.raises(UserError, match="comma-separated numbers"):
        camera_spec("PINHOLE", "1,2,x,4")
    with pytest.raises(UserError, match="needs --camera-params"):
        camera_spec("PINHOLE", None, fixed=True)
    spec = camera_spec(refine_principal_point=True)
    assert spec == CameraSpec("SIMPLE_RADIAL", None, False, True)
    with pytest.raises(UserError, match="drop one of them"):
        camera_spec("PINHOLE", "1,1,1,1", fixed=True, refine_principal_point=True)
    with pytest.raises(UserError, match="needs --single-camera"):
        spec.check_shared(single_camera=False)
    spec.check_shared(single_camera=True)
    camera_spec().check_shared(single_camera=False)  # nothing asked that needs one camera


def test_fixed_spec_turns_off_intrinsics_refinement():
    options = _mapper_options(pycolmap, 2, 0, camera_spec("PINHOLE", "1,1,1,1", fixed=True))
    assert not options.ba_refine_focal_length
    assert not options.ba_refine_principal_point
    assert not options.ba_refine_extra_params
    options = _mapper_options(pycolmap, 2, 0, camera_spec("PINHOLE", "1,1,1,1"))
    assert options.ba_refine_focal_length and options.ba_refine_extra_params
    assert not options.ba_refine_principal_point  # COLMAP's default
    options = _mapper_options(pycolmap, 2, 0, camera_spec(refine_principal_point=True))
    assert options.ba_refine_principal_point and options.ba_refine_focal_length


def test_writer_stores_the_given_camera(tmp_path):
    database = tmp_path / "database.db"
    keypoints = np.array([[10.0, 20.0], [30.5, 40.25]], np.float32)
    descriptors = np.eye(2, 128, dtype=np.float32)
    spec = camera_spec("OPENCV", "900,910,320.5,240.5,0.01,-0.02,0.001,0.002")
    with colmap_db.ColmapFeatureWriter(database, camera=spec) as writer:
        writer.add("a.png", None, keypoints, descriptors, (640, 480))
    with colmap_db.ColmapFeatureWriter(database) as writer:  # default: COLMAP's guess
        writer.add("b.png", None, keypoints, descriptors, (640, 480))
    given, guessed = colmap_db.read_cameras(database)
    assert given.model.name == "OPENCV" and given.has_prior_focal_length
    np.testing.assert_array_equal(given.params, spec.params)
    assert (given.width, given.height) == (640, 480)
    assert guessed.model.name == "SIMPLE_RADIAL" and not guessed.has_prior_focal_length
    np.testing.assert_allclose(guessed.params, [1.2 * 640, 320, 240, 0])
    # A run that asks for other cameras is refused before anything is written.
    with pytest.raises(UserError, match="holds a OPENCV camera"):
        colmap_db.check_cameras(database, camera_spec("PINHOLE", "1,1,1,1"))


@pytest.mark.slow
def test_reconstruct_keeps_fixed_intrinsics_and_refines_free_ones(tmp_path):
    scene = require_shared("sfm", "fountain-P11", reason="SfM check")
    images = [str(p) for p in sorted((scene / "images").glob("*.jpg"))[3:7]]
    truth = json.loads((scene / "cameras_gt.json").read_text())["0003.jpg"]["K"]
    params = [truth[0][0], truth[1][1], truth[0][2], truth[1][2]]
    text = ",".join(f"{v:.3f}" for v in params)
    base = ["-q", "reconstruct", *images, "--single-camera", "--max-dim", "480"]
    base += ["--num-keypoints", "2000", "--threads", "2", "--camera-model", "PINHOLE"]
    base += ["--camera-params", text]
    runner = CliRunner()
    models = {}
    for label, extra in (("fixed", ["--fixed-intrinsics"]), ("free", [])):
        out = tmp_path / label
        result = runner.invoke(cli, [*base, "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        models[label] = pycolmap.Reconstruction(out / "sparse")
        assert models[label].num_reg_images() == 4
    (fixed,) = models["fixed"].cameras.values()
    (free,) = models["free"].cameras.values()
    given = [float(v) for v in text.split(",")]
    assert fixed.model.name == "PINHOLE"
    np.testing.assert_allclose(fixed.params, given, rtol=0, atol=1e-9)
    assert abs(free.params[0] - given[0]) > 1e-3  # the focal lengths were refined
    np.testing.assert_allclose(free.params[2:], given[2:], atol=1e-9)  # COLMAP keeps c
    # The same folder with other parameters: a one-line refusal, the database untouched.
    result = runner.invoke(cli, [*base[:-1], "1000,1000,768,512", "-o", str(tmp_path / "fixed")])
    assert result.exit_code == 1
    assert "holds a PINHOLE camera" in result.output and "--overwrite" in result.output


def test_reconstruct_cli_refuses_bad_cameras(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(b"")
    runner = CliRunner()
    base = ["reconstruct", str(images), "-o", str(tmp_path / "sfm")]
    result = runner.invoke(cli, [*base, "--camera-model", "NOPE"])
    assert result.exit_code == 1 and "unknown camera model 'NOPE'" in result.output
    result = runner.invoke(cli, [*base, "--fixed-intrinsics"])
    assert result.exit_code == 1 and "needs --camera-params" in result.output
    result = runner.invoke(cli, [*base, "--refine-principal-point"])
    assert result.exit_code == 1 and "needs --single-camera" in result.output
    params = ["--camera-params", "1,1,1,1", "--camera-model", "PINHOLE", "--single-camera"]
    result = runner.invoke(cli, [*base, *params, "--fixed-intrinsics", "--refine-principal-point"])
    assert result.exit_code == 1 and "drop one of them" in result.output
    assert not (tmp_path / "sfm").exists()  # refused before any work
