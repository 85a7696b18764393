"""What users see on every command: help on every option, -q/-v after the subcommand, and
one spelling for shared options (``--num-keypoints none``)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from aslfeat_cli.cli import COMMANDS, cli


def _command(name: str) -> click.Command:
    return cli.get_command(click.Context(cli), name)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name):
    missing = [
        "/".join(p.opts)
        for p in _command(name).params
        if isinstance(p, click.Option) and not p.help
    ]
    assert not missing, f"aslfeat {name}: options without help: {missing}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_quiet_and_verbose_after_every_subcommand(name):
    result = CliRunner().invoke(cli, [name, "-q", "-v", "--help"])
    assert result.exit_code == 0, result.output
    assert "--quiet" in result.output and "--verbose" in result.output


def test_quiet_after_subcommand_silences_the_summary(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a.jpg\nb.jpg\nc.jpg\n")
    args = ["pairs", str(names), "-o", str(tmp_path / "pairs.txt"), "--exhaustive"]
    loud = CliRunner().invoke(cli, args)
    assert loud.exit_code == 0 and "3 pairs of 3 images" in loud.stderr
    for quiet in (["-q", *args], [*args, "-q"]):
        result = CliRunner().invoke(cli, quiet)
        assert result.exit_code == 0 and result.stderr == "", result.output


def test_num_keypoints_none_everywhere():
    """Every command with --num-keypoints takes 'none' (all keypoints) the same way."""
    with_option = []
    for name in COMMANDS:
        for param in _command(name).params:
            if "--num-keypoints" in getattr(param, "opts", []):
                with_option.append(name)
                assert param.type.convert("none", param, None) == 0, name
                assert param.type.convert("2000", param, None) == 2000, name
    assert {"extract", "reconstruct", "evaluate"} <= set(with_option)
