"""Under CI=true the required checks (fidelity, SfM) fail when ../shared/data is absent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, require_shared


def test_require_shared_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_shared("no such folder")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        require_shared("no such folder")


def test_fidelity_and_sfm_tests_fail_under_ci_without_the_data(tmp_path) -> None:
    env = {**os.environ, "CI": "true", "ASLFEAT_SHARED_DATA": str(tmp_path / "absent")}
    tests = ["tests/test_fidelity.py::test_real_photo", "tests/test_reconstruct.py"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "fountain or real_photo",
        ]
        + tests,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "required under CI=true" in run.stdout
    summary = run.stdout.splitlines()[-1]
    assert "failed" in summary and "skipped" not in summary and "passed" not in summary
