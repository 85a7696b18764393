"""A deterministic split of a job into N shards, for schedulers that run shards apart.

``--shard K/N`` (K from 0 to N-1, as Slurm array and Kubernetes indexed-job indices count)
keeps the images, or pairs, whose name hashes to K modulo N. The hash is SHA-1 of the
UTF-8 name, so the split is the same on every machine, Python version and run, does not
depend on the order or number of the other inputs, and each name lands in exactly one shard.
Shard files are combined with ``aslfeat merge``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import click

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        """Whether ``name`` belongs to this shard."""
        return shard_of(name, self.count) == self.index

    def select(self, items: Iterable[T], key: Callable[[T], str]) -> list[T]:
        """The items whose ``key`` belongs to this shard, in their order."""
        return [item for item in items if self.holds(key(item))]


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that ``name`` belongs to."""
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard; UserError for anything else."""
    index, sep, count = str(text).partition("/")
    try:
        if not sep:
            raise ValueError
        return Shard(int(index), int(count))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 0/4 (K from 0 to N-1)") from None


class ShardType(click.ParamType):
    """Click type for ``--shard K/N``."""

    name = "K/N"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 (click's signature)
        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(value)
        except UserError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)


shard_option = click.option(
    "--shard",
    type=ShardType(),
    default=None,
    help="Do only shard K of N (K = 0..N-1), a fixed split by name, so a scheduler (Slurm "
    "array, Kubernetes job) can run the shards apart; combine them with `aslfeat merge`.",
)
