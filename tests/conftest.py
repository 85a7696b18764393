"""Shared fixtures: where the real data lives, and torch availability."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ASLFEAT_SHARED_DATA points elsewhere (tests/test_required_data.py uses it to hide the data).
SHARED_DATA = Path(os.environ.get("ASLFEAT_SHARED_DATA") or ROOT.parent / "shared" / "data")


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/data (real photos, TF reference) is absent")
    return path


def require_shared(*parts: str, reason: str = "a required check") -> Path:
    """Path under ../shared/data for the tests the README calls required (fidelity, SfM).

    Absent data skips the test, except under ``CI=true``, where it fails: CI must not go
    green without the required checks.
    """
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"{path} not found: ../shared/data is absent ({reason})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; required under CI=true", pytrace=False)
        pytest.skip(message)
    return path


def assert_same_h5(a: Path, b: Path) -> None:
    """Two HDF5 files hold the same groups, attributes and datasets, bit for bit."""
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        keys_a: list[str] = []
        keys_b: list[str] = []
        fa.visit(keys_a.append)
        fb.visit(keys_b.append)
        assert sorted(keys_a) == sorted(keys_b)
        for key in keys_a:
            x, y = fa[key], fb[key]
            assert dict(x.attrs) == dict(y.attrs), key
            if isinstance(x, h5py.Dataset):
                assert x.dtype == y.dtype and x.shape == y.shape, key
                assert x[()].tobytes() == y[()].tobytes(), key


def boat_metrics(extractors: dict) -> dict:
    """Homography metrics (``homography_eval``) of each named extractor on boat 1->2, the
    real zoom-and-rotation pair of ../shared/data/pairs (skips without it)."""
    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.hpatches import load_homography_pairs

    pairs = [p for p in load_homography_pairs(shared_data("pairs")) if p.sequence == "boat_1_2"]
    methods = [he.extractor_method(name, ex) for name, ex in extractors.items()]
    return {r.method: r.metrics for r in he.evaluate(pairs, methods, progress=False)}


def extract_option_runs(tmp_path: Path, photo, option: str, bad: str, good: str, other: str):
    """``aslfeat extract`` of one photo (onnxruntime) with ``option bad``, then ``option good``
    (must succeed), then a resume of that output with ``option other``: returns the first
    and last click results and the features file."""
    import cv2
    from click.testing import CliRunner

    from aslfeat_cli.cli import cli

    image, out = tmp_path / "a.png", tmp_path / "f.h5"
    cv2.imwrite(str(image), photo.astype("uint8"))
    runner = CliRunner()
    first = runner.invoke(cli, ["extract", str(image), "-o", str(tmp_path / "x.h5"), option, bad])
    args = ["extract", str(image), "-o", str(out), "-q", "--backend", "onnxruntime", option]
    made = runner.invoke(cli, [*args, good])
    assert made.exit_code == 0, made.output
    return first, runner.invoke(cli, [*args, other]), out
