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
