"""Progress for silent pycolmap steps, and the reconstruct summary's step times."""

from __future__ import annotations

import time

from aslfeat_cli.progress import spinner
from aslfeat_cli.reconstruct import ReconstructionStats


def test_spinner_shows_elapsed_time(capsys):
    with spinner("geometric verification"):
        time.sleep(1.2)
    err = capsys.readouterr().err
    assert "geometric verification: 00:01" in err


def test_spinner_disabled_prints_nothing(capsys):
    with spinner("mapping", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_reconstruct_summary_has_step_times():
    stats = ReconstructionStats(10, 10, 2000, 4.0, 1.2, 1, 45, 60.0, None, 20.0, 5.0, 10.0, 25.0)
    table = dict(line.rsplit("  ", 1) for line in stats.table().splitlines())
    table = {k.strip(): v.strip() for k, v in table.items()}
    assert table["extraction seconds"] == "20.0" and table["matching seconds"] == "5.0"
    assert table["verification seconds"] == "10.0" and table["mapping seconds"] == "25.0"
