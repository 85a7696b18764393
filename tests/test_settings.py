"""Recorded settings and file identity: a resume or a later step with other settings or with
files that do not belong together is refused instead of silently giving wrong results."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from aslfeat_cli.settings import FEATURE_KEYS, FEATURES_ID, MATCH_KEYS, read_attrs
from tests.test_extract import _samples, _write, needs_model


def _run(*args: str | Path):  # noqa: ANN202
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def two_images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    samples = _samples()
    for name in ("astronaut.jpg", "camera.png"):
        _write(folder / name, samples[name])
    return folder


def _one_line_error(result) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().startswith("Error:")


@needs_model
def test_extract_records_settings_and_refuses_other_settings_on_resume(two_images, tmp_path):
    out = tmp_path / "f.h5"
    assert _run("extract", two_images, "-o", out, "--num-keypoints", "300", "-q").exit_code == 0
    with h5py.File(out, "r") as fh:
        attrs = read_attrs(fh.attrs)
        assert set(FEATURE_KEYS) <= set(attrs) and len(attrs[FEATURES_ID]) == 32
        assert all("image_sha256" in fh[name].attrs for name in ("astronaut.jpg", "camera.png"))
    before = out.read_bytes()
    result = _run("extract", two_images, "-o", out, "--num-keypoints", "200", "-q")
    _one_line_error(result)
    assert "num_keypoints=300 (now 200)" in result.stderr and "--overwrite" in result.stderr
    assert out.read_bytes() == before  # attributes not rewritten

    result = _run("extract", two_images, "-o", out, "--num-keypoints", "200", "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as fh:
        assert fh.attrs["num_keypoints"] == 200 and fh.attrs[FEATURES_ID] != attrs[FEATURES_ID]
        assert len(fh["astronaut.jpg/keypoints"]) <= 200


@needs_model
def test_extract_resume_refuses_a_changed_image(two_images, tmp_path):
    out = tmp_path / "f.h5"
    assert _run("extract", two_images, "-o", out, "-q", "--num-keypoints", "100").exit_code == 0
    # Another picture under the same name: a resume must not keep the old features.
    _write(two_images / "camera.png", _samples()["coffee.png"])
    result = _run("extract", two_images, "-o", out, "-q", "--num-keypoints", "100")
    _one_line_error(result)
    assert "camera.png" in result.stderr and "changed" in result.stderr


@needs_model
def test_reconstruct_refuses_an_output_folder_of_other_images(two_images, tmp_path):
    """`reconstruct setB -o X` where X holds setA's output must not return setA's model."""
    out = tmp_path / "sfm"
    out.mkdir()
    first = _run("extract", two_images, "-o", out / "features.h5", "-q", "--max-dim", "1600")
    assert first.exit_code == 0, first.output
    other = tmp_path / "other"
    samples = _samples()
    _write(other / "astronaut.jpg", samples["chelsea.jpg"])
    _write(other / "camera.png", samples["coffee.png"])
    result = _run("reconstruct", other, "-o", out, "--num-keypoints", "5000")
    _one_line_error(result)
    assert "changed" in result.stderr and not (out / "sparse").exists()


def _features(path: Path, seed: int, n: int = 60) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fh:
        fh.attrs[FEATURES_ID] = f"id{seed}"
        for name in ("a.jpg", "b.jpg"):
            desc = rng.normal(size=(n, 128)).astype(np.float32)
            desc /= np.linalg.norm(desc, axis=1, keepdims=True)
            h5io.write_features(fh, name, rng.random((n, 2)) * 100, np.ones(n), desc, (100, 100))


def test_match_records_settings_and_refuses_other_settings_on_resume(tmp_path):
    feats, out = tmp_path / "f.h5", tmp_path / "m.h5"
    _features(feats, 1)
    assert _run("match", feats, "-o", out, "--exhaustive", "--ratio", "0.9").exit_code == 0
    with h5py.File(out, "r") as fh:
        attrs = read_attrs(fh.attrs)
    assert set(MATCH_KEYS) <= set(attrs) and attrs["ratio"] == 0.9
    assert attrs[FEATURES_ID] == "id1"
    before, _ = h5io.read_matches(out, "a.jpg", "b.jpg")
    result = _run("match", feats, "-o", out, "--exhaustive", "--ratio", "0.8")
    _one_line_error(result)
    assert "ratio=0.9 (now 0.8)" in result.stderr
    result = _run("match", feats, "-o", out, "--exhaustive", "--ratio", "0.8", "--overwrite")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as fh:
        assert fh.attrs["ratio"] == 0.8
    after, _ = h5io.read_matches(out, "a.jpg", "b.jpg")
    assert (after >= 0).sum() <= (before >= 0).sum()


def test_match_resume_with_another_features_file_is_refused(tmp_path):
    feats, other, out = tmp_path / "f.h5", tmp_path / "g.h5", tmp_path / "m.h5"
    _features(feats, 1)
    _features(other, 2)
    assert _run("match", feats, "-o", out, "--exhaustive").exit_code == 0
    result = _run("match", other, "-o", out, "--exhaustive")
    _one_line_error(result)
    assert "another features file" in result.stderr


def test_colmap_refuses_matches_of_another_features_file(tmp_path):
    pytest.importorskip("pycolmap")
    feats, other, out = tmp_path / "f.h5", tmp_path / "g.h5", tmp_path / "m.h5"
    _features(feats, 1)
    _features(other, 2)  # the same keypoint counts: index checks cannot tell
    assert _run("match", other, "-o", out, "--exhaustive").exit_code == 0
    result = _run("colmap", feats, out, "-d", tmp_path / "db.db", "--skip-verification")
    _one_line_error(result)
    assert "another features file" in result.stderr
    assert not (tmp_path / "db.db").exists()


def test_show_refuses_matches_of_another_features_file(tmp_path):
    feats, other, out = tmp_path / "f.h5", tmp_path / "g.h5", tmp_path / "m.h5"
    _features(feats, 1)
    _features(other, 2)
    images = tmp_path / "img"
    for name in ("a.jpg", "b.jpg"):
        _write(images / name, np.full((100, 100), 128, np.uint8))
    assert _run("match", other, "-o", out, "--exhaustive").exit_code == 0
    result = _run("show", feats, "--matches", out, "--images", images, "-o", tmp_path / "p")
    _one_line_error(result)
    assert "another features file" in result.stderr


def test_settings_check_compatible_names_each_difference():
    from aslfeat_cli.errors import UserError
    from aslfeat_cli.settings import check_compatible, differences

    recorded = {"ratio": np.float64(0.9), "verify": b"none", "aslfeat_version": "0.1"}
    assert differences(recorded, {"ratio": 0.9, "verify": "none", "aslfeat_version": "9"}) == []
    assert differences(recorded, {"ratio": 0.8, "new_key": 1}) == ["ratio=0.9 (now 0.8)"]
    with pytest.raises(UserError, match=r"m.h5 was made with other settings: ratio=0.9"):
        check_compatible(recorded, {"ratio": 0.8}, "m.h5", "use --overwrite")


@needs_model
def test_colmap_database_records_settings_and_refuses_other_settings_on_resume(
    two_images, tmp_path
):
    pytest.importorskip("pycolmap")
    from aslfeat_cli.settings import read_db_settings

    db = tmp_path / "x.db"
    assert _run("extract", two_images, "-o", db, "--num-keypoints", "300", "-q").exit_code == 0
    recorded = read_db_settings(db)
    assert recorded["num_keypoints"] == 300 and len(recorded[FEATURES_ID]) == 32
    result = _run("extract", two_images, "-o", db, "--num-keypoints", "200", "-q")
    _one_line_error(result)
    assert "num_keypoints=300 (now 200)" in result.stderr
    result = _run("extract", two_images, "-o", db, "--num-keypoints", "200", "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert read_db_settings(db)["num_keypoints"] == 200
