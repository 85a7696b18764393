"""Do the keypoints snap to the coarse levels' pixel lattice? Peak positions modulo 2 and 4.

ASLFeat's fused score map is conv1 + 2 x conv3 (1/2 resolution) + 3 x conv6 (1/4), the coarse
levels upsampled with TF1's legacy bilinear resize: output pixel i samples input i / s, so the
rows and columns divisible by 4 (by 2) carry conv6's (conv3's) own samples, and a bilinear
surface has its maxima on its samples. Where the coarse levels dominate a peak, the integer
keypoint lands on that lattice, whatever the image. Uniform positions give 0.50 at residue 0
mod 2 and 0.25 mod 4; the excess is localization error no sub-pixel refinement can undo.

For each ONNX model: the integer NMS peaks (official detection, 5,000 keypoints) of both images of
graf 1->3 and boat 1->2 and of view A of N held-out synthetic pairs, and the fraction of rows
and columns at each residue. For each PyTorch weight file (``--weights``, needs torch): which
level shapes the fused peaks of graf 1->3's view A, per level (weighted and upsampled as in
the fused map): the mean local contrast at the peaks (value minus the mean of its 4
neighbours) and how often the level's own 3x3 maximum is the fused peak. Needs ../shared/data.

    python benchmarks/bench_lattice.py [--model A.onnx --model B.onnx] [--synthetic 50]
    python benchmarks/bench_lattice.py --weights weights/aslfeat.pt --weights runs/x/last.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_quality import DATA, REAL_PAIRS, synthetic_pairs  # noqa: E402


def images(synthetic: int, seed: int) -> list[np.ndarray]:
    """Grayscale uint8 images: both views of the real pairs, view A of the synthetic ones."""
    out = []
    for name in REAL_PAIRS:
        for view in ("A.png", "B.png"):
            out.append(cv2.imread(str(DATA / "pairs" / name / view), cv2.IMREAD_GRAYSCALE))
    for pair in synthetic_pairs(synthetic, seed, (480, 360)):
        out.append(cv2.cvtColor(pair.image_a, cv2.COLOR_BGR2GRAY))
    return out


def residues(model: Path | None, photos: list[np.ndarray], num_keypoints: int) -> dict:
    """Fractions of peak rows and columns at each residue mod 2 and mod 4, over ``photos``."""
    from aslfeat_cli.extractor import Extractor
    from aslfeat_cli.keypoints import select_peaks

    extractor = Extractor(model, num_keypoints=num_keypoints)
    peaks = []
    for gray in photos:
        score_map, _ = extractor.dense(gray.astype(np.float32))
        peaks.append(select_peaks(score_map, extractor.config)[0])
    both = np.concatenate(peaks).reshape(-1)  # rows and columns alike
    return {m: np.bincount(both % m, minlength=m) / len(both) for m in (2, 4)} | {
        "peaks": len(both) // 2
    }


def level_shapes(weights: Path, gray: np.ndarray, num_keypoints: int) -> list[tuple]:
    """Per level (name, contrast, own-max share) at the fused map's peaks of ``gray``."""
    import torch

    from aslfeat_cli.keypoints import DetectionConfig, select_peaks
    from aslfeat_export.convert import load_weights
    from aslfeat_export.model import LEVEL_WEIGHTS, LEVELS
    from aslfeat_export.tf_compat import resize_bilinear_legacy

    model = load_weights(weights).eval()
    image = torch.from_numpy(gray.astype(np.float32))[None, None]
    with torch.no_grad():
        levels = model.level_scores(model.backbone(image))
        maps = [
            (resize_bilinear_legacy(level, image.shape[-2:]) * weight)[0, 0].numpy()
            for weight, level in zip(LEVEL_WEIGHTS, levels, strict=True)
        ]
    peaks, _ = select_peaks(sum(maps), DetectionConfig(num_keypoints=num_keypoints))
    i, j = peaks[:, 0], peaks[:, 1]
    rows = []
    for name, m in zip(LEVELS, maps, strict=True):
        contrast = m[i, j] - 0.25 * (m[i - 1, j] + m[i + 1, j] + m[i, j - 1] + m[i, j + 1])
        window = np.stack([m[i + di, j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)], axis=1)
        rows.append((name, float(contrast.mean()), float(np.mean(window.argmax(1) == 4))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="ONNX model (repeat)")
    parser.add_argument("--weights", type=Path, action="append", help="PyTorch weights (repeat)")
    parser.add_argument("--synthetic", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-keypoints", type=int, default=5000)
    args = parser.parse_args()
    if not (DATA / "pairs").is_dir():
        print(f"bench_lattice: {DATA} not found (needs ../shared/data)", file=sys.stderr)
        return 1
    photos = images(args.synthetic, args.seed)
    if args.weights:
        print("| weights | level | contrast at the peaks | own 3x3 max is the peak |")
        print("|---|---|---|---|")
        for weights in args.weights:
            for name, contrast, share in level_shapes(weights, photos[0], args.num_keypoints):
                print(f"| {weights} | {name} | {contrast:.4f} | {share:.2f} |")
        print()
    if args.weights and not args.model:
        return 0
    print("| model | peaks | mod 2: 0 / 1 | mod 4: 0 / 1 / 2 / 3 |")
    print("|---|---|---|---|")
    for model in args.model or [None]:
        r = residues(model, photos, args.num_keypoints)
        mod2 = " / ".join(f"{v:.3f}" for v in r[2])
        mod4 = " / ".join(f"{v:.3f}" for v in r[4])
        print(f"| {model.name if model else 'shipped'} | {r['peaks']} | {mod2} | {mod4} |")
    print(
        f"\n{dt.date.today()}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{len(photos)} images; uniform: 0.500 mod 2, 0.250 mod 4"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
