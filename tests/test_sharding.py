"""--shard K/N: a fixed split by name that covers every image or pair exactly once."""

from __future__ import annotations

import click
import pytest

from aslfeat_cli.errors import UserError
from aslfeat_cli.matching import pair_shard_key
from aslfeat_cli.sharding import Shard, ShardType, parse_shard, shard_of


def test_shard_of_is_sha1_of_the_name_and_pinned() -> None:
    # Pinned values: a change of the split would silently re-shard users' running jobs.
    assert [shard_of(n, 4) for n in ["a.jpg", "b.jpg", "dir/c.png", "é.jpg"]] == [0, 3, 0, 3]
    assert shard_of("anything", 1) == 0


def test_shards_partition_the_inputs_in_order() -> None:
    names = [f"seq/{i:05d}.jpg" for i in range(1000)]
    parts = [Shard(k, 7).select(names, key=str) for k in range(7)]
    assert sorted(n for p in parts for n in p) == names
    assert all(p == sorted(p) for p in parts)  # input order kept
    assert min(map(len, parts)) > 100  # roughly even: 1000/7 = 143


def test_split_does_not_depend_on_the_other_inputs() -> None:
    few = Shard(1, 3).select(["x.jpg", "y.jpg", "z.jpg"], key=str)
    many = Shard(1, 3).select([f"{i}.jpg" for i in range(50)] + ["x.jpg", "y.jpg", "z.jpg"], str)
    assert set(few) <= set(many)


def test_pair_shard_key_ignores_the_order() -> None:
    assert pair_shard_key(("a.jpg", "b.jpg")) == pair_shard_key(("b.jpg", "a.jpg"))


def test_parse_shard() -> None:
    assert parse_shard("3/8") == Shard(3, 8)
    assert str(parse_shard("0/1")) == "0/1"
    for bad in ["8/8", "-1/4", "1", "a/b", "1/0", ""]:
        with pytest.raises(UserError, match="K/N|0 <= K < N"):
            parse_shard(bad)


def test_shard_option_type_gives_a_click_error() -> None:
    with pytest.raises(click.BadParameter, match="K < N"):
        ShardType().convert("4/4", None, None)
