"""Image names: hloc's pair keys must not collide, and names with spaces, unicode and newlines
work end to end (extract, match, colmap, reconstruct)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from tests.conftest import ROOT, shared_data
from tests.test_extract import needs_model

HLOC = ROOT.parent / "shared" / "vendor" / "hloc"


def _run(*args: str | Path):  # noqa: ANN202
    return CliRunner().invoke(cli, [str(a) for a in args])


def _features(path: Path, names: list[str], n: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fh:
        for i, name in enumerate(names):
            desc = rng.normal(size=(n + i, 128)).astype(np.float32)
            xy = rng.random((n + i, 2)) * 100
            h5io.write_features(fh, name, xy, np.ones(n + i), desc, (100, 100))


def test_names_that_collide_in_hloc_pair_keys_are_refused(tmp_path):
    """'a/b.jpg' and 'a-b.jpg' map to one hloc pair key with 'c.jpg': refuse, name both."""
    feats, out = tmp_path / "f.h5", tmp_path / "m.h5"
    _features(feats, ["a/b.jpg", "a-b.jpg", "c.jpg"])
    result = _run("match", feats, "-o", out, "--exhaustive")
    assert result.exit_code == 1, result.output
    assert "'a/b.jpg'" in result.stderr and "'a-b.jpg'" in result.stderr
    assert "Traceback" not in result.output and not out.exists()
    # Pairs that avoid the clash are fine.
    result = _run("match", feats, "-o", out, "--pairs", _pairs(tmp_path, [("a/b.jpg", "c.jpg")]))
    assert result.exit_code == 0, result.output


def _pairs(tmp_path: Path, pairs: list[tuple[str, str]]) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return path


def test_resume_refuses_a_stored_pair_of_other_names(tmp_path):
    """A matches file whose group 'a-b.jpg/c.jpg' holds ('a/b.jpg', 'c.jpg') is not a match
    of ('a-b.jpg', 'c.jpg')."""
    feats, out = tmp_path / "f.h5", tmp_path / "m.h5"
    _features(feats, ["a/b.jpg", "a-b.jpg", "c.jpg"])
    first = _run("match", feats, "-o", out, "--pairs", _pairs(tmp_path, [("a/b.jpg", "c.jpg")]))
    assert first.exit_code == 0, first.output
    result = _run("match", feats, "-o", out, "--pairs", _pairs(tmp_path, [("a-b.jpg", "c.jpg")]))
    assert result.exit_code == 1, result.output
    assert "'a/b.jpg'" in result.stderr and "'a-b.jpg'" in result.stderr


@pytest.mark.skipif(not HLOC.is_dir(), reason=f"{HLOC} (vendored hloc) not found")
def test_hloc_reader_finds_every_pair_of_nested_names(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HLOC))
    sys.modules.pop("hloc", None)
    from hloc.utils.io import get_matches

    names = ["x/1.jpg", "x/y/2.jpg", "3 ü.jpg", "z.jpg"]
    feats, out = tmp_path / "f.h5", tmp_path / "m.h5"
    _features(feats, names)
    assert _run("match", feats, "-o", out, "--exhaustive").exit_code == 0
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for n0, n1 in ((a, b), (b, a)):
                theirs, _ = get_matches(out, n0, n1)
                ours, _ = h5io.read_match_pairs(out, n0, n1)
                np.testing.assert_array_equal(theirs, ours)


ODD_NAMES = ["my photo 0.jpg", "ü/фото 1.jpg", "new\nline 2.jpg"]


def _odd_named_copies(tmp_path: Path) -> Path:
    source = shared_data("sfm", "fountain-P11", "images")
    folder = tmp_path / "odd"
    for name, src in zip(ODD_NAMES, sorted(source.glob("*.jpg"))[3:6], strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / name)
    return folder


@needs_model
def test_odd_names_extract_match_colmap(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    folder = _odd_named_copies(tmp_path)
    feats, matches, db = tmp_path / "f.h5", tmp_path / "m.h5", tmp_path / "d.db"
    args = ("--max-dim", "640", "--num-keypoints", "2000", "-q")
    assert _run("extract", folder, "-o", feats, *args).exit_code == 0
    assert sorted(h5io.list_names(feats)) == sorted(ODD_NAMES)
    assert _run("match", feats, "-o", matches, "--exhaustive").exit_code == 0
    assert sorted(map(sorted, h5io.list_pairs(matches))) == sorted(
        sorted(p) for p in [ODD_NAMES[:2], ODD_NAMES[1:], ODD_NAMES[::2]]
    )
    result = _run("colmap", feats, matches, "-d", db, "--image-dir", folder)
    assert result.exit_code == 0, result.output
    assert "3 verified pair(s)" in result.stderr
    database = pycolmap.Database.open(db)
    try:
        assert sorted(im.name for im in database.read_all_images()) == sorted(ODD_NAMES)
    finally:
        database.close()


@needs_model
def test_odd_names_reconstruct(tmp_path, caplog):
    pytest.importorskip("pycolmap")
    folder = _odd_named_copies(tmp_path)
    out = tmp_path / "sfm"
    result = _run("reconstruct", folder, "-o", out, "--max-dim", "640", "--num-keypoints", "2000")
    assert result.exit_code == 0, result.output
    assert re.search(r"registered images +3\n", result.stdout), result.stdout
    model = pytest.importorskip("pycolmap").Reconstruction(out / "sparse")
    assert sorted(im.name for im in model.images.values()) == sorted(ODD_NAMES)
    # COLMAP's text format would cut these names at the space: binary only, with a notice.
    assert not (out / "sparse_text").exists() and "text format" in caplog.text
