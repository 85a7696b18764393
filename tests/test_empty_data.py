"""Zero keypoints and zero matches are normal data: every command handles them; a run that
builds nothing says so with a non-zero exit; options that make no sense are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from tests.conftest import shared_data
from tests.test_extract import _samples, _write, needs_model


def _run(*args: str | Path):  # noqa: ANN202
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def with_blank(tmp_path: Path) -> Path:
    """Two textured pictures and a blank white one (no keypoints)."""
    folder = tmp_path / "images"
    samples = _samples()
    _write(folder / "astronaut.jpg", samples["astronaut.jpg"])
    _write(folder / "camera.png", samples["camera.png"])
    _write(folder / "white.png", np.full((200, 240), 255, np.uint8))
    return folder


@needs_model
def test_blank_image_into_a_colmap_database(with_blank, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    db = tmp_path / "x.db"
    result = _run("extract", with_blank, "-o", db, "-q", "--num-keypoints", "300")
    assert result.exit_code == 0, result.output
    database = pycolmap.Database.open(db)
    try:
        counts = {
            im.name: database.num_keypoints_for_image(im.image_id)
            for im in database.read_all_images()
        }
    finally:
        database.close()
    assert counts["white.png"] == 0 and counts["astronaut.jpg"] > 0 and len(counts) == 3


@needs_model
def test_blank_image_through_match_colmap_and_show(with_blank, tmp_path):
    pytest.importorskip("pycolmap")
    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    assert _run("extract", with_blank, "-o", feats, "-q", "--num-keypoints", "300").exit_code == 0
    assert len(h5io.read_features(feats, "white.png")["keypoints"]) == 0
    assert _run("-q", "match", feats, "-o", matches, "--exhaustive").exit_code == 0
    result = _run("colmap", feats, matches, "-d", tmp_path / "d.db")
    assert result.exit_code == 0, result.output
    result = _run("show", feats, "--matches", matches, "--images", with_blank, "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "p" / "matches").glob("*.png"))) == 3


def test_show_a_pair_without_matches(tmp_path):
    feats, matches, images = tmp_path / "f.h5", tmp_path / "m.h5", tmp_path / "img"
    rng = np.random.default_rng(0)
    with h5py.File(feats, "w") as fh:
        for name in ("a.png", "b.png"):
            _write(images / name, np.full((60, 80, 3), 90, np.uint8))
            h5io.write_features(fh, name, rng.random((5, 2)) * 50, np.ones(5), np.eye(5), (80, 60))
    with h5py.File(matches, "w") as fh:
        h5io.write_matches(fh, "a.png", "b.png", np.full(5, -1), np.zeros(5), num_keypoints1=5)
    result = _run("show", feats, "--matches", matches, "--images", images, "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    pictures = sorted((tmp_path / "p" / "matches").glob("*.png"))  # names: see test_sample
    assert len(pictures) == 1 and cv2.imread(str(pictures[0])) is not None


@needs_model
def test_reconstruct_with_a_blank_image(tmp_path):
    pytest.importorskip("pycolmap")
    source = shared_data("sfm", "fountain-P11", "images")
    folder = tmp_path / "images"
    folder.mkdir()
    for src in sorted(source.glob("*.jpg"))[3:6]:
        shutil.copy(src, folder / src.name)
    _write(folder / "white.jpg", np.full((1024, 1536), 255, np.uint8))
    out = tmp_path / "sfm"
    result = _run("reconstruct", folder, "-o", out, "--max-dim", "640", "--num-keypoints", "2000")
    assert result.exit_code == 0, result.output
    assert (out / "sparse").is_dir()


@needs_model
def test_reconstruct_that_builds_no_model_exits_non_zero(tmp_path):
    pytest.importorskip("pycolmap")
    folder = tmp_path / "images"
    samples = _samples()
    _write(folder / "camera.png", samples["camera.png"])
    _write(folder / "coffee.png", samples["coffee.png"])
    result = _run("reconstruct", folder, "-o", tmp_path / "sfm", "--mapper-attempts", "1")
    assert result.exit_code == 1, result.output
    assert "no model" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "option, value",
    [
        ("--score-threshold", "nan"),
        ("--score-threshold", "inf"),
        ("--edge-threshold", "inf"),
        ("--edge-threshold", "nan"),
    ],
)
def test_non_finite_detection_settings_are_refused(tmp_path, option, value):
    image = _write(tmp_path / "a.png", _samples()["camera.png"])
    result = _run("extract", image, "-o", tmp_path / "f.h5", option, value)
    assert result.exit_code == 2, result.output  # click's usage error, before any work
    assert option in result.stderr and not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("option", ["--min-score", "--verify-threshold"])
def test_non_finite_match_settings_are_refused(tmp_path, option):
    command = "colmap" if option == "--min-score" else "match"
    feats = tmp_path / "f.h5"
    h5py.File(feats, "w").close()
    extra = [feats, "-d", tmp_path / "d.db"] if command == "colmap" else ["-o", tmp_path / "m.h5"]
    result = _run(command, feats, *extra, "--exhaustive", option, "nan")
    assert result.exit_code == 2, result.output
    assert option in result.stderr


def test_detection_config_refuses_non_finite_thresholds():
    from aslfeat_cli.keypoints import DetectionConfig

    for kwargs in ({"score_threshold": float("nan")}, {"edge_threshold": float("inf")}):
        with pytest.raises(ValueError, match="must be finite"):
            DetectionConfig(**kwargs)
