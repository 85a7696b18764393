"""Self-supervised training pairs: synthetic homographies of single photos.

Each sample is two views of one photo (:func:`aslfeat_cli.synthetic.make_pair`: a random crop,
a random homography with perspective, scale 0.6-1.6, rotation up to +-20 degrees and
translation, independent photometric changes) and the true homography from A to B. Dense
ground-truth correspondences are the cells of A's descriptor grid (stride 4) mapped into B,
kept where they land inside B (the visibility mask).

Pairs are generated in the main process: with two shared CPU cores, DataLoader workers would
only take time from the network.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from aslfeat_cli.images import resize_image, scaling_homography
from aslfeat_cli.synthetic import make_pair, split_photos, warp_points

DESCRIPTOR_STRIDE = 4


def default_data_root() -> Path:
    """``../shared/data/train`` relative to the repository root."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"


def read_gray(path: Path) -> np.ndarray:
    """A photo as uint8 grayscale; ``ValueError`` when OpenCV cannot decode it."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image


class PairSampler:
    """Endless source of random training pairs from a list of photos.

    ``batch(rng)`` returns ``(images_a, images_b, homographies)``: two (B, 1, H, W) float32
    tensors of raw grey levels (0..255, what the network expects) and (B, 3, 3) float64 A->B
    homographies (numpy). Decoded photos are cached (grayscale, at most ``cache_size``) because
    JPEG decoding of 1024 px photos costs as much as a small training step.

    With ``enlarge_prob`` > 0, that share of the pairs is made at ``crop / enlarge_factor``
    pixels and both views are enlarged to ``crop`` (:func:`enlarge_pair`): what the network
    sees with the runtime's ``--upscale``.
    """

    def __init__(
        self,
        photos: list[Path],
        crop: int = 256,
        batch_size: int = 2,
        cache_size: int = 800,
        enlarge_prob: float = 0.0,
        enlarge_factor: float = 2.0,
    ) -> None:
        if not photos:
            raise ValueError("no training photos")
        if not 0.0 <= enlarge_prob <= 1.0 or enlarge_factor < 1.0:
            raise ValueError("enlarge_prob must be in [0, 1] and enlarge_factor >= 1")
        self.photos = list(photos)
        self.crop = int(crop)
        self.batch_size = int(batch_size)
        self.cache_size = cache_size
        self.enlarge_prob = float(enlarge_prob)
        self.enlarge_factor = float(enlarge_factor)
        self._cache: dict[Path, np.ndarray] = {}

    def _photo(self, path: Path) -> np.ndarray:
        image = self._cache.get(path)
        if image is None:
            image = read_gray(path)
            if len(self._cache) < self.cache_size:
                self._cache[path] = image
        return image

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pair (imgA uint8, imgB uint8, H_A_to_B) from a random photo."""
        path = self.photos[int(rng.integers(len(self.photos)))]
        # The draw happens only when enlarging is on, so older runs replay the same pairs.
        if self.enlarge_prob > 0 and rng.random() < self.enlarge_prob:
            small = int(round(self.crop / self.enlarge_factor))
            pair = make_pair(self._photo(path), rng, size=(small, small))
            return enlarge_pair(*pair, size=(self.crop, self.crop))
        return make_pair(self._photo(path), rng, size=(self.crop, self.crop))

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A batch of fresh pairs as network inputs plus their homographies."""
        pairs = [self.pair(rng) for _ in range(self.batch_size)]
        images_a = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].astype(np.float32))
        images_b = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.float32))
        return images_a, images_b, np.stack([p[2] for p in pairs])


def enlarge_pair(
    image_a: np.ndarray, image_b: np.ndarray, homography: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both views resized to ``size`` = (W, H) like the runtime's ``--upscale`` (bilinear when
    enlarging, :func:`aslfeat_cli.images.resize_image`) and the A->B homography between the
    resized views (pixel-centre convention, :func:`aslfeat_cli.images.scaling_homography`)."""
    scale_a = scaling_homography(image_a.shape[1::-1], size)
    scale_b = scaling_homography(image_b.shape[1::-1], size)
    resized = [resize_image(im, size) for im in (image_a, image_b)]
    h = scale_b @ homography @ np.linalg.inv(scale_a)
    return resized[0], resized[1], h / h[2, 2]


def train_val_photos(root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """The fixed train / held-out split of the shared training photos."""
    return split_photos(root or default_data_root())


def grid_correspondences(
    homography: np.ndarray, size: tuple[int, int], border: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Dense ground-truth correspondences at the descriptor resolution.

    The cells of A's descriptor grid (image pixels ``4 * (i, j)``, the convention of
    :func:`aslfeat_cli.keypoints.sample_descriptors`) are mapped into B by ``homography``;
    those landing inside B (``border`` pixels away from its edge) are kept. ``size`` is
    (W, H) of both views. Returns ``(pos_a, pos_b)``, each (N, 2) float32 x, y image pixels.
    """
    width, height = size
    xs = np.arange(0, width, DESCRIPTOR_STRIDE, dtype=np.float64)
    ys = np.arange(0, height, DESCRIPTOR_STRIDE, dtype=np.float64)
    grid_x, grid_y = np.meshgrid(xs, ys)
    pos_a = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    pos_b = warp_points(pos_a, homography)
    with np.errstate(invalid="ignore"):
        visible = (
            np.isfinite(pos_b).all(axis=1)
            & (pos_b[:, 0] >= border)
            & (pos_b[:, 0] <= width - 1 - border)
            & (pos_b[:, 1] >= border)
            & (pos_b[:, 1] <= height - 1 - border)
        )
    return pos_a[visible].astype(np.float32), pos_b[visible].astype(np.float32)
