"""Peak memory of `aslfeat extract`, with the default pixel cap and without it.

Each run is its own `aslfeat extract` process on a folder of --copies copies of one photo
(boat from ../shared/data, else scikit-image's camera, resized to the size; 3 by default: on
OpenVINO the pipeline runs two images at once, and one photo would leave the second lane
unused), under an address-space limit so that nothing can
take the machine down; its peak resident memory comes from wait4(). "capped" is the default
(images above 2 MP downscaled to 2 MP for the network); "uncapped" passes --max-dim 100000.
Uncapped runs whose estimate (images.memory_estimate) exceeds --max-gb are not run.

    python benchmarks/bench_memory.py [--max-gb 4] [--sizes 640x480,1024x768,4000x3000]
        [--copies 3] [-- extra extract options, e.g. --backend onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "pairs" / "boat_1_2" / "A.png"


def write_photo(path: Path, width: int, height: int) -> None:
    if PHOTO.exists():
        image = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE)
    else:
        from skimage import data

        image = data.camera()
    cv2.imwrite(str(path), cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC))


def run(image: Path, out: Path, extra: list[str], limit_bytes: int) -> tuple[float, float, str]:
    """(peak MiB, seconds, status) of one `aslfeat extract` process."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    command = [sys.executable, "-m", "aslfeat_cli", "-q", "extract", str(image), "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(command + extra + ["--overwrite"], preexec_fn=limit)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, seconds, "ok" if code == 0 else f"exit {code}"


def main() -> None:
    from aslfeat_cli.extraction import network_size
    from aslfeat_cli.images import memory_estimate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640x480,1024x768,4000x3000")
    parser.add_argument("--max-gb", type=float, default=4.0, help="skip runs estimated above")
    parser.add_argument("--copies", type=int, default=3, help="images per run")
    parser.add_argument("extract_options", nargs="*", help="passed to every aslfeat extract")
    args = parser.parse_args()
    # Address space runs well above resident memory with onnxruntime: 2x plus headroom.
    limit = int((2 * args.max_gb + 2) * 2**30)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor()}")
    print(f"# load average {os.getloadavg()}, cpu {_cpu_model()}, {args.copies} image(s) per run")
    print(f"# extract options: {' '.join(args.extract_options) or '(defaults)'}")
    print("| image | rule | network input | peak MiB | MiB per network MP | s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            image = Path(tmp) / f"photos_{width}x{height}"
            image.mkdir()
            write_photo(image / "0.png", width, height)
            for k in range(1, args.copies):
                (image / f"{k}.png").write_bytes((image / "0.png").read_bytes())
            for rule, extra, max_dim in (
                ("capped (default)", [], None),
                ("uncapped", ["--max-dim", "100000"], 100000),
            ):
                w, h = network_size(width, height, max_dim)
                estimate = memory_estimate((w, h))
                if estimate > args.max_gb * 2**30:
                    print(
                        f"| {width}x{height} | {rule} | {w}x{h} | not run "
                        f"(estimate {estimate / 2**30:.1f} GB > --max-gb) | | |"
                    )
                    continue
                peak, seconds, status = run(
                    image, Path(tmp) / "f.h5", extra + args.extract_options, limit
                )
                per_mp = peak / (w * h / 1e6)
                note = "" if status == "ok" else f" ({status})"
                print(
                    f"| {width}x{height} | {rule} | {w}x{h} | {peak:.0f}{note} | {per_mp:.0f} "
                    f"| {seconds:.1f} |",
                    flush=True,
                )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
