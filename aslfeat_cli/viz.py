"""Pictures drawn with OpenCV only: keypoints, matches and the MMA-vs-threshold plot.

Every function returns a BGR uint8 image (write it with :func:`save_png`). Large images are
shown at most ``max_dim`` pixels on the long side; keypoints are scaled with the pixel-centre
convention. The MMA plot is drawn with OpenCV too, so no plotting library is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .images import fit_size, resize_image, scale_keypoints

FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN = (80, 220, 40)
RED = (40, 40, 235)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# Distinct line colours (BGR) for methods in the MMA plot.
PALETTE = [
    (200, 110, 30),
    (30, 130, 240),
    (60, 170, 60),
    (40, 40, 210),
    (170, 90, 150),
    (80, 80, 80),
    (180, 170, 20),
    (120, 60, 140),
]


def _as_bgr(image: np.ndarray, dim: float = 1.0) -> np.ndarray:
    """Grey or BGR (uint8 or float 0..255) to a grey-looking BGR uint8, optionally darkened.

    Colour is removed on purpose: coloured marks stay visible on any photo.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if dim != 1.0:
        image = cv2.convertScaleAbs(image, alpha=dim)
    return np.ascontiguousarray(image)


def _fit(image: np.ndarray, points: Sequence[np.ndarray], max_dim: int | None):
    """Downscale an image to ``max_dim`` and the point sets with it."""
    height, width = image.shape[:2]
    if max_dim is None:
        return image, [np.asarray(p, np.float32).reshape(-1, 2) for p in points], 1.0
    size = fit_size(width, height, max_dim)
    scaled = [scale_keypoints(np.asarray(p).reshape(-1, 2), (width, height), size) for p in points]
    return resize_image(image, size), scaled, size[0] / width


def _with_header(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Put a black strip with white text above the picture."""
    scale = 0.55
    line_height = 22
    strip = np.zeros((line_height * len(lines) + 8, image.shape[1], 3), np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text, (8, 20 + i * line_height), FONT, scale, WHITE, 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def _subpixel(point: np.ndarray) -> tuple[int, int]:
    # cv2 drawing with shift=4 takes coordinates in 1/16 px: sub-pixel accurate marks.
    return int(round(float(point[0]) * 16)), int(round(float(point[1]) * 16))


def draw_keypoints(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray | None = None,
    title: str | None = None,
    max_dim: int | None = 1600,
) -> np.ndarray:
    """Keypoints as circles over the (darkened) image; the radius grows with the score rank.

    The strongest keypoints are also the most yellow (the weakest are purple), and they are drawn
    last so that they stay on top.
    """
    canvas = _as_bgr(image, dim=0.7)
    canvas, (points,), _ = _fit(canvas, [keypoints], max_dim)
    n = len(points)
    if scores is None or len(scores) != n:
        scores = np.ones(n, np.float32)
    order = np.argsort(np.asarray(scores), kind="stable")  # weakest first
    rank = np.empty(n, np.float64)
    rank[order] = np.linspace(0.0, 1.0, n) if n > 1 else 1.0
    # The bright part of the colour map only (its darkest purple vanishes on dark pixels).
    levels = np.uint8(np.rint(70 + rank * 185)).reshape(-1, 1)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_PLASMA)
    for index in order:
        radius = int(round((2.0 + 4.0 * rank[index]) * 16))
        colour = tuple(int(c) for c in colours[index, 0])
        cv2.circle(canvas, _subpixel(points[index]), radius, colour, 1, cv2.LINE_AA, shift=4)
    header = [title] if title else []
    header.append(f"{n} keypoints (circle size and colour: score rank, yellow = strongest)")
    return _with_header(canvas, header)


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: np.ndarray,
    inliers: np.ndarray | None = None,
    title: str | None = None,
    max_lines: int = 400,
    max_dim: int | None = 1200,
) -> np.ndarray:
    """Two images side by side with a line per match.

    With ``inliers`` (M,) bool: inliers green, outliers red (drawn first, below the inliers).
    Without it: each line coloured by where it starts in image 0 (a rainbow from left to
    right) so that neighbouring matches can be told apart. At most ``max_lines`` lines are
    drawn (an even, deterministic subset; the header says how many).
    """
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    left, (k0,), _ = _fit(_as_bgr(image0, dim=0.8), [kpts0], max_dim)
    right, (k1,), _ = _fit(_as_bgr(image1, dim=0.8), [kpts1], max_dim)
    gap = 12
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    offset = left.shape[1] + gap
    canvas[: right.shape[0], offset:] = right

    shown = np.arange(len(matches))
    if len(shown) > max_lines:
        shown = np.linspace(0, len(matches) - 1, max_lines).round().astype(np.int64)
    p0 = k0[matches[shown, 0]] if len(matches) else np.zeros((0, 2), np.float32)
    p1 = k1[matches[shown, 1]] + np.float32([offset, 0]) if len(matches) else p0
    if inliers is not None:
        inliers = np.asarray(inliers, bool).reshape(-1)
        flags = inliers[shown]
        colours = [GREEN if f else RED for f in flags]
        order = np.argsort(flags, kind="stable")  # outliers first, inliers on top
    elif not len(shown):  # applyColorMap returns None for an empty input
        colours, order = [], np.arange(0)
    else:
        hue = np.uint8(np.clip(p0[:, 0] / max(left.shape[1], 1) * 255, 0, 255)).reshape(-1, 1)
        colours = [tuple(int(c) for c in v[0]) for v in cv2.applyColorMap(hue, cv2.COLORMAP_JET)]
        order = np.arange(len(shown))
    for i in order:
        a, b = _subpixel(p0[i]), _subpixel(p1[i])
        cv2.line(canvas, a, b, colours[i], 1, cv2.LINE_AA, shift=4)
        cv2.circle(canvas, a, 2 * 16, colours[i], -1, cv2.LINE_AA, shift=4)
        cv2.circle(canvas, b, 2 * 16, colours[i], -1, cv2.LINE_AA, shift=4)

    header = [title] if title else []
    summary = f"{len(matches)} matches"
    if inliers is not None:
        summary += f", {int(inliers.sum())} inliers (green) / {len(matches) - int(inliers.sum())}"
        summary += " outliers (red)"
    if len(shown) < len(matches):
        summary += f"; {len(shown)} lines drawn"
    header.append(summary)
    return _with_header(canvas, header)


def plot_mma(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    thresholds: Sequence[float],
    panels: Sequence[str] = ("overall", "illumination", "viewpoint"),
    panel_size: tuple[int, int] = (420, 340),
) -> np.ndarray:
    """MMA against the error threshold, one panel per group, one line per method (paper Fig. 3).

    ``curves`` is ``{method: {group: [mma at each threshold]}}``; panels missing for every
    method are left out.
    """
    panels = [p for p in panels if any(p in groups for groups in curves.values())]
    width, height = panel_size
    left, right, top, bottom = 52, 14, 34, 44
    legend_height = 24 * ((len(curves) + 2) // 3) + 10
    canvas = np.full((height + legend_height, width * len(panels), 3), 255, np.uint8)
    x_lo, x_hi = min(thresholds), max(thresholds)

    for p, panel in enumerate(panels):
        x0, x1, y0, y1 = p * width + left, (p + 1) * width - right, top, height - bottom

        def px(x: float, y: float, _x0=x0, _x1=x1, _y0=y0, _y1=y1) -> tuple[int, int]:
            u = _x0 + (x - x_lo) / max(x_hi - x_lo, 1e-9) * (_x1 - _x0)
            return int(round(u)), int(round(_y1 - y * (_y1 - _y0)))

        for tick in np.linspace(0, 1, 6):
            a, b = px(x_lo, tick), px(x_hi, tick)
            cv2.line(canvas, a, b, (225, 225, 225), 1)
            cv2.putText(
                canvas, f"{tick:.1f}", (x0 - 36, a[1] + 5), FONT, 0.42, BLACK, 1, cv2.LINE_AA
            )
        for t in thresholds:
            a = px(t, 0)
            cv2.line(canvas, a, (a[0], a[1] + 4), BLACK, 1)
            cv2.putText(canvas, f"{t:g}", (a[0] - 5, a[1] + 18), FONT, 0.42, BLACK, 1, cv2.LINE_AA)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)
        cv2.putText(
            canvas,
            panel.capitalize(),
            (x0 + (x1 - x0) // 2 - 45, 22),
            FONT,
            0.6,
            BLACK,
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            canvas,
            "threshold [px]",
            (x0 + (x1 - x0) // 2 - 50, height - 6),
            FONT,
            0.45,
            BLACK,
            1,
            cv2.LINE_AA,
        )
        if p == 0:
            cv2.putText(canvas, "MMA", (4, top - 12), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
        for m, groups in enumerate(curves.values()):
            values = groups.get(panel)
            if values is None:
                continue
            colour = PALETTE[m % len(PALETTE)]
            points = np.array([px(t, v) for t, v in zip(thresholds, values, strict=True)])
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
            for q in points:
                cv2.circle(canvas, (int(q[0]), int(q[1])), 3, colour, -1, cv2.LINE_AA)

    for m, method in enumerate(curves):
        x = 20 + (m % 3) * (canvas.shape[1] // 3)
        y = height + 18 + 24 * (m // 3)
        colour = PALETTE[m % len(PALETTE)]
        cv2.line(canvas, (x, y - 5), (x + 30, y - 5), colour, 2, cv2.LINE_AA)
        cv2.putText(canvas, method, (x + 38, y), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    return canvas


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG (parent folders created) atomically: a full disk or a kill leaves no
    half-written picture. Raises UserError with one line when it cannot be written."""
    path = Path(path)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"{path}: PNG encoding failed")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
