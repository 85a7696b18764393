"""`aslfeat match` survives kill -9, SIGTERM and a full disk: nothing written before is lost.

Each test runs the real command in a subprocess on random unit descriptors (40 images of 1,000
keypoints, 780 exhaustive pairs, about 2 s per full run on an idle 2-core machine), interrupts
it, opens the matches file with h5py, compares every pair with an uninterrupted reference run
and lets a re-run finish the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from aslfeat_cli import h5io
from aslfeat_cli.matches_writer import journal_dir
from aslfeat_cli.matching import normalize
from aslfeat_cli.pairs import exhaustive, write_pairs

N_IMAGES, N_KEYPOINTS = 40, 1000
NAMES = [f"img{i:02d}.jpg" for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A features file, the first 100 pairs as a pairs file, and the reference matches."""
    tmp = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(0)
    features = tmp / "features.h5"
    with h5py.File(features, "w") as fh:
        for name in NAMES:
            kp = rng.uniform(0, 640, (N_KEYPOINTS, 2)).astype(np.float32)
            desc = normalize(rng.standard_normal((N_KEYPOINTS, 128)))
            h5io.write_features(fh, name, kp, np.ones(N_KEYPOINTS), desc, (640, 480))
    pairs = exhaustive(NAMES)
    first = tmp / "first.txt"
    write_pairs(first, pairs[:100])
    reference = tmp / "reference.h5"
    # In a subprocess like every run of this file: an in-process match after the torch and
    # OpenVINO tests crashed the whole CI pytest process once (SIGSEGV, no traceback).
    code, err = _finish(_match(features, reference, "--exhaustive", "-q"))
    assert code == 0, err
    ref = {p: h5io.read_matches(reference, *p)[0] for p in pairs}
    return {"features": features, "first": first, "pairs": pairs, "ref": ref}


def _match(features: Path, output: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "aslfeat_cli", "match", str(features), "-o", str(output)]
    return subprocess.Popen(
        command + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _assert_intact(output: Path, data: dict, at_least: int) -> int:
    """The file opens; every pair in it equals the reference. Returns the pair count."""
    with h5py.File(output, "r") as fh:  # 'bad object header version number' on old code
        stored = [p for p in data["pairs"] if h5io.has_pair(fh, *p)]
        for pair in stored:
            np.testing.assert_array_equal(h5io.read_matches(fh, *pair)[0], data["ref"][pair])
    assert len(stored) >= at_least
    return len(stored)


def _interrupt_when_writing(proc: subprocess.Popen, output: Path, sig: int) -> None:
    """Send ``sig`` once the run has committed pairs (a journal batch, or on code without a
    journal, the matches file being written), while it is still matching."""
    journal = journal_dir(output)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(journal.glob("batch-*.h5")) or (output.exists() and not journal.exists()):
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)


SIGNALS = pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"]
)


@SIGNALS
def test_match_killed_in_a_new_file_resumes(tmp_path: Path, data: dict, sig) -> None:
    output = tmp_path / "matches.h5"
    proc = _match(data["features"], output, "--exhaustive")
    _interrupt_when_writing(proc, output, sig)
    code, err = _finish(proc)
    assert code != 0
    if output.exists():
        _assert_intact(output, data, at_least=0)
    code, err = _finish(_match(data["features"], output, "--exhaustive"))
    assert code == 0, err
    assert "Traceback" not in err
    assert "already in" in err  # pairs committed before the kill were kept, not redone
    assert _assert_intact(output, data, at_least=len(data["pairs"])) == len(data["pairs"])
    assert not journal_dir(output).exists()


@SIGNALS
def test_match_killed_while_resuming_keeps_every_pair(tmp_path: Path, data: dict, sig) -> None:
    output = tmp_path / "matches.h5"
    code, err = _finish(_match(data["features"], output, "--pairs", str(data["first"])))
    assert code == 0, err
    proc = _match(data["features"], output, "--exhaustive")
    _interrupt_when_writing(proc, output, sig)
    code, err = _finish(proc)
    assert code != 0
    _assert_intact(output, data, at_least=100)
    code, err = _finish(_match(data["features"], output, "--exhaustive"))
    assert code == 0, err
    assert _assert_intact(output, data, at_least=len(data["pairs"])) == len(data["pairs"])


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a small tmpfs for the disk-full case needs root (mount)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no privileges for mount)")


def test_disk_full_during_match_is_one_line_and_resumes(tmp_path: Path, data: dict) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "3M")  # the full matches file needs about 7 MB, 100 pairs 0.9 MB
    try:
        output = disk / "matches.h5"
        code, err = _finish(_match(data["features"], output, "--pairs", str(data["first"])))
        assert code == 0, err
        code, err = _finish(_match(data["features"], output, "--exhaustive"))
        assert code == 1
        assert "Traceback" not in err and "Error:" in err, err
        kept = _assert_intact(output, data, at_least=100)
        subprocess.run(["mount", "-o", "remount,size=64M", str(disk)], check=True)
        code, err = _finish(_match(data["features"], output, "--exhaustive"))
        assert code == 0, err
        assert f"{kept} already in" in err or kept == 100
        assert _assert_intact(output, data, at_least=len(data["pairs"])) == len(data["pairs"])
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_two_match_runs_on_one_output_the_second_is_refused(tmp_path: Path, data: dict) -> None:
    output = tmp_path / "matches.h5"
    first = _match(data["features"], output, "--exhaustive")
    deadline = time.monotonic() + 120
    while not journal_dir(output).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None
    code, err = _finish(_match(data["features"], output, "--exhaustive"))
    assert code == 1 and "Traceback" not in err
    assert "another" in err, err
    code, err = _finish(first)
    assert code == 0, err
    assert _assert_intact(output, data, at_least=len(data["pairs"])) == len(data["pairs"])
