"""`aslfeat info`: versions, onnxruntime providers, the chosen device and the model's metadata."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import device_option, model_option, verbosity_options


@click.command(
    "info",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  aslfeat info\n  aslfeat info --model my.onnx --device cuda",
)
@model_option
@device_option
@verbosity_options
def command(model: Path | None, device: str) -> None:
    """Print what `aslfeat extract` would run on, as 'key: value' lines on stdout."""
    import onnxruntime as ort

    from .. import __version__
    from .extract import _device_line, _make_extractor

    click.echo(f"aslfeat: {__version__}")
    click.echo(f"onnxruntime: {ort.__version__} ({ort.get_device()})")
    click.echo(f"available providers: {', '.join(ort.get_available_providers())}")
    extractor = _make_extractor(model=model, device=device)
    click.echo(f"device: {_device_line(extractor)}")
    click.echo(f"model: {extractor.session.path.resolve()}")
    for key, value in sorted(extractor.model_metadata.items()):
        click.echo(f"  {key}: {value}")
