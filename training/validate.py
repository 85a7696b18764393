"""Validation during training: MMA@1/@3, repeatability and homography accuracy on held-out and
real homography pairs.

Two sets, both with known homographies:

* synthetic pairs made (deterministically, seed fixed) from the held-out photos of
  :func:`aslfeat_cli.synthetic.split_photos` — never trained on;
* the real pairs of ``../shared/data/pairs`` (graf 1->3, boat 1->2, ``H_A_to_B.txt``),
  optionally downscaled (the homography is rescaled accordingly, errors are then in the
  downscaled pixels).

Keypoints come from the same selection as the runtime (:func:`aslfeat_cli.keypoints.
select_keypoints`), matches are mutual nearest neighbours and the metrics are those of
:func:`aslfeat_cli.homography_eval.evaluate_pair` (MMA@t = fraction of matches within t px;
repeatability at 3 px; homography accuracy @t = corner error after RANSAC within t px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from aslfeat_cli.homography_eval import evaluate_pair
from aslfeat_cli.images import scale_keypoints, scaling_homography, upscale_image
from aslfeat_cli.keypoints import DetectionConfig, select_keypoints
from aslfeat_cli.synthetic import make_pair
from aslfeat_export.model import ASLFeat

from .data import read_gray

REAL_PAIRS = ("graf_1_3", "boat_1_2")


@dataclass
class ValPair:
    """One validation pair: grayscale uint8 views and the A->B homography."""

    name: str
    image_a: np.ndarray
    image_b: np.ndarray
    homography: np.ndarray


def synthetic_pairs(photos: list[Path], n: int, size: int = 320, seed: int = 1234) -> list[ValPair]:
    """``n`` fixed synthetic pairs from the held-out photos (spread over the list)."""
    rng = np.random.default_rng(seed)
    picks = np.linspace(0, len(photos) - 1, num=min(n, len(photos))).round().astype(int)
    out = []
    for i in picks:
        a, b, h = make_pair(read_gray(photos[i]), rng, size=(size, size))
        out.append(ValPair(f"syn/{photos[i].stem}", a, b, h))
    return out


def _scaled(image: np.ndarray, max_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Downscale so the long side is <= max_dim; returns the image and the 3x3 scaling."""
    h, w = image.shape[:2]
    factor = min(1.0, max_dim / max(h, w)) if max_dim > 0 else 1.0
    if factor == 1.0:
        return image, np.eye(3)
    new = (int(round(w * factor)), int(round(h * factor)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA), scaling_homography((w, h), new)


def real_pairs(pairs_root: Path, max_dim: int = 0) -> list[ValPair]:
    """graf/boat from ``pairs_root`` (those present), downscaled to ``max_dim`` if > 0."""
    out = []
    for name in REAL_PAIRS:
        folder = Path(pairs_root) / name
        if not (folder / "H_A_to_B.txt").is_file():
            continue
        a, scale_a = _scaled(read_gray(folder / "A.png"), max_dim)
        b, scale_b = _scaled(read_gray(folder / "B.png"), max_dim)
        h = scale_b @ np.loadtxt(folder / "H_A_to_B.txt") @ np.linalg.inv(scale_a)
        out.append(ValPair(name, a, b, h / h[2, 2]))
    return out


@torch.no_grad()
def features(model: ASLFeat, image: np.ndarray, config: DetectionConfig, upscale: float = 1.0):
    """Keypoints (N, 2) x, y and descriptors (N, 128) of one grayscale image; with
    ``upscale`` > 1 the network sees the image enlarged (the runtime's ``--upscale``) and the
    keypoints are mapped back to the image's pixels."""
    enlarged = upscale_image(image, upscale)
    tensor = torch.from_numpy(enlarged.astype(np.float32))[None, None]
    score_map, descriptor_map = model(tensor)
    kpts, _, descs = select_keypoints(score_map.numpy(), descriptor_map.numpy(), config)
    kpts = scale_keypoints(kpts, enlarged.shape[1::-1], image.shape[1::-1])
    return kpts, descs


def evaluate(
    model: ASLFeat, pairs: list[ValPair], num_keypoints: int = 2000, upscale: float = 1.0
) -> dict:
    """Per-pair MMA@1/@3, repeatability, corner error and match counts, model in eval mode,
    on features from images enlarged ``upscale`` times (1: as given).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    config = DetectionConfig(num_keypoints=num_keypoints)
    result: dict = {}
    empty = {"mma1": 0.0, "mma3": 0.0, "rep": 0.0, "corner": float("inf")}
    try:
        for pair in pairs:
            k0, d0 = features(model, pair.image_a, config, upscale)
            k1, d1 = features(model, pair.image_b, config, upscale)
            size_a = (pair.image_a.shape[1], pair.image_a.shape[0])
            size_b = (pair.image_b.shape[1], pair.image_b.shape[0])
            if len(k0) == 0 or len(k1) == 0:
                result[pair.name] = {**empty, "matches": 0, "correct": 0, "kpts": 0}
                continue
            m = evaluate_pair(
                k0, d0, k1, d1, pair.homography, size_a, size_b, mma_thresholds=[1, 3]
            )
            result[pair.name] = {
                "mma1": m.mma[0],
                "mma3": m.mma[1],
                "rep": m.repeatability,
                "corner": m.corner_error,
                "matches": m.n_matches,
                "correct": m.n_correct,
                "kpts": m.n_features,
            }
    finally:
        model.train(was_training)
    return result


def _pair_summary(values: list[dict]) -> dict:
    corner = np.array([v["corner"] for v in values])
    return {
        "mma1": float(np.mean([v["mma1"] for v in values])),
        "mma3": float(np.mean([v["mma3"] for v in values])),
        "rep": float(np.mean([v["rep"] for v in values])),
        "h1": float(np.mean(corner <= 1)),
        "h3": float(np.mean(corner <= 3)),
        "matches": float(np.mean([v["matches"] for v in values])),
    }


def summarise(result: dict) -> dict:
    """Means over the synthetic pairs (``syn_*``) and each real pair's numbers (``graf_*``,
    ``boat_*``): MMA@1, MMA@3, repeatability, homography accuracy @1/@3 px, matches.

    ``score`` (which picks ``best.pt``) is the mean of (MMA@1 + MMA@3) / 2 over the synthetic
    mean and each real pair: localization counts as much as matching.
    """
    syn = [v for k, v in result.items() if k.startswith("syn/")]
    out: dict = {}
    parts = []
    if syn:
        out.update({f"syn_{k}": v for k, v in _pair_summary(syn).items()})
        parts.append((out["syn_mma1"] + out["syn_mma3"]) / 2)
    for name in REAL_PAIRS:
        if name in result:
            short = name.split("_")[0]
            out.update({f"{short}_{k}": v for k, v in _pair_summary([result[name]]).items()})
            parts.append((out[f"{short}_mma1"] + out[f"{short}_mma3"]) / 2)
    out["score"] = float(np.mean(parts)) if parts else 0.0
    return out
