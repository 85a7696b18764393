"""`aslfeat merge` of --shard files: equal to one run, and refusing shards that do not fit.

Real extraction (shipped ONNX model, onnxruntime float32: deterministic, so a sharded run
and a single run give the same bytes) on the package's sample photos at 160 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from aslfeat_cli.matches_writer import journal_dir
from aslfeat_cli.sample import demo_pairs, write_samples

from .conftest import assert_same_h5

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "weights" / "aslfeat.onnx"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")
FAST = ["--backend", "onnxruntime", "--precision", "fp32", "--max-dim", "160", "-q"]


def _run(*args: str | Path) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _ok(*args: str | Path) -> object:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _fails(*args: str | Path, match: str, code: int = 1) -> str:
    result = _run(*args)
    assert result.exit_code == code, result.output
    message = result.output.strip().splitlines()[-1]
    assert match in message, message
    return message


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample photos, a single-process run and its three --shard files (features, matches)."""
    root = tmp_path_factory.mktemp("merge")
    pairs = demo_pairs(write_samples(root / "images"))
    (root / "pairs.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs))
    _ok("extract", root / "images", "-o", root / "full.h5", *FAST)
    for k in range(3):
        _ok("extract", root / "images", "-o", root / f"part-{k}.h5", "--shard", f"{k}/3", *FAST)
    _ok("match", root / "full.h5", "-o", root / "matches-full.h5", "--pairs", root / "pairs.txt")
    for k in range(2):
        _ok("match", root / "full.h5", "-o", root / f"matches-{k}.h5", "--pairs",
            root / "pairs.txt", "--shard", f"{k}/2", "-q")  # fmt: skip
    return root


def test_merged_features_equal_a_single_run(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.h5"
    result = _ok("merge", *[job / f"part-{k}.h5" for k in range(3)], "-o", out)
    assert "9 image(s) from 3 file(s) merged" in result.output
    assert_same_h5(job / "full.h5", out)
    with h5py.File(out, "r") as fh, h5py.File(job / "part-0.h5", "r") as part:
        assert "shard" not in fh.attrs and part.attrs["shard"] == "0/3"
        assert fh.attrs["model_sha256"] == part.attrs["model_sha256"]
        ids = {fh.attrs["features_id"], part.attrs["features_id"]}
        assert len(ids) == 2  # a new file: a new identity
    sizes = [len(h5io.list_names(job / f"part-{k}.h5")) for k in range(3)]
    assert sum(sizes) == 9 and min(sizes) >= 1


def test_merged_matches_equal_a_single_run(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "matches.h5"
    _ok("merge", job / "matches-0.h5", job / "matches-1.h5", "-o", out)
    assert_same_h5(job / "matches-full.h5", out)
    with h5py.File(out, "r") as fh, h5py.File(job / "full.h5", "r") as features:
        assert fh.attrs["features_id"] == features.attrs["features_id"]
        assert fh.attrs["ratio"] == 0.0 and "shard" not in fh.attrs
    # The merged file is what hloc-style readers see.
    name0, name1 = h5io.list_pairs(out)[0]
    assert np.array_equal(
        h5io.read_matches(out, name0, name1)[0],
        h5io.read_matches(job / "matches-full.h5", name0, name1)[0],
    )


def test_missing_shard_is_refused_unless_partial(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    _fails("merge", job / "part-0.h5", job / "part-2.h5", "-o", out, match="shard(s) 1/3 missing")
    assert not out.exists()
    _ok("merge", job / "part-0.h5", job / "part-2.h5", "-o", out, "--partial", "-q")
    assert len(h5io.list_names(out)) < 9


def test_identical_duplicates_kept_once_conflicts_refused(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    result = _ok("merge", job / "full.h5", job / "part-1.h5", "-o", out)
    assert "identical duplicate(s) kept once" in result.output
    assert_same_h5(job / "full.h5", out)
    # Same name, same settings, other photo: the two shards disagree about that image.
    images = tmp_path / "images"
    shutil.copytree(job / "images", images)
    name = h5io.list_names(job / "part-1.h5")[0]
    other = next(p for p in sorted(images.iterdir()) if p.name != name)
    shutil.copyfile(other, images / name)
    _ok("extract", images, "-o", tmp_path / "other-1.h5", "--shard", "1/3", *FAST)
    _fails(
        "merge", job / "full.h5", tmp_path / "other-1.h5", "-o", tmp_path / "x.h5",
        match=f"conflicting duplicates: image '{name}'"
    )  # fmt: skip
    _fails("merge", job / "part-1.h5", tmp_path / "other-1.h5", "-o", tmp_path / "x.h5",
           "--partial", match="conflicting duplicates")  # fmt: skip
    assert not (tmp_path / "x.h5").exists()


def test_other_settings_or_other_features_are_refused(job: Path, tmp_path: Path) -> None:
    _ok("extract", job / "images", "-o", tmp_path / "few-1.h5", "--shard", "1/3", *FAST,
        "--num-keypoints", "100")  # fmt: skip
    _fails(
        "merge", job / "part-0.h5", tmp_path / "few-1.h5", job / "part-2.h5", "-o",
        tmp_path / "x.h5", match="num_keypoints=5000 (now 100)"
    )  # fmt: skip
    # Matches made from another features file index into other keypoints.
    merged = tmp_path / "features.h5"
    _ok("merge", *[job / f"part-{k}.h5" for k in range(3)], "-o", merged, "-q")
    _ok("match", merged, "-o", tmp_path / "m-1.h5", "--pairs", job / "pairs.txt", "--shard",
        "1/2", "-q")  # fmt: skip
    _fails("merge", job / "matches-0.h5", tmp_path / "m-1.h5", "-o", tmp_path / "x.h5",
           match="different features files")  # fmt: skip
    _fails("merge", job / "full.h5", job / "matches-0.h5", "-o", tmp_path / "x.h5",
           match="cannot merge features")  # fmt: skip
    assert not (tmp_path / "x.h5").exists()


def test_interrupted_shards_are_refused(job: Path, tmp_path: Path) -> None:
    # An image group cut short (a killed extract writes image_size last).
    cut = tmp_path / "cut-1.h5"
    shutil.copyfile(job / "part-1.h5", cut)
    with h5py.File(cut, "a") as fh:
        del fh[h5io.list_names(cut)[0]]["image_size"]
    _fails("merge", job / "part-0.h5", cut, job / "part-2.h5", "-o", tmp_path / "x.h5",
           match="is incomplete (an interrupted run)")  # fmt: skip
    # A matches journal not yet folded in (a killed match).
    killed = tmp_path / "matches-1.h5"
    shutil.copyfile(job / "matches-1.h5", killed)
    journal_dir(killed).mkdir()
    shutil.copyfile(job / "matches-1.h5", journal_dir(killed) / "batch-000000.h5")
    _fails("merge", job / "matches-0.h5", killed, "-o", tmp_path / "x.h5",
           match="its matching was interrupted")  # fmt: skip
    assert not (tmp_path / "x.h5").exists()


def test_output_rules(job: Path, tmp_path: Path) -> None:
    parts = [job / f"part-{k}.h5" for k in range(3)]
    out = tmp_path / "f.h5"
    _ok("merge", parts[0], "-o", out, "--partial", "-q")
    before = out.read_bytes()
    _fails("merge", *parts, "-o", out, match="exists; use --overwrite")
    assert out.read_bytes() == before
    # Adding shards to the output itself keeps its identity (its entries are unchanged).
    with h5py.File(out, "r") as fh:
        identity = fh.attrs["features_id"]
    _ok("merge", out, parts[1], parts[2], "-o", out, "-q")
    with h5py.File(out, "r") as fh:
        assert fh.attrs["features_id"] == identity and len(h5io.list_names(out)) == 9
    _ok("merge", *parts, "-o", out, "--overwrite", "-q")
    with h5py.File(out, "r") as fh:
        assert fh.attrs["features_id"] != identity
    _fails("merge", parts[0], parts[0], "-o", tmp_path / "y.h5", match="given twice")


def test_full_disk_refuses_before_writing(
    job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aslfeat_cli.atomic as atomic

    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1000)
    out = tmp_path / "f.h5"
    _fails("merge", *[job / f"part-{k}.h5" for k in range(3)], "-o", out,
           match="not enough disk space")  # fmt: skip
    assert not out.exists() and not list(tmp_path.glob(".f.h5.*"))


def test_empty_shards_still_count(job: Path, tmp_path: Path) -> None:
    # One image over 8 shards: 7 shards are empty, yet their files record the settings.
    images = tmp_path / "one"
    images.mkdir()
    shutil.copyfile(job / "images" / h5io.list_names(job / "full.h5")[0], images / "a.png")
    for k in range(8):
        _ok("extract", images, "-o", tmp_path / f"e-{k}.h5", "--shard", f"{k}/8", *FAST)
    _ok("merge", *[tmp_path / f"e-{k}.h5" for k in range(8)], "-o", tmp_path / "one.h5", "-q")
    assert h5io.list_names(tmp_path / "one.h5") == ["a.png"]
    for k in range(3):
        _ok("match", tmp_path / "one.h5", "-o", tmp_path / f"em-{k}.h5", "--exhaustive",
            "--shard", f"{k}/3", "-q")  # fmt: skip
    _ok("merge", *[tmp_path / f"em-{k}.h5" for k in range(3)], "-o", tmp_path / "em.h5", "-q")


def test_shard_needs_an_hdf5_output(job: Path, tmp_path: Path) -> None:
    _fails("extract", job / "images", "-o", tmp_path / "x.db", "--shard", "0/2",
           match="Invalid value for --shard: writes HDF5 shards", code=2)  # fmt: skip
