"""`aslfeat info`: versions, onnxruntime providers, the chosen device and the model's metadata."""

from __future__ import annotations

from pathlib import Path

import click

from ._options import backend_options, device_option, model_option, verbosity_options


@click.command(
    "info",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  aslfeat info\n  aslfeat info --model my.onnx --device cuda\n"
    "  aslfeat info --backend openvino --precision fp32",
)
@model_option
@device_option
@backend_options
@verbosity_options
def command(model: Path | None, device: str, backend: str, precision: str) -> None:
    """Print what `aslfeat extract` would run on, as 'key: value' lines on stdout."""
    import onnxruntime as ort

    from .. import __version__
    from .extract import _device_line, _make_extractor

    click.echo(f"aslfeat: {__version__}")
    click.echo(f"onnxruntime: {ort.__version__} ({ort.get_device()})")
    click.echo(f"available providers: {', '.join(ort.get_available_providers())}")
    from ..backends.openvino import available

    if available():
        from ..backends.openvino import cpu_has_bf16, import_openvino

        version = import_openvino().__version__.split("-")[0]
        click.echo(f"openvino: {version} (CPU bfloat16: {'yes' if cpu_has_bf16() else 'no'})")
    else:
        click.echo("openvino: not installed")
    extractor = _make_extractor(model=model, device=device, backend=backend, precision=precision)
    click.echo(f"device: {_device_line(extractor)}")
    click.echo(f"model: {extractor.session.path.resolve()}")
    for key, value in sorted(extractor.model_metadata.items()):
        click.echo(f"  {key}: {value}")
