"""`aslfeat convert` and `aslfeat export` through the command line, on the TF reference files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch", reason="the export extra (PyTorch) is not installed")

from aslfeat_cli.cli import cli  # noqa: E402
from aslfeat_export.convert import load_weights  # noqa: E402

from .conftest import shared_data  # noqa: E402


@pytest.mark.parametrize("variant", ["u", "a", "h", "plain"])
def test_convert_detects_variant_and_round_trips(tmp_path, variant):
    folder = shared_data("tf_reference", variant)
    out = tmp_path / f"{variant}.pt"
    result = CliRunner().invoke(cli, ["convert", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    model = load_weights(out)
    assert model.variant == variant
    ref = np.load(folder / "reference_activations.npz")
    image = torch.from_numpy(ref["odd_61x83/input"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        score_map, _ = model(image)
    want = ref["odd_61x83/score_map"][0, ..., 0]
    assert np.abs(score_map.numpy() - want).max() / np.abs(want).max() < 1e-4


def test_convert_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "w.pt")])
    assert missing.exit_code == 1 and "Error:" in missing.output
    # A checkpoint without the ASLFeat layers: copy one and break its name set is hard; instead
    # an empty folder has no checkpoint at all.
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(cli, ["convert", str(tmp_path / "empty"), "-o", str(tmp_path / "w.pt")])
    assert empty.exit_code == 1
    assert len(empty.output.strip().splitlines()) == 1


def test_export_rejects_non_weight_file(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a weight file")
    result = CliRunner().invoke(cli, ["export", str(bogus), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "not an aslfeat weight file" in result.output


def test_export_command_writes_checked_model(tmp_path):
    folder = shared_data("tf_reference", "plain")
    src = tmp_path / "ckpt"
    shutil.copytree(folder, src)
    runner = CliRunner()
    assert runner.invoke(cli, ["convert", str(src), "-o", str(tmp_path / "p.pt")]).exit_code == 0
    result = runner.invoke(cli, ["export", str(tmp_path / "p.pt"), "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    assert "matches PyTorch" in result.output
    assert (tmp_path / "p.onnx").stat().st_size > 1_000_000
