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
