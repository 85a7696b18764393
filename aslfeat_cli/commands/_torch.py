"""Import of the torch-side package for the commands that need it (convert, export)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError


def import_export_module(name: str) -> ModuleType:
    """Import ``aslfeat_export.<name>``; a clear message when the export extra is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise UserError(
            "this command needs PyTorch: pip install 'aslfeat[export]' (torch==2.13.0, onnx)"
        ) from e
    return importlib.import_module(f"aslfeat_export.{name}")
