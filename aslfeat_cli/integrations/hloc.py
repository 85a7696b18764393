"""ASLFeat as an hloc extractor: ``register()`` makes ``hloc.extractors.aslfeat`` loadable.

hloc finds an extractor by ``dynamic_load(hloc.extractors, conf["model"]["name"])``: the one
class of module ``hloc.extractors.<name>`` that subclasses hloc's ``BaseModel``. hloc is not
on PyPI and our runtime never imports torch, so the class cannot live in hloc's package nor be
defined at import time here. :func:`register` builds it on first call (importing hloc, hence
torch), installs a module of that name in ``sys.modules`` and adds our presets to
``hloc.extract_features.confs``. The network itself runs in onnxruntime (our
:class:`~aslfeat_cli.extractor.Extractor`): torch only carries the tensors hloc hands over.

Example::

    from aslfeat_cli.integrations.hloc import MATCHER_CONF, register
    from hloc import extract_features, match_features, pairs_from_exhaustive, reconstruction

    confs = register()
    features = extract_features.main(confs["aslfeat"], images, outputs, as_half=False)
    pairs_from_exhaustive.main(outputs / "pairs.txt", features=features)
    matches = match_features.main(MATCHER_CONF, outputs / "pairs.txt", features=features,
                                  matches=outputs / "matches.h5")
    reconstruction.main(outputs / "sfm", images, outputs / "pairs.txt", features, matches)

Use ``as_half=False``: hloc's default rounds keypoints to float16 (up to 0.5 px error at 1600
px). Match with mutual nearest neighbours and no ratio test (:data:`MATCHER_CONF`): on the
sacre_coeur photos hloc's SuperPoint-tuned matchers registered fewer images (NN-ratio 6/10,
NN-superpoint 3/10, NN-mutual 10/10).
"""

from __future__ import annotations

import copy
import sys
import types
from typing import Any

from ..keypoints import DETECTION_NOISE  # hloc writes it as the keypoints' "uncertainty"

MODULE = "hloc.extractors.aslfeat"


# The model settings of our extractor class (hloc merges a preset's "model" over these).
DEFAULT_MODEL_CONF: dict[str, Any] = {
    "name": "aslfeat",
    "model_path": None,  # ONNX file; None: the shipped weights
    "max_keypoints": 5000,  # 0: all above the threshold
    "score_threshold": 0.5,
    "edge_threshold": 10.0,
    "nms_size": 3,
    "multi_scale": False,  # the official image pyramid (slower)
    "shifts": 1,  # 1, 2 or 4 diagonally moved passes, score maps averaged (more precise)
    "upscale": 1.0,  # network on the image enlarged by this factor, 1-4 (more precise)
    "pool_scales": [],  # descriptors also from the image resized by these, pooled (e.g. [1, 0.5])
    "device": "auto",  # onnxruntime's device: auto, cpu or cuda
    "threads": None,  # onnxruntime intra-op threads (None: its default)
}

# Presets for hloc.extract_features.confs. hloc resizes before the model (resize_max).
CONFS: dict[str, dict[str, Any]] = {
    "aslfeat": {
        "output": "feats-aslfeat-n5000-r1600",
        "model": {"name": "aslfeat", "max_keypoints": 5000},
        "preprocessing": {"grayscale": True, "resize_max": 1600},
    },
    # Best quality at a higher cost: the official multi-scale pyramid, more keypoints.
    "aslfeat_max": {
        "output": "feats-aslfeat-ms-n8000-r2048",
        "model": {"name": "aslfeat", "max_keypoints": 8000, "multi_scale": True},
        "preprocessing": {"grayscale": True, "resize_max": 2048},
    },
    # More precise keypoints (localization, SfM) for about 4-5x the extraction time: the
    # network on the image enlarged twice (the README's "Precise keypoints" measured it ahead
    # of shifts: 4, which costs a little less). Not with pool_scales: pooling gains matches
    # under zoom but raised the SfM reprojection error (README).
    "aslfeat_precise": {
        "output": "feats-aslfeat-u2-n5000-r1600",
        "model": {"name": "aslfeat", "max_keypoints": 5000, "upscale": 2.0},
        "preprocessing": {"grayscale": True, "resize_max": 1600},
    },
}

# hloc's own "NN-mutual" matcher: mutual nearest neighbours, no ratio, no distance threshold.
MATCHER_CONF: dict[str, Any] = {
    "output": "matches-NN-mutual",
    "model": {"name": "nearest_neighbor", "do_mutual_check": True},
}


def _to_gray(image: Any) -> Any:
    """hloc's (1, C, H, W) tensor in [0, 1] -> H x W float32 grey 0..255 (our network input)."""
    import cv2
    import numpy as np

    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] not in (1, 3):
        raise ValueError(f"expected an image tensor (1, 1 or 3, H, W), got {tuple(image.shape)}")
    array = image[0].detach().cpu().float().numpy()
    if array.shape[0] == 3:  # hloc hands RGB for grayscale=False presets
        array = cv2.cvtColor(np.ascontiguousarray(array.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
    else:
        array = array[0]
    # x / 255 * 255 gives the integers 0..255 back exactly in float32, so an image that hloc
    # did not resize reaches the network as `aslfeat extract` gives it.
    return np.ascontiguousarray(array * np.float32(255.0), dtype=np.float32)


def _build_class() -> type:
    """The hloc extractor class; imports hloc (and torch)."""
    import torch
    from hloc.utils.base_model import BaseModel

    from ..extractor import Extractor

    class ASLFeat(BaseModel):
        """ASLFeat (Luo et al., CVPR 2020) on onnxruntime, in hloc's extractor interface.

        Input ``data["image"]``: (1, C, H, W) float in [0, 1], already resized by hloc.
        Output: ``keypoints`` (1, N, 2) in pixels of that image (integer = pixel centre),
        ``descriptors`` (1, 128, N) unit length, ``scores`` (1, N), best first.
        """

        default_conf = dict(DEFAULT_MODEL_CONF)
        required_inputs = ["image"]
        detection_noise = DETECTION_NOISE

        def _init(self, conf: dict[str, Any]) -> None:
            unknown = set(conf) - set(DEFAULT_MODEL_CONF)
            if unknown:
                raise ValueError(f"unknown aslfeat model option(s): {', '.join(sorted(unknown))}")
            self.extractor = Extractor(
                model=conf["model_path"],
                num_keypoints=conf["max_keypoints"] or 0,
                score_threshold=conf["score_threshold"],
                edge_threshold=conf["edge_threshold"],
                nms_size=conf["nms_size"],
                multi_scale=conf["multi_scale"],
                shifts=conf["shifts"],
                upscale=conf["upscale"],
                pool_scales=tuple(conf["pool_scales"] or ()),
                device=conf["device"],
                threads=conf["threads"],
            )
            # hloc writes detection_noise times its resize factor as the keypoints'
            # "uncertainty"; the noise is in network pixels, which --upscale makes finer.
            self.detection_noise = DETECTION_NOISE / self.extractor.upscale

        def _forward(self, data: dict[str, Any]) -> dict[str, Any]:
            image = data["image"]
            features = self.extractor.extract(_to_gray(image))
            device = image.device
            return {
                "keypoints": torch.from_numpy(features.keypoints)[None].to(device),
                "descriptors": torch.from_numpy(features.descriptors.T.copy())[None].to(device),
                "scores": torch.from_numpy(features.scores)[None].to(device),
            }

    ASLFeat.__module__ = MODULE  # dynamic_load keeps classes defined in the loaded module
    ASLFeat.__qualname__ = "ASLFeat"
    return ASLFeat


def register() -> dict[str, dict[str, Any]]:
    """Make ``hloc.extractors.aslfeat`` loadable and add our presets; returns them (copies).

    Safe to call more than once. Needs hloc importable (it is not on PyPI; see its README)
    and torch (hloc's requirement; ``pip install 'aslfeat[export]'`` pins it).
    """
    try:
        import hloc.extractors
        from hloc import extract_features
    except ImportError as exc:
        raise ImportError(
            "hloc is not importable: install it from https://github.com/cvg/"
            "Hierarchical-Localization or put its folder on sys.path"
        ) from exc
    if MODULE not in sys.modules:
        module = types.ModuleType(MODULE, __doc__)
        module.ASLFeat = _build_class()
        sys.modules[MODULE] = module
        hloc.extractors.aslfeat = module
    extract_features.confs.update(copy.deepcopy(CONFS))
    return copy.deepcopy(CONFS)
