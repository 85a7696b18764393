"""The package installs like a real one: a built wheel holds every module and the model.

The full check (a fresh virtual environment, the wheel installed without -e, ``aslfeat info``
and ``aslfeat extract`` run from it) is ``make check-wheel``, which ``.ci/run`` runs after the
test suite; here the wheel's contents are checked quickly.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from .conftest import ROOT

# Folders of the checkout that are not part of the source distribution.
_NOT_SOURCE = (".venv", ".git", "build", "dist", "out", "runs", ".pytest_cache", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the checkout (the tree itself stays untouched)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE, "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp / "dist"), str(source)],
        check=True,
        timeout=300,
    )
    (built,) = (tmp / "dist").glob("aslfeat-*.whl")
    with zipfile.ZipFile(built) as zf:
        yield zf


def test_wheel_holds_every_subpackage(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in ("cli.py", "extract.py", "match.py", "info.py", "_options.py"):
        prefix = "aslfeat_cli/" if module == "cli.py" else "aslfeat_cli/commands/"
        assert prefix + module in names
    assert "aslfeat_export/model.py" in names
    assert "aslfeat_training/train.py" in names
    assert not any(n.startswith(("tests/", "export/", "training/", "weights/")) for n in names)


def test_wheel_ships_the_model_as_package_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "aslfeat_cli/weights/aslfeat.onnx" in names
    assert "aslfeat_cli/weights/README.md" in names
    assert "aslfeat_cli/weights/aslfeat.pt" not in names  # torch weights stay in the repo
    assert not any(".data/data/share" in n for n in names)  # no data_files under share/
    shipped = wheel.read("aslfeat_cli/weights/aslfeat.onnx")
    assert shipped == (ROOT / "weights" / "aslfeat.onnx").read_bytes()
