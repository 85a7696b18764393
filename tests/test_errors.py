"""Bad input and unusable outputs give one line and a non-zero exit in every command (as in
`extract`), never a traceback; comments, duplicates and self pairs are handled as such."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from aslfeat_cli.extraction import find_images
from tests.test_extract import ROOT, _samples, _write, needs_model

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _run(*args: str | Path):  # noqa: ANN202
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, *words: str, code: int = 1) -> None:  # noqa: ANN001
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.stderr
    for word in words:
        assert word in error[0], error[0]


@pytest.fixture()
def feats(tmp_path: Path) -> Path:
    """A features file of three images (random unit descriptors) and their image files."""
    path = tmp_path / "f.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as fh:
        for name in ("a.png", "b.png", "c.png"):
            desc = rng.normal(size=(300, 128)).astype(np.float32)
            desc /= np.linalg.norm(desc, axis=1, keepdims=True)
            xy = rng.random((300, 2)) * 60
            h5io.write_features(fh, name, xy, np.ones(300), desc, (64, 64))
            _write(tmp_path / "img" / name, np.full((64, 64), 100, np.uint8))
    return path


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("command", ["pairs", "match", "show", "colmap"])
def test_output_behind_a_file_in_the_way(feats, tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    if command == "pairs":
        args = ["pairs", feats, "-o", blocker / "p.txt", "--exhaustive"]
    elif command == "match":
        args = ["match", feats, "-o", blocker / "m.h5", "--exhaustive"]
    elif command == "show":
        args = ["show", feats, "--images", tmp_path / "img", "-o", blocker / "pictures"]
    else:
        pytest.importorskip("pycolmap")
        assert _run("match", feats, "-o", tmp_path / "m.h5", "--exhaustive").exit_code == 0
        args = ["colmap", feats, tmp_path / "m.h5", "-d", blocker / "d.db", "--skip-verification"]
    _one_line_error(_run(*args), str(blocker))
    assert blocker.read_text() == "not a folder"


def test_reconstruct_output_behind_a_file_in_the_way(tmp_path):
    pytest.importorskip("pycolmap")
    for name in ("a.png", "b.png"):
        _write(tmp_path / "img" / name, _samples()["camera.png"])
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    _one_line_error(_run("reconstruct", tmp_path / "img", "-o", blocker / "sfm"), str(blocker))
    # An existing file as the folder: click's own check (usage error, status 2).
    _one_line_error(_run("reconstruct", tmp_path / "img", "-o", blocker), str(blocker), code=2)


def test_pairs_output_is_a_folder(feats, tmp_path):
    args = ("pairs", feats, "-o", tmp_path, "--exhaustive")
    _one_line_error(_run(*args), str(tmp_path), code=2)  # click's own check


def _as_nobody(base: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """Run aslfeat as user nobody (root writes into read-only folders; nobody does not)."""
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    command += [sys.executable, "-m", "aslfeat_cli", *map(str, args)]
    env = dict(os.environ, HOME=str(base), PYTHONPATH=str(ROOT))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", ["pairs", "match", "show"])
def test_read_only_output_folder(feats, tmp_path, command):
    import shutil
    import tempfile

    if IS_ROOT and not shutil.which("setpriv"):
        pytest.skip("root writes into read-only folders, and setpriv is missing to drop it")
    # As root the command runs as nobody, from a folder nobody can read (pytest's is 0700).
    base = Path(tempfile.mkdtemp(prefix="aslfeat-ro-")) if IS_ROOT else tmp_path
    try:
        if IS_ROOT:
            base.chmod(0o755)
            shutil.copyfile(feats, base / "f.h5")
            shutil.copytree(tmp_path / "img", base / "img")
            feats = base / "f.h5"
        folder = base / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        if command == "pairs":
            args = ["pairs", feats, "-o", folder / "p.txt", "--exhaustive"]
        elif command == "match":
            args = ["match", feats, "-o", folder / "m.h5", "--exhaustive"]
        else:
            args = ["show", feats, "--images", base / "img", "-o", folder / "pictures"]
        if not IS_ROOT:
            _one_line_error(_run(*args), str(folder))
            return
        done = _as_nobody(base, *args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and str(folder) in errors[0], done.stderr
        assert not any(folder.iterdir())
    finally:
        if (base / "ro").exists():
            (base / "ro").chmod(0o700)
        if IS_ROOT:
            shutil.rmtree(base)


# --------------------------------------------------------------------------- inputs


def test_binary_pairs_file(feats, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(b"\x00\xff\xfe\x01binary\x89")
    _one_line_error(_run("match", feats, "-o", tmp_path / "m.h5", "--pairs", pairs), str(pairs))
    assert not (tmp_path / "m.h5").exists()


def test_pairs_of_an_image_file(tmp_path):
    image = _write(tmp_path / "photo.jpg", _samples()["camera.png"])
    _one_line_error(_run("pairs", image, "-o", tmp_path / "p.txt", "--exhaustive"), str(image))


def test_pairs_drop_duplicates_and_self_pairs(tmp_path):
    names = tmp_path / "list.txt"
    names.write_text("a.jpg\nb.jpg\na.jpg\n  # an indented comment\nc.jpg\n")
    out = tmp_path / "p.txt"
    assert _run("pairs", names, "-o", out, "--exhaustive").exit_code == 0
    assert out.read_text().splitlines() == ["a.jpg b.jpg", "a.jpg c.jpg", "b.jpg c.jpg"]


def test_indented_comment_in_image_list(tmp_path):
    _write(tmp_path / "a.png", _samples()["camera.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\n   # not an image\n\t# nor this\n")
    assert [name for _, name in find_images([], listing)] == ["a.png"]


def _damage(path: Path, offset: int, seed: int = 1) -> Path:
    data = bytearray(path.read_bytes())
    data[offset : offset + 200] = (
        np.random.default_rng(seed).integers(0, 256, 200, np.uint8).tobytes()
    )
    damaged = path.with_name(f"damaged{offset}.h5")
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize("offset", [800, 1400])
@pytest.mark.parametrize("command", ["match", "pairs", "show", "colmap"])
def test_features_file_with_damaged_bytes(feats, tmp_path, offset, command):
    damaged = _damage(feats, offset)
    args = {
        "match": ["match", damaged, "-o", tmp_path / "m.h5", "--exhaustive"],
        "pairs": ["pairs", damaged, "-o", tmp_path / "p.txt", "--exhaustive"],
        "show": ["show", damaged, "--images", tmp_path / "img", "-o", tmp_path / "pictures"],
        "colmap": ["colmap", damaged, feats, "-d", tmp_path / "d.db"],
    }[command]
    _one_line_error(_run(*args), str(damaged))


def test_random_bytes_in_descriptors_are_detected(feats, tmp_path):
    with h5py.File(feats, "a") as fh:
        ds = fh["b.png/descriptors"]
        raw = np.random.default_rng(2).integers(0, 256, ds.size * 4, np.uint8)
        ds[...] = raw.view(np.float32).reshape(ds.shape)
    with _no_warnings():
        result = _run("match", feats, "-o", tmp_path / "m.h5", "--exhaustive")
    _one_line_error(result, "b.png", "descriptors")


class _no_warnings:  # noqa: N801 (used as a context manager)
    """Fail on any warning (numpy's overflow RuntimeWarning) inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height grey pixels (its data is cut short)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@needs_model
def test_huge_png_gets_our_message(tmp_path):
    (tmp_path / "huge.png").write_bytes(_png_header(60000, 60000))
    _write(tmp_path / "ok.png", _samples()["camera.png"])
    result = _run("extract", tmp_path, "-o", tmp_path / "f.h5", "-q")
    assert result.exit_code == 1
    assert "failed: huge.png: " in result.stderr and "Assertion" not in result.stderr
    assert "60000x60000" in result.stderr  # the header check names the declared size
    assert h5io.list_names(tmp_path / "f.h5") == ["ok.png"]


@needs_model
def test_each_failed_image_is_printed_once(tmp_path):
    images = tmp_path / "images"
    _write(images / "ok.png", _samples()["camera.png"])
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "aslfeat_cli", "extract", str(images), "-o", str(tmp_path / "f.h5")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("corrupt.png") == 1, proc.stderr


# --------------------------------------------------------------------------- model contract


def _model_with_wrong_outputs(path: Path) -> Path:
    """Valid aslfeat metadata, but score_map is (1, 1, H, W) and descriptors are 8-wide."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, "H", "W"])
    score = helper.make_tensor_value_info("score_map", TensorProto.FLOAT, None)
    desc = helper.make_tensor_value_info("descriptor_map", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Identity", ["image"], ["score_map"]),
        helper.make_node("Identity", ["image"], ["descriptor_map"]),
    ]
    graph = helper.make_graph(nodes, "wrong", [image], [score, desc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {
        "variant": "u",
        "descriptor_dim": "128",
        "descriptor_stride": "4",
        "min_size": "16",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)
    return path


def test_model_with_wrong_output_shapes_is_refused_at_load(tmp_path):
    model = _model_with_wrong_outputs(tmp_path / "wrong.onnx")
    for name in ("a.png", "b.png", "c.png"):
        _write(tmp_path / "img" / name, _samples()["camera.png"])
    result = _run(
        "extract", tmp_path / "img", "-o", tmp_path / "f.h5", "--model", model,
        "--backend", "onnxruntime",  # OpenVINO's graph pass refuses this DeformConv-less toy
    )  # fmt: skip
    _one_line_error(result, str(model), "score_map")
    assert "failed:" not in result.stderr  # refused once at load, not once per image
