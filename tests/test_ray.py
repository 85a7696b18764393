"""extract --ray and match --ray on a real local Ray instance (127.0.0.1, this machine's CPUs).

Each command starts its own local instance and stops it at the end, as a user's run does.
Outputs must equal a single-process run byte for byte (onnxruntime float32 is deterministic);
a killed actor is restarted by Ray and the job still completes; an interrupted driver's
parts are resumed by the next run. Without Ray these tests skip, except under ``CI=true``,
where the ray extra is installed and they must run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from .conftest import assert_same_h5

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "weights" / "aslfeat.onnx"

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("Ray is not installed (pip install 'aslfeat[ray]')", allow_module_level=True)

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="weights/aslfeat.onnx not built")
FAST = ["--backend", "onnxruntime", "--precision", "fp32", "--max-dim", "160"]
TIMEOUT = 240  # seconds per command: a hung Ray start must fail the test, not CI


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)  # always a local instance of the test's own
    return env


def _aslfeat(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aslfeat_cli", *map(str, args)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _images(folder: Path, count: int, size: int = 320) -> Path:
    import cv2
    import skimage.data

    base = cv2.resize(skimage.data.astronaut(), (size, size))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.roll(base, 11 * i, axis=1))
    return folder


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    _images(root / "images", 12)
    _aslfeat("-q", "extract", root / "images", "-o", root / "single.h5", *FAST)
    _aslfeat("-q", "match", root / "single.h5", "-o", root / "single-m.h5", "--exhaustive")
    return root


def test_extract_and_match_on_ray_equal_a_single_process_run(job: Path) -> None:
    out = job / "ray.h5"
    done = _aslfeat("extract", job / "images", "-o", out, "--ray", "--ray-actors", "2", *FAST)
    assert "ray: local instance" in done.stderr and "over 2 actor(s)" in done.stderr
    assert "12 image(s) extracted" in done.stderr
    assert_same_h5(job / "single.h5", out)
    assert not (job / "ray.h5.parts").exists()
    with h5py.File(out, "r") as fh:
        assert "shard" not in fh.attrs and fh.attrs["precision"] == "float32"

    matches = job / "ray-m.h5"
    done = _aslfeat("match", job / "single.h5", "-o", matches, "--exhaustive", "--ray")
    assert "66 pair(s) matched" in done.stderr
    assert_same_h5(job / "single-m.h5", matches)
    # A second run has nothing left to do and changes nothing.
    before = matches.read_bytes()
    done = _aslfeat("match", job / "single.h5", "-o", matches, "--exhaustive", "--ray")
    assert "66 already in" in done.stderr and matches.read_bytes() == before


def test_killed_actor_is_restarted_and_the_job_completes(job: Path, tmp_path: Path) -> None:
    images = _images(tmp_path / "images", 40, size=480)
    out = tmp_path / "f.h5"
    cmd = [sys.executable, "-m", "aslfeat_cli", "extract", str(images), "-o", str(out)]
    cmd += ["--ray", "--ray-actors", "2", "--backend", "onnxruntime", "--precision", "fp32"]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "f.h5.parts"
    victim = None
    deadline = time.monotonic() + TIMEOUT
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if not any(_count(p) for p in parts.glob("part-*.h5")):
            continue  # kill only once an actor has written an image
        for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True
        ).stdout.splitlines():
            if "ray::ExtractActor" in line:
                victim = int(line.split()[0])
                os.kill(victim, signal.SIGKILL)
                break
    assert victim is not None, "the run ended before an actor could be killed"
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr[-3000:]
    assert "40 image(s) extracted" in stderr
    single = tmp_path / "single.h5"
    _aslfeat(
        "-q", "extract", images, "-o", single, "--backend", "onnxruntime", "--precision", "fp32"
    )
    assert_same_h5(single, out)


def _count(part: Path) -> int:
    try:  # the actor holds the file: read without HDF5's lock, a torn read counts as none
        with h5py.File(part, "r", locking=False) as fh:
            return sum("image_size" in fh[k] for k in fh)
    except (OSError, KeyError, RuntimeError):
        return 0


def test_interrupted_driver_is_resumed_from_the_parts(job: Path, tmp_path: Path) -> None:
    images = _images(tmp_path / "images", 30, size=480)
    out = tmp_path / "f.h5"
    cmd = [sys.executable, "-m", "aslfeat_cli", "-q", "extract", str(images), "-o", str(out)]
    cmd += ["--ray", "--ray-actors", "2", "--backend", "onnxruntime", "--precision", "fp32"]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "f.h5.parts"
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if sum(_count(p) for p in parts.glob("part-*.h5")) >= 4:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            break
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0, "the run ended before it could be interrupted"
    assert not out.exists() and sum(_count(p) for p in parts.glob("part-*.h5")) >= 4
    done = _aslfeat("extract", images, "-o", out, "--ray", "--ray-actors", "2",
                    "--backend", "onnxruntime", "--precision", "fp32")  # fmt: skip
    n_done = int(done.stderr.split(" already done")[0].rsplit(", ", 1)[-1])
    assert n_done >= 4 and f"{30 - n_done} image(s) extracted" in done.stderr
    single = tmp_path / "single.h5"
    _aslfeat(
        "-q", "extract", images, "-o", single, "--backend", "onnxruntime", "--precision", "fp32"
    )
    assert_same_h5(single, out)


def test_ray_options_need_ray_and_hdf5(job: Path, tmp_path: Path) -> None:
    done = _aslfeat("extract", job / "images", "-o", tmp_path / "x.h5", "--ray-actors", "2",
                    check=False)  # fmt: skip
    assert done.returncode == 2 and "only applies with --ray" in done.stderr
    done = _aslfeat("extract", job / "images", "-o", tmp_path / "x.db", "--ray", check=False)
    assert done.returncode == 2 and "Invalid value for --ray" in done.stderr


def test_failed_images_are_listed_as_without_ray(job: Path, tmp_path: Path) -> None:
    images = _images(tmp_path / "images", 3)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "f.h5"
    done = _aslfeat("extract", images, "-o", out, "--ray", *FAST, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "3 image(s) extracted, 1 FAILED" in done.stderr
    assert "  failed: broken.jpg: " in done.stderr
    assert "1 of 4 image(s) failed (listed above)" in done.stderr
    assert sorted(h5py.File(out, "r")) == ["000.jpg", "001.jpg", "002.jpg"]
