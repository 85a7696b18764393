"""Official TensorFlow checkpoints -> our PyTorch weight files, and weight-file I/O.

The map from TensorFlow variable names to our state-dict names is written out explicitly
(:func:`tf_name_map`), batch-norm statistics included. Training checkpoints carry optimizer
slots, ``global_step`` and moving-average helpers: only the names in the map are read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .model import ASLFeat
from .tf_checkpoint import CheckpointError, list_variables, read_checkpoint

BACKBONE_CONVS = ("conv0", "conv1", "conv2", "conv3", "conv4", "conv5")
DEFORM_LAYERS = ("conv6_0", "conv6_1", "conv6")
OFFSET_CONVS = {"u": ("offset",), "a": ("ori", "scale"), "h": ("offset", "scale"), "plain": ()}
WEIGHTS_FORMAT = 1


def detect_variant(shapes: dict[str, tuple[int, ...]]) -> str:
    """Tell the DCN variant from the shapes under ``deform_param/`` (README of tf_reference)."""
    offset = shapes.get("deform_param/conv6/offset/kernel")
    if "deform_param/conv6/ori/kernel" in shapes:
        return "a"
    if offset is not None:
        return {18: "u", 8: "h"}.get(offset[-1], "?")
    if not any(name.startswith("deform_param/") for name in shapes):
        return "plain"
    return "?"


def tf_name_map(variant: str) -> dict[str, str]:
    """TensorFlow variable name -> our state-dict key, for one variant."""
    names: dict[str, str] = {}
    for layer in BACKBONE_CONVS:
        names[f"{layer}/kernel"] = f"backbone.{layer}.conv.weight"
        names[f"{layer}/bn/moving_mean"] = f"backbone.{layer}.bn.running_mean"
        names[f"{layer}/bn/moving_variance"] = f"backbone.{layer}.bn.running_var"
    for layer in DEFORM_LAYERS:
        names[f"{layer}/kernel"] = f"backbone.{layer}.conv.weight"
        if layer != "conv6":
            names[f"{layer}/bn/moving_mean"] = f"backbone.{layer}.bn.running_mean"
            names[f"{layer}/bn/moving_variance"] = f"backbone.{layer}.bn.running_var"
        if variant == "plain":
            continue
        for part in OFFSET_CONVS[variant]:
            for p, q in (("kernel", "weight"), ("bias", "bias")):
                names[f"deform_param/{layer}/{part}/{p}"] = (
                    f"backbone.{layer}.conv.offsets.{part}.{q}"
                )
        for p, q in (("kernel", "weight"), ("bias", "bias")):
            names[f"deform_param/{layer}/amplitude/{p}"] = f"backbone.{layer}.conv.amplitude.{q}"
    return names


def convert_checkpoint(path: str | Path) -> ASLFeat:
    """Load an official ASLFeat TensorFlow checkpoint into a new :class:`ASLFeat` model."""
    shapes = {name: shape for name, (shape, _) in list_variables(path).items()}
    variant = detect_variant(shapes)
    if variant == "?":
        raise CheckpointError(f"{path}: not an ASLFeat checkpoint (no recognisable conv6 layers)")
    mapping = tf_name_map(variant)
    levels = ("conv1", "conv3", "conv6")
    wanted = [*mapping, *(f"tower/{lvl}/instance_max" for lvl in levels)]
    missing = [n for n in wanted if n not in shapes]
    if missing:
        raise CheckpointError(f"{path}: missing variable(s) {', '.join(missing)}")
    arrays = read_checkpoint(path, wanted)
    model = ASLFeat(variant)
    state = model.state_dict()
    for tf_name, key in mapping.items():
        value = arrays[tf_name]
        if value.ndim == 4:  # HWIO -> OIHW
            value = value.transpose(3, 2, 0, 1)
        if tuple(value.shape) != tuple(state[key].shape):
            raise CheckpointError(
                f"{path}: {tf_name} has shape {value.shape}, expected {tuple(state[key].shape)}"
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    state["instance_max"] = torch.tensor(
        [float(arrays[f"tower/{lvl}/instance_max"]) for lvl in levels]
    )
    model.load_state_dict(state)
    return model.eval()


def save_weights(model: ASLFeat, path: str | Path, **meta: str) -> None:
    """Write our weight file: the state dict plus what is needed to rebuild the model."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "variant": model.variant,
        "score": model.score,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_weights(path: str | Path) -> ASLFeat:
    """Read a weight file written by :func:`save_weights` (eval mode)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a non-torch file
        raise ValueError(f"{path}: not an aslfeat weight file ({e.__class__.__name__})") from e
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not an aslfeat weight file (format key missing)")
    model = ASLFeat(payload["variant"], payload.get("score", "peakiness"))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, recorded in the ONNX metadata as the source-weights hash."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
