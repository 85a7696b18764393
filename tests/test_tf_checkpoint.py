"""Tests for the numpy-only TensorFlow V2 checkpoint reader (aslfeat_export.tf_checkpoint).

The reference checkpoints in ../shared/data/tf_reference were written by TensorFlow itself, so
reading them checks the SSTable, protobuf and CRC code against the real format. A small
hand-built checkpoint covers what they lack (other dtypes, shards, big-endian, compression).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from aslfeat_export import tf_checkpoint as tfc
from aslfeat_export.tf_checkpoint import (
    CheckpointError,
    crc32c,
    list_variables,
    read_checkpoint,
    resolve_checkpoint,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REF = DATA / "tf_reference"
VARIANTS = ["u", "a", "h", "plain"]
STEM = "model.ckpt-60000"
DATA_FILE = f"{STEM}.data-00000-of-00001"


@pytest.fixture(scope="module")
def ref() -> Path:
    if not (REF / "variables.json").is_file():
        pytest.skip("TensorFlow reference checkpoints: ../shared/data not found")
    return REF


def _copy(variant_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in (f"{STEM}.index", DATA_FILE):
        shutil.copyfile(variant_dir / name, dest / name)
    return dest / STEM


# ------------------------------------------------------------------------------- CRC32C


def test_crc32c_known_vectors() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    # RFC 3720 (iSCSI) appendix B.4 test vectors.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"") == 0
    assert tfc.masked_crc32c(b"") == 0xA282EAD8


@pytest.mark.parametrize("size", [4096, 4097, 12_345, 100_003])
def test_crc32c_vectorised_matches_bytewise(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    bytewise = tfc._crc_bytes(0xFFFFFFFF, data.tobytes()) ^ 0xFFFFFFFF
    assert crc32c(data) == bytewise
    assert crc32c(data.tobytes()) == bytewise


def test_crc32c_in_segments_matches_bytewise(monkeypatch: pytest.MonkeyPatch) -> None:
    # Huge tensors are checked in segments; shrink the segment to exercise the joins.
    monkeypatch.setattr(tfc, "_SEGMENT", 10_000)
    data = np.random.default_rng(1).integers(0, 256, 34_097, dtype=np.uint8)
    assert crc32c(data) == tfc._crc_bytes(0xFFFFFFFF, data.tobytes()) ^ 0xFFFFFFFF


def test_crc32c_speed_3mb() -> None:
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    crc32c(data[:100_000])  # warm the cached combine tables
    start = time.perf_counter()
    crc32c(data)
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------ reference checkpoints


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_variables_and_values(ref: Path, variant: str) -> None:
    expected = {
        name: (tuple(shape), np.dtype(dtype))
        for name, shape, dtype in json.loads((ref / "variables.json").read_text())[variant]
    }
    listed = list_variables(ref / variant / STEM)
    # The reference checkpoints hold exactly the model variables (no global_step, no slots).
    assert listed == expected
    arrays = read_checkpoint(ref / variant / STEM)
    assert list(arrays) == list(listed)
    for name, (shape, dtype) in expected.items():
        array = arrays[name]
        assert array.shape == shape and array.dtype == dtype, name
        assert np.isfinite(array).all(), name
        assert array.flags.writeable
    # Random init: kernels are not constant, moving variances are positive.
    assert arrays["conv0/kernel"].std() > 0
    assert (arrays["conv0/bn/moving_variance"] > 0).all()


def test_every_path_form_gives_the_same_checkpoint(ref: Path) -> None:
    folder = ref / "u"
    forms = [folder, folder / STEM, folder / f"{STEM}.index", folder / DATA_FILE, str(folder)]
    assert {resolve_checkpoint(p) for p in forms} == {folder / STEM}
    by_folder = read_checkpoint(folder)
    by_prefix = read_checkpoint(folder / STEM)
    assert by_folder.keys() == by_prefix.keys()
    for name in by_folder:
        np.testing.assert_array_equal(by_folder[name], by_prefix[name])


def test_read_selected_names(ref: Path) -> None:
    names = ["conv6/kernel", "conv0/kernel"]
    arrays = read_checkpoint(ref / "u", names)
    assert list(arrays) == names
    np.testing.assert_array_equal(
        arrays["conv0/kernel"], read_checkpoint(ref / "u")["conv0/kernel"]
    )
    with pytest.raises(CheckpointError, match="no variable 'conv7/kernel'"):
        read_checkpoint(ref / "u", ["conv0/kernel", "conv7/kernel"])


def test_folder_picks_highest_step_or_state_file(ref: Path, tmp_path: Path) -> None:
    for variant, step in (("u", 60000), ("plain", 900)):
        for name in (f"{STEM}.index", DATA_FILE):
            os.symlink(ref / variant / name, tmp_path / name.replace("60000", str(step)))
    assert resolve_checkpoint(tmp_path) == tmp_path / "model.ckpt-60000"
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/elsewhere/train/model.ckpt-900"\n'
        'all_model_checkpoint_paths: "/elsewhere/train/model.ckpt-60000"\n'
    )
    assert resolve_checkpoint(tmp_path) == tmp_path / "model.ckpt-900"
    assert "deform_param/conv6/offset/kernel" not in list_variables(tmp_path)  # plain: no DCN


def test_flipped_data_byte_fails_crc(ref: Path, tmp_path: Path) -> None:
    prefix = _copy(ref / "u", tmp_path)
    entry = tfc._load_index(prefix).entries["conv3/kernel"]
    data_file = tmp_path / DATA_FILE
    blob = bytearray(data_file.read_bytes())
    blob[entry.offset + entry.size // 2] ^= 0x01
    data_file.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="CRC") as info:
        read_checkpoint(prefix)
    assert str(data_file) in str(info.value) and "conv3/kernel" in str(info.value)
    # Only requested tensors are read and checked.
    assert read_checkpoint(prefix, ["conv0/kernel"])["conv0/kernel"].shape == (3, 3, 1, 32)


def test_flipped_index_byte_fails_block_crc(ref: Path, tmp_path: Path) -> None:
    prefix = _copy(ref / "u", tmp_path)
    index = tmp_path / f"{STEM}.index"
    blob = bytearray(index.read_bytes())
    blob[20] ^= 0x01  # inside the first key ("conv0/bn/moving_mean")
    index.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="CRC") as info:
        list_variables(prefix)
    assert str(index) in str(info.value)


@pytest.mark.parametrize("keep", [0, 40, 600, -1])
def test_truncated_index(ref: Path, tmp_path: Path, keep: int) -> None:
    prefix = _copy(ref / "u", tmp_path)
    index = tmp_path / f"{STEM}.index"
    index.write_bytes(index.read_bytes()[:keep])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(prefix)
    message = str(info.value)
    assert str(index) in message and "\n" not in message


def test_truncated_data_file(ref: Path, tmp_path: Path) -> None:
    prefix = _copy(ref / "u", tmp_path)
    data_file = tmp_path / DATA_FILE
    data_file.write_bytes(data_file.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="past the end") as info:
        read_checkpoint(prefix)
    assert str(data_file) in str(info.value)


def test_missing_data_shard(ref: Path, tmp_path: Path) -> None:
    prefix = _copy(ref / "u", tmp_path)
    (tmp_path / DATA_FILE).unlink()
    assert "conv0/kernel" in list_variables(prefix)  # the index alone is enough to list
    with pytest.raises(CheckpointError, match="data shard not found") as info:
        read_checkpoint(prefix)
    assert DATA_FILE in str(info.value)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="index not found"):
        resolve_checkpoint(tmp_path / "model.ckpt-1")
    with pytest.raises(CheckpointError, match="no TensorFlow checkpoint"):
        list_variables(tmp_path)
    (tmp_path / "model.ckpt-1.index").write_bytes(b"not an sstable" * 10)
    with pytest.raises(CheckpointError, match="bad magic"):
        list_variables(tmp_path)


# ------------------------------------------------------- a hand-built checkpoint (no TF)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if fixed32:
        return _varint(number << 3 | 5) + value.to_bytes(4, "little")
    return _varint(number << 3) + _varint(value)


def _block(items: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        last = key
    restarts = restarts or [0]
    for r in restarts:
        out += r.to_bytes(4, "little")
    return bytes(out + len(restarts).to_bytes(4, "little"))


def _sstable(items: list[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    """A LevelDB table: data blocks of 3 entries, an empty metaindex, an index, the footer."""
    out = bytearray()

    def put(block: bytes, kind: int = 0) -> bytes:
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + bytes([kind]))
        out.extend(tfc.masked_crc32c(block + bytes([kind])).to_bytes(4, "little"))
        return handle

    index = []
    for start in range(0, len(items), 3):
        chunk = items[start : start + 3]
        index.append((chunk[-1][0], put(_block(chunk), compression)))
    meta = put(_block([]))
    footer = (meta + put(_block(index))).ljust(40, b"\0")
    return bytes(out + footer + (0xDB4775248B80FB57).to_bytes(8, "little"))


_SYNTHETIC = {
    "a/half": np.linspace(-2, 2, 6, dtype=np.float16).reshape(2, 3),
    "a/single": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "a/double": np.array([np.pi, -np.e]),
    "b/int8": np.array([-128, 0, 127], dtype=np.int8),
    "b/int16": np.array([[-30000, 2], [3, 30000]], dtype=np.int16),
    "b/int32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "b/int64": np.array([-(2**63), 2**63 - 1, 5], dtype=np.int64),
    "c/uint8": np.array([0, 255, 7], dtype=np.uint8),
    "c/bool": np.array([[True, False], [False, True]]),
    "c/empty": np.zeros((0, 4), dtype=np.float32),
    "global_step": np.array(60000, dtype=np.int64),
}
_TF_ENUM = {"float16": 19, "float32": 1, "float64": 2, "int8": 6, "int16": 5, "int32": 3}
_TF_ENUM |= {"int64": 9, "uint8": 4, "bool": 10}


def _write_synthetic(
    prefix: Path, big_endian: bool = False, num_shards: int = 2, compression: int = 0
) -> None:
    shards = [bytearray() for _ in range(num_shards)]
    entries = []
    for i, (name, array) in enumerate(sorted(_SYNTHETIC.items())):
        shard = i % num_shards
        raw = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        dims = b"".join(_field(2, _field(1, d)) for d in array.shape)
        entry = _field(1, _TF_ENUM[array.dtype.name]) + _field(2, dims) + _field(3, shard)
        entry += _field(4, len(shards[shard])) + _field(5, len(raw))
        entry += _field(6, tfc.masked_crc32c(raw), fixed32=True)
        entry += _field(99, 12345) + _field(100, b"unknown fields are skipped")
        entries.append((name.encode(), entry))
        shards[shard] += raw
    # A string tensor: listed, but reading it must fail clearly (its bytes are never read).
    entries.append((b"d/string", _field(1, 7) + _field(2, _field(2, _field(1, 2)))))
    entries.sort()
    version = _field(1, 1) + _field(2, 0)
    header = _field(1, num_shards) + _field(2, int(big_endian)) + _field(3, version)
    index = _sstable([(b"", header), *entries], compression)
    prefix.with_name(prefix.name + ".index").write_bytes(index)
    for shard, blob in enumerate(shards):
        name = f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}"
        prefix.with_name(name).write_bytes(bytes(blob))


@pytest.mark.parametrize("big_endian", [False, True])
def test_synthetic_dtypes_shards_endianness(tmp_path: Path, big_endian: bool) -> None:
    prefix = tmp_path / "model.ckpt-5"
    _write_synthetic(prefix, big_endian=big_endian)
    listed = list_variables(tmp_path)
    assert listed["d/string"] == ((2,), np.dtype(object))
    assert {n: v for n, v in listed.items() if n != "d/string"} == {
        n: (a.shape, a.dtype) for n, a in _SYNTHETIC.items()
    }
    arrays = read_checkpoint(prefix, list(_SYNTHETIC))
    for name, array in _SYNTHETIC.items():
        assert arrays[name].dtype == array.dtype and arrays[name].dtype.isnative, name
        np.testing.assert_array_equal(arrays[name], array, err_msg=name)
    with pytest.raises(CheckpointError, match="'d/string' has dtype string, unsupported"):
        read_checkpoint(prefix)
    # Losing shard 1 still leaves the tensors of shard 0 readable.
    (tmp_path / "model.ckpt-5.data-00001-of-00002").unlink()
    assert read_checkpoint(prefix, ["a/double"])["a/double"][0] == np.pi
    with pytest.raises(CheckpointError, match="data-00001-of-00002: checkpoint data shard"):
        read_checkpoint(prefix, ["a/half"])


def test_compressed_block_is_rejected(tmp_path: Path) -> None:
    prefix = tmp_path / "model.ckpt-5"
    _write_synthetic(prefix, compression=1)
    with pytest.raises(CheckpointError, match="snappy-compressed") as info:
        list_variables(prefix)
    assert "model.ckpt-5.index" in str(info.value)
