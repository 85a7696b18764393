"""Ray's overhead: `aslfeat extract --ray` (A actors x 1 thread) vs one process (2 threads).

Same photos (BSDS500 from ../shared/data resized to 640x480, or the package's sample photos
when the data is absent), same default backend and precision, each configuration a fresh
command in its own process and a fresh output, interleaved, --repeat times. Reported per
configuration, medians over the repeats:

* wall: the whole command (Python start, Ray start, model loads, extraction, merge);
* Ray start: from the command's own line (``ray: local instance ... (x s to start)``);
* images/s: its summary line's rate (the whole ``run_extraction``/``ray_extract`` call);
* steady images/s: images over (wall - start-up), where start-up is the wall time of the
  same command on 2 images (Python, Ray, model loads, merge: what does not scale);
* peak memory: the largest resident set of the single process, of any one Ray actor and
  of the Ray driver, sampled every 0.1 s with ``ps``.

Goal (issue 15): steady Ray images/s >= 0.9x the single process's. Prints a markdown table,
the date and the load average.

    python benchmarks/bench_ray.py [--images 48] [--repeat 3] [--actors 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "train" / "bsds500"


def _write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(PHOTOS.glob("*.jpg"))[:count] if PHOTOS.is_dir() else []
    if not sources:
        from aslfeat_cli.sample import write_samples

        sources = write_samples(folder / "_sample")
    for i in range(count):
        image = cv2.imread(str(sources[i % len(sources)]))
        image = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


class _PeakRSS(threading.Thread):
    """Largest RSS (MiB) of the process tree, by role, sampled with ps."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.stop, self.peak = root_pid, threading.Event(), {}

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-eo", "pid,rss,args"], capture_output=True, text=True)
            for line in out.stdout.splitlines()[1:]:
                pid, rss, args = line.split(None, 2)
                if "ray::ExtractActor" in args:
                    role = "actor"
                elif int(pid) == self.root_pid:
                    role = "command"
                else:
                    continue
                self.peak[role] = max(self.peak.get(role, 0), int(rss) / 1024)
            time.sleep(0.1)


def _run(args: list[str]) -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aslfeat_cli", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    sampler = _PeakRSS(proc.pid)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"aslfeat {' '.join(args)} failed:\n{stderr[-2000:]}")
    rate = re.search(r"\(([\d.]+) images/s\)", stderr)
    ray_start = re.search(r"\(([\d.]+) s to start\)", stderr)
    return {
        "wall": wall,
        "rate": float(rate.group(1)) if rate else float("nan"),
        "ray_start": float(ray_start.group(1)) if ray_start else None,
        **{f"rss_{k}": v for k, v in sampler.peak.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()

    configs = {
        "one process, 2 threads": [],
        f"--ray, {args.actors} actors x 1 thread": [
            "--ray",
            "--ray-actors",
            str(args.actors),
            "--ray-threads",
            "1",
            "--workers",
            "1",
        ],  # fmt: skip
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    startup: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        folder, small = Path(tmp) / "images", Path(tmp) / "two"
        _write_images(folder, args.images)
        _write_images(small, 2)
        load_before = os.getloadavg()
        for r in range(args.repeat):
            for i, (name, extra) in enumerate(configs.items()):
                out = Path(tmp) / f"out-{r}-{i}.h5"
                results[name].append(_run(["extract", str(folder), "-o", str(out), *extra]))
                out2 = Path(tmp) / f"small-{r}-{i}.h5"
                startup[name].append(_run(["extract", str(small), "-o", str(out2), *extra])["wall"])
        load_after = os.getloadavg()

    def med(name: str, key: str) -> float | None:
        values = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(values) if values else None

    from bench_model import cpu_name  # this folder is on sys.path when run as a script

    print(f"# bench_ray: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name()}, "
          f"{args.images} images 640x480, medians of {args.repeat}; "
          f"load {load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
    print()
    print("| configuration | wall s | Ray start s | start-up s (2 images) | images/s (summary) "
          "| steady images/s | vs one process | peak MiB: command / per actor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name in configs:
        wall, up = med(name, "wall"), statistics.median(startup[name])
        steady = (args.images - 2) / max(wall - up, 1e-9)
        base = base or steady
        ray_start = med(name, "ray_start")
        actor = med(name, "rss_actor")
        print(
            f"| {name} | {wall:.1f} | {ray_start if ray_start is None else f'{ray_start:.1f}'} "
            f"| {up:.1f} | {med(name, 'rate'):.2f} | {steady:.2f} | {steady / base:.2f}x "
            f"| {med(name, 'rss_command'):.0f} / {'-' if actor is None else f'{actor:.0f}'} |"
        )


if __name__ == "__main__":
    main()
