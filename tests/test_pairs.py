"""Pair generation, pairs files and their bad inputs; the `aslfeat pairs` command."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io, pairs
from aslfeat_cli.cli import cli
from aslfeat_cli.errors import UserError


def test_exhaustive():
    got = pairs.exhaustive(["a", "b", "c", "d"])
    assert len(got) == 6 and ("a", "d") in got and ("d", "a") not in got


def test_sequential_window_and_loop_stride():
    names = [f"f{i}.jpg" for i in range(10)]
    got = pairs.sequential(names, overlap=2)
    assert len(got) == 9 + 8
    assert ("f0.jpg", "f2.jpg") in got and ("f0.jpg", "f3.jpg") not in got
    loops = set(pairs.sequential(names, overlap=2, loop_stride=3)) - set(got)
    # key frames 0, 3, 6, 9: all their pairs farther apart than the window
    assert loops == {
        ("f0.jpg", "f3.jpg"),
        ("f0.jpg", "f6.jpg"),
        ("f0.jpg", "f9.jpg"),
        ("f3.jpg", "f6.jpg"),
        ("f3.jpg", "f9.jpg"),
        ("f6.jpg", "f9.jpg"),
    }


def test_make_pairs_natural_order_and_mode_errors():
    got = pairs.make_pairs(["f10.jpg", "f2.jpg", "f1.jpg"], sequential_overlap=1)
    assert got == [("f1.jpg", "f2.jpg"), ("f2.jpg", "f10.jpg")]
    with pytest.raises(UserError, match="exactly one"):
        pairs.make_pairs(["a", "b"], exhaustive_mode=True, sequential_overlap=2)
    with pytest.raises(UserError, match="exactly one"):
        pairs.make_pairs(["a", "b"])
    with pytest.raises(UserError, match="loop-stride"):
        pairs.make_pairs(["a", "b"], exhaustive_mode=True, loop_stride=3)


def test_read_pairs_comments_and_malformed_line(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("# header\n\na.jpg b.jpg\nc.jpg d.jpg 0.93\n")
    assert pairs.read_pairs(path) == [("a.jpg", "b.jpg"), ("c.jpg", "d.jpg")]
    path.write_text("a.jpg b.jpg\nlonely.jpg\n")
    with pytest.raises(UserError, match=r"pairs.txt:2: expected 'name0 name1'"):
        pairs.read_pairs(path)
    with pytest.raises(UserError, match="no such pairs file"):
        pairs.read_pairs(tmp_path / "missing.txt")


def test_clean_pairs_drops_self_and_duplicates(caplog):
    with caplog.at_level(logging.WARNING, logger="aslfeat_cli.pairs"):
        got = pairs.clean_pairs([("a", "b"), ("b", "a"), ("a", "a"), ("a", "b"), ("b", "c")])
    assert got == [("a", "b"), ("b", "c")]
    assert "1 pair(s) of an image with itself" in caplog.text
    assert "2 duplicate pair(s)" in caplog.text


def test_clean_pairs_missing_names():
    with pytest.raises(UserError, match=r"2 image\(s\) named in the pairs have no features"):
        pairs.clean_pairs([("a", "x"), ("y", "a")], available=["a", "b"])


def test_write_pairs_refuses_names_with_spaces(tmp_path):
    with pytest.raises(UserError, match="spaces"):
        pairs.write_pairs(tmp_path / "p.txt", [("my photo.jpg", "b.jpg")])


def test_pairs_command_from_features_and_list(tmp_path):
    feats = tmp_path / "f.h5"
    with h5py.File(feats, "w") as fh:
        for i in range(5):
            h5io.write_features(
                fh, f"img{i}.jpg", np.zeros((1, 2)), np.ones(1), np.ones((1, 4)), (10, 10)
            )
    out = tmp_path / "pairs.txt"
    result = CliRunner().invoke(cli, ["pairs", str(feats), "-o", str(out), "--exhaustive"])
    assert result.exit_code == 0, result.output
    assert len(pairs.read_pairs(out)) == 10
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"frame{i}.png" for i in range(12, 0, -1)) + "\n")
    result = CliRunner().invoke(cli, ["pairs", str(listing), "-o", str(out), "--sequential", "1"])
    assert result.exit_code == 0, result.output
    assert pairs.read_pairs(out)[:2] == [("frame1.png", "frame2.png"), ("frame2.png", "frame3.png")]
    result = CliRunner().invoke(cli, ["pairs", str(listing), "-o", str(out)])
    assert result.exit_code == 1 and "exactly one" in result.output
