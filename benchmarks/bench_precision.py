"""Float32 vs float16 (``--fp16``) and IO binding: speed and agreement, side by side in one run.

Meant for a CUDA machine (``--device cuda``), where ``--fp16`` and IO binding are used; on the
CPU it still runs (float16 measured there at about float32's speed) so the script itself can
be checked anywhere. For each size it times ``Extractor.extract`` (network + keypoint
selection, 5000 keypoints) on a scikit-image photo resized to that size, median of ``--runs``
after two warm-ups, and compares float16 keypoints and descriptors with float32:
share of float32 keypoints with a float16 keypoint within 0.5 px, and the smallest descriptor
cosine among those.

    python benchmarks/bench_precision.py [--device cuda] [--runs 20] [--model FILE.onnx]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from aslfeat_cli.extractor import Extractor, Features
from aslfeat_cli.keypoints import nearest_keypoints

SIZES = ((640, 480), (1024, 768))
CONFIGS = (  # name, fp16, io_binding
    ("float32", False, False),
    ("float32 + IO binding", False, True),
    ("float16 + IO binding", True, True),
)


def median_ms(extractor: Extractor, image: np.ndarray, runs: int) -> tuple[float, Features]:
    features = extractor.extract(image)
    extractor.extract(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        extractor.extract(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), features


def agreement(full: Features, half: Features) -> tuple[float, float]:
    """Share of float32 keypoints with a float16 one within 0.5 px; min cosine among them."""
    if len(full) == 0 or len(half) == 0:
        return 0.0, float("nan")
    nearest, distance = nearest_keypoints(full.keypoints, half.keypoints)
    close = distance < 0.5
    cosine = (full.descriptors[close] * half.descriptors[nearest[close]]).sum(1)
    return float(close.mean()), float(cosine.min()) if close.any() else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    args = parser.parse_args()

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    extractors = {
        name: Extractor(args.model, device=args.device, fp16=fp16, io_binding=binding)
        for name, fp16, binding in CONFIGS
    }
    device = next(iter(extractors.values())).device
    print(f"device: {device}; {args.runs} runs per cell, median ms (network + selection)")
    print(
        f"{'size':>10}  " + "".join(f"{name:>22}" for name, _, _ in CONFIGS) + "  fp16 speed-up"
        "  kp within 0.5 px  min cosine"
    )
    for width, height in SIZES:
        image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_LINEAR)
        cells, features = {}, {}
        for name, extractor in extractors.items():
            cells[name], features[name] = median_ms(extractor, image, args.runs)
        share, cosine = agreement(features["float32"], features["float16 + IO binding"])
        speedup = cells["float32"] / cells["float16 + IO binding"]
        print(
            f"{width:>4}x{height:<5}  "
            + "".join(f"{cells[name]:>22.1f}" for name, _, _ in CONFIGS)
            + f"  {speedup:>12.2f}x  {share:>16.4f}  {cosine:>10.5f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
