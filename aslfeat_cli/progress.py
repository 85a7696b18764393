"""Progress for long steps that report nothing themselves (pycolmap's verification, mapping)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

TICK_SECONDS = 0.5


@contextmanager
def spinner(desc: str, enabled: bool = True) -> Iterator[None]:
    """Show ``desc`` with the elapsed time on stderr while the block runs (tqdm, no total)."""
    if not enabled:
        yield
        return
    bar = tqdm(desc=desc, total=None, bar_format="{desc}: {elapsed}", dynamic_ncols=True)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(TICK_SECONDS):
            bar.refresh()

    thread = threading.Thread(target=tick, name="aslfeat-spinner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
