"""Model speed: PyTorch eager vs onnxruntime (DeformConv) vs onnxruntime (GridSample).

Median milliseconds per image (network + keypoint selection, 5000 keypoints) and peak resident
memory, at 640x480 and 1024x768 on a real photo, all measured in one run. Each configuration
runs in its own process so that peak memory is its own. Needs the export extra (torch).

    python benchmarks/bench_model.py [--weights weights/aslfeat.pt] [--runs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "pairs" / "boat_1_2" / "A.png"
SIZES = [(480, 640), (768, 1024)]


def load_photo(size: tuple[int, int]) -> np.ndarray:
    if PHOTO.exists():
        image = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE)
    else:
        from skimage import data

        image = data.camera()
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def worker(args: argparse.Namespace) -> None:
    """Time one backend at one size; print a JSON line."""
    image = load_photo(tuple(args.size))
    if args.backend == "torch":
        import torch

        from aslfeat_cli.keypoints import DetectionConfig, select_keypoints
        from aslfeat_export.convert import load_weights

        torch.set_num_threads(args.threads)
        model = load_weights(args.weights)
        x = torch.from_numpy(image).float()[None, None]

        def run() -> int:
            with torch.no_grad():
                s, d = model(x)
            return len(select_keypoints(s.numpy(), d.numpy(), DetectionConfig())[0])
    else:
        from aslfeat_cli.extractor import Extractor

        ex = Extractor(args.onnx, device="cpu", threads=args.threads)

        def run() -> int:
            return len(ex.extract(image))

    run()  # warm-up
    times, n = [], 0
    for _ in range(args.runs):
        t = time.perf_counter()
        n = run()
        times.append(time.perf_counter() - t)
    select_ms = None
    if args.backend != "torch":
        from aslfeat_cli.keypoints import select_keypoints

        s, d = ex.session.run(image.astype(np.float32))
        t = time.perf_counter()
        for _ in range(args.runs):
            select_keypoints(s, d, ex.config)
        select_ms = 1000 * (time.perf_counter() - t) / args.runs
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "ms": 1000 * statistics.median(times),
                "peak_mb": peak_mb,
                "keypoints": n,
                "select_ms": select_ms,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "aslfeat.pt")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        worker(args)
        return

    from aslfeat_export.export_onnx import export_weights

    tmp = Path(tempfile.mkdtemp())
    onnx = {
        impl: export_weights(args.weights, tmp / f"{impl}.onnx", impl)
        for impl in ("deformconv", "gridsample")
    }
    backends = [
        ("PyTorch eager (grid_sample DCN)", "torch", None),
        ("onnxruntime, DeformConv", "ort", onnx["deformconv"]),
        ("onnxruntime, GridSample", "ort", onnx["gridsample"]),
    ]
    results = {}
    for size in SIZES:
        for label, backend, path in backends:
            cmd = [
                sys.executable,
                __file__,
                "--backend",
                backend,
                "--size",
                *map(str, size),
                "--runs",
                str(args.runs),
                "--threads",
                str(args.threads),
                "--weights",
                str(args.weights),
            ]
            if path:
                cmd += ["--onnx", str(path)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
            results[label, size] = json.loads(out.stdout.strip().splitlines()[-1])

    head = "| graph | " + " | ".join(f"{w}x{h} ms | peak MB" for h, w in SIZES) + " |"
    print(head)
    print("|---" * (1 + 2 * len(SIZES)) + "|")
    for label, _, _ in backends:
        cells = []
        for size in SIZES:
            r = results[label, size]
            cells += [f"{r['ms']:.0f}", f"{r['peak_mb']:.0f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    torch_ms = [results[backends[0][0], s]["ms"] for s in SIZES]
    dc_ms = [results[backends[1][0], s]["ms"] for s in SIZES]
    ratios = ", ".join(
        f"{w}x{h}: {t / d:.2f}x" for (h, w), t, d in zip(SIZES, torch_ms, dc_ms, strict=True)
    )
    print(f"\nonnxruntime DeformConv speed-up over PyTorch eager: {ratios}")
    sel = ", ".join(
        f"{w}x{h}: {results[backends[1][0], (h, w)]['select_ms']:.1f} ms" for h, w in SIZES
    )
    print(f"keypoint selection in numpy (included above): {sel}")
    print(f"{args.threads} threads, median of {args.runs} runs after one warm-up")


if __name__ == "__main__":
    main()
