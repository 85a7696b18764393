"""Read TensorFlow V2 ("tensor bundle") checkpoints with numpy only, no TensorFlow.

A V2 checkpoint `<prefix>` is made of

* `<prefix>.index`: an SSTable (LevelDB table format). Key ``""`` holds a BundleHeaderProto
  (number of shards, endianness, version); every other key is a tensor name whose value is a
  BundleEntryProto (dtype, shape, shard id, byte offset and size, CRC32C of the bytes).
* `<prefix>.data-<shard:05d>-of-<num_shards:05d>`: the raw tensor bytes.

Every SSTable block and every tensor is verified against its masked CRC32C. The protobufs are
decoded by hand from the wire format; only the fields needed here are read and the rest skipped.

Public API::

    resolve_checkpoint(path) -> Path                      # the checkpoint prefix
    list_variables(path) -> {name: (shape, np.dtype)}
    read_checkpoint(path, names=None) -> {name: np.ndarray}
    crc32c(data) -> int

Every problem with the files raises `CheckpointError` with a one-line message naming the file.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CheckpointError",
    "TensorEntry",
    "crc32c",
    "list_variables",
    "masked_crc32c",
    "read_checkpoint",
    "resolve_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or uses a feature this reader does not support."""


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as used by LevelDB tables and TensorFlow tensor bundles.
# --------------------------------------------------------------------------------------------

_CRC32C_POLY = 0x82F63B78  # reflected form of 0x1EDC6F41
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)

# Below this size the plain byte loop beats the vectorised version's fixed costs.
_SMALL = 4096
# The vectorised CRC copies its input twice; bigger inputs go through in segments this long.
_SEGMENT = 1 << 25


def _crc_bytes(crc: int, data: bytes | memoryview) -> int:
    """Update a raw (un-inverted) CRC register byte by byte."""
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _apply(columns: tuple[int, ...], vec: int) -> int:
    """Apply a GF(2) 32x32 linear map, given as the images of the 32 unit vectors."""
    out = 0
    bit = 0
    while vec:
        if vec & 1:
            out ^= columns[bit]
        vec >>= 1
        bit += 1
    return out


@functools.lru_cache(maxsize=64)
def _zeros_operator(log2_len: int) -> np.ndarray:
    """Byte tables (4, 256) of the map "run 2**log2_len zero bytes through the CRC register".

    The raw CRC register is linear in its state, so appending n zero bytes is a fixed 32x32
    matrix over GF(2); squaring the one-byte matrix log2_len times gives the 2**k-byte one.
    """
    cols = tuple(_crc_bytes(1 << bit, b"\0") for bit in range(32))
    for _ in range(log2_len):
        cols = tuple(_apply(cols, c) for c in cols)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for lane in range(4):
        for value in range(1, 256):
            low = value & -value  # lowest set bit: build each entry from a smaller one
            tables[lane, value] = tables[lane, value ^ low] ^ cols[8 * lane + low.bit_length() - 1]
    return tables


def _crc_raw_vectorised(arr: np.ndarray) -> int:
    """Raw CRC (initial register 0, no final inversion) of a long uint8 array.

    The array is split into K chunks of L = 2**k bytes (zero-padded at the front, which does
    not change a raw CRC that starts from 0); numpy runs the byte-wise table algorithm on all K
    chunks at once, L steps; the chunk CRCs are then combined with the "L zero bytes" operator:
    crc(A + B) = zeros_L(crc(A)) ^ crc(B) when len(B) == L.
    """
    n = arr.size
    # L ~ sqrt(n / 8) balances the L numpy steps against the K python combine steps.
    log2_len = min(16, max(6, round(math.log2(max(n, 1) / 8) / 2)))
    length = 1 << log2_len
    chunks = -(-n // length)
    padded = np.zeros(chunks * length, dtype=np.uint8)
    padded[chunks * length - n :] = arr
    # Row i holds byte i of every chunk, contiguous, so each step reads one row.
    columns = np.ascontiguousarray(padded.reshape(chunks, length).T)
    state = np.zeros(chunks, dtype=np.uint32)
    table = _TABLE_NP
    scratch = np.empty(chunks, dtype=np.uint32)
    for row in columns:
        np.bitwise_xor(state, row, out=scratch)
        np.bitwise_and(scratch, 0xFF, out=scratch)
        np.right_shift(state, 8, out=state)
        np.bitwise_xor(state, table[scratch], out=state)
    t0, t1, t2, t3 = _zeros_operator(log2_len).tolist()
    crc = 0
    for chunk_crc in state.tolist():
        crc = (
            t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24]
        ) ^ chunk_crc
    return crc


def _append_zeros(crc: int, count: int) -> int:
    """The raw CRC register after `count` more zero bytes, one cached operator per set bit."""
    bit = 0
    while count:
        if count & 1:
            t0, t1, t2, t3 = _zeros_operator(bit).tolist()
            crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24]
        count >>= 1
        bit += 1
    return crc


def _crc_raw(arr: np.ndarray) -> int:
    """Raw CRC of a uint8 array, in segments so huge tensors need little extra memory:
    crc(A + B) = zeros_len(B)(crc(A)) ^ crc(B).
    """
    crc = 0
    for start in range(0, arr.size, _SEGMENT):
        segment = arr[start : start + _SEGMENT]
        if segment.size < _SMALL:
            part = _crc_bytes(0, segment.tobytes())
        else:
            part = _crc_raw_vectorised(segment)
        crc = _append_zeros(crc, segment.size) ^ part
    return crc


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC32C (Castagnoli) of `data`, e.g. ``crc32c(b"123456789") == 0xE3069283``."""
    if isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size < _SMALL:
        return _crc_bytes(_U32, arr.tobytes()) ^ _U32
    # The register is linear: starting from 0xFFFFFFFF instead of 0 adds what 0xFFFFFFFF
    # becomes after len(data) zero bytes, so the raw CRC needs no copy of the data.
    return _crc_raw(arr) ^ _append_zeros(_U32, arr.size) ^ _U32


def masked_crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """CRC32C masked as LevelDB and TensorFlow store it (rotate right by 15, add a constant)."""
    return _mask(crc32c(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


# --------------------------------------------------------------------------------------------
# Protobuf wire format (hand decoded).
# --------------------------------------------------------------------------------------------


class _DecodeError(Exception):
    """Malformed bytes; turned into a CheckpointError naming the file by the caller."""


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise _DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _DecodeError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    """int32/int64 fields are sent as 64-bit two's complement varints."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for each field of a serialised message.

    Varint and fixed values come as ints, length-delimited ones as bytes. Unknown fields are
    simply yielded and ignored by the caller, which is how they are skipped.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _DecodeError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise _DecodeError("truncated fixed64")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _DecodeError("truncated length-delimited field")
            value = bytes(buf[pos : pos + size])
            pos += size
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise _DecodeError("truncated fixed32")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:  # 3/4 are deprecated groups, never used by these messages; 6/7 are invalid
            raise _DecodeError(f"unsupported wire type {wire} (field {field})")
        yield field, wire, value


def _expect(field: int, wire: int, want: int) -> None:
    if wire != want:
        raise _DecodeError(f"field {field} has wire type {wire}, expected {want}")


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool
    min_consumer: int


def _parse_header(buf: bytes) -> _Header:
    """BundleHeaderProto: num_shards = 1, endianness = 2 (0 little, 1 big), version = 3."""
    num_shards, endianness, min_consumer = 0, 0, 0
    for field, wire, value in _fields(buf):
        if field == 1:
            _expect(field, wire, _VARINT)
            num_shards = _signed64(value)
        elif field == 2:
            _expect(field, wire, _VARINT)
            endianness = value
        elif field == 3:  # VersionDef: producer = 1, min_consumer = 2, bad_consumers = 3
            _expect(field, wire, _LEN)
            for vfield, vwire, vvalue in _fields(value):
                if vfield == 2:
                    _expect(vfield, vwire, _VARINT)
                    min_consumer = _signed64(vvalue)
    if endianness not in (0, 1):
        raise _DecodeError(f"unknown endianness {endianness}")
    return _Header(num_shards, endianness == 1, min_consumer)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives, from its BundleEntryProto."""

    name: str
    dtype_enum: int
    shape: tuple[int, ...] | None  # None: unknown rank
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool  # a partitioned variable: its data lives in separately keyed slices


def _parse_shape(buf: bytes) -> tuple[int, ...] | None:
    """TensorShapeProto: dim = 2 (repeated Dim{size = 1, name = 2}), unknown_rank = 3."""
    dims: list[int] = []
    unknown_rank = False
    for field, wire, value in _fields(buf):
        if field == 2:
            _expect(field, wire, _LEN)
            size = 0
            for dfield, dwire, dvalue in _fields(value):
                if dfield == 1:
                    _expect(dfield, dwire, _VARINT)
                    size = _signed64(dvalue)
            dims.append(size)
        elif field == 3:
            _expect(field, wire, _VARINT)
            unknown_rank = bool(value)
    return None if unknown_rank else tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    dtype_enum, shape, shard_id, offset, size, crc, sliced = 0, (), 0, 0, 0, 0, False
    for field, wire, value in _fields(buf):
        if field == 1:
            _expect(field, wire, _VARINT)
            dtype_enum = value
        elif field == 2:
            _expect(field, wire, _LEN)
            shape = _parse_shape(value)
        elif field == 3:
            _expect(field, wire, _VARINT)
            shard_id = _signed64(value)
        elif field == 4:
            _expect(field, wire, _VARINT)
            offset = _signed64(value)
        elif field == 5:
            _expect(field, wire, _VARINT)
            size = _signed64(value)
        elif field == 6:
            _expect(field, wire, _FIXED32)
            crc = value
        elif field == 7:
            _expect(field, wire, _LEN)
            sliced = True
    return TensorEntry(name, dtype_enum, shape, shard_id, offset, size, crc, sliced)


# TensorFlow DataType enum (types.proto) -> numpy dtype, for the dtypes this reader decodes.
_NUMPY_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    8: np.dtype(np.complex64),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    17: np.dtype(np.uint16),
    18: np.dtype(np.complex128),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
}
# Names of the others, only for error messages.
_TF_DTYPE_NAMES = {
    7: "string",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
}
# list_variables reports types numpy cannot hold as object, like TensorFlow does for strings.
_UNDECODABLE = np.dtype(object)


def _dtype_name(dtype_enum: int) -> str:
    if dtype_enum in _NUMPY_DTYPES:
        return _NUMPY_DTYPES[dtype_enum].name
    return _TF_DTYPE_NAMES.get(dtype_enum, f"DataType {dtype_enum}")


# --------------------------------------------------------------------------------------------
# SSTable (LevelDB table format) reading.
# --------------------------------------------------------------------------------------------

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5
_COMPRESSION_NAMES = {1: "snappy", 2: "zlib"}


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    """Return a block's contents after checking its bounds, CRC and compression type."""
    end = offset + size + _BLOCK_TRAILER
    if end > len(data) - _FOOTER_SIZE:
        raise _DecodeError(f"block at {offset} (+{size}) runs past the end (file truncated?)")
    block = data[offset : offset + size + 1]  # contents + compression type byte
    stored = int.from_bytes(data[offset + size + 1 : end], "little")
    if masked_crc32c(block) != stored:
        raise _DecodeError(f"block at offset {offset} fails its CRC check (file corrupt)")
    kind = data[offset + size]
    if kind != 0:
        name = _COMPRESSION_NAMES.get(kind, f"type {kind}")
        raise _DecodeError(f"block at offset {offset} is {name}-compressed (unsupported)")
    return block[:-1]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) from a block of prefix-compressed entries with a restart array."""
    if len(block) < 4:
        raise _DecodeError("block shorter than its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _DecodeError("block restart array larger than the block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise _DecodeError("malformed block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable held in memory, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise _DecodeError(f"{len(data)} bytes, shorter than the 48-byte footer (truncated?)")
    footer = data[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise _DecodeError("bad magic number: not an SSTable (truncated or not a checkpoint?)")
    _, _, pos = _block_handle(footer)  # metaindex: TensorFlow puts nothing there we need
    index_offset, index_size, _ = _block_handle(footer, pos)
    index = _read_block(data, index_offset, index_size)
    for _, handle in _block_entries(index):
        offset, size, _ = _block_handle(handle)
        yield from _block_entries(_read_block(data, offset, size))


# --------------------------------------------------------------------------------------------
# Checkpoint files.
# --------------------------------------------------------------------------------------------

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_STEP = re.compile(r"-(\d+)$")
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)


def _index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def _data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def _from_state_file(folder: Path) -> Path | None:
    """The prefix named by TensorFlow's `checkpoint` state file, if it names one that exists."""
    state = folder / "checkpoint"
    if not state.is_file():
        return None
    try:
        match = _STATE_LINE.search(state.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise CheckpointError(f"{state}: cannot read ({exc.strerror})") from exc
    if not match:
        return None
    named = Path(re.sub(r"\\(.)", r"\1", match.group(1)))
    # Relative paths are relative to the folder; absolute ones often point at the machine the
    # model was trained on, so fall back to the same file name next to the state file.
    for candidate in (folder / named, folder / named.name):
        if _index_path(candidate).is_file():
            return candidate
    return None


def _latest_in_folder(folder: Path) -> Path:
    prefixes = [p.with_name(p.name[: -len(".index")]) for p in folder.glob("*.index")]
    if not prefixes:
        raise CheckpointError(f"{folder}: no TensorFlow checkpoint (*.index) in this folder")

    def step(prefix: Path) -> tuple[int, str]:
        match = _STEP.search(prefix.name)
        return (int(match.group(1)) if match else -1, prefix.name)

    return max(prefixes, key=step)


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint prefix (e.g. ``.../model.ckpt-60000``) for a user-given path.

    Accepts the prefix itself, its ``.index`` or ``.data-*`` file, or a folder: the folder's
    ``checkpoint`` state file (``model_checkpoint_path``) decides when present and valid,
    otherwise the ``*.index`` with the highest trailing step number is used.
    """
    path = Path(path)
    if path.is_dir():
        prefix = _from_state_file(path) or _latest_in_folder(path)
    elif path.name.endswith(".index"):
        prefix = path.with_name(path.name[: -len(".index")])
    elif _DATA_SUFFIX.search(path.name):
        prefix = path.with_name(_DATA_SUFFIX.sub("", path.name))
    else:
        prefix = path
    index = _index_path(prefix)
    if not index.is_file():
        if prefix.is_file():
            raise CheckpointError(
                f"{prefix}: not a TensorFlow V2 checkpoint ({index.name} not found; "
                "V1 single-file checkpoints are not supported)"
            )
        raise CheckpointError(f"{index}: checkpoint index not found")
    return prefix


@dataclass(frozen=True)
class _Index:
    prefix: Path
    header: _Header
    entries: dict[str, TensorEntry]


def _load_index(path: str | Path) -> _Index:
    prefix = resolve_checkpoint(path)
    index_path = _index_path(prefix)
    try:
        data = index_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{index_path}: cannot read ({exc.strerror})") from exc
    header: _Header | None = None
    entries: dict[str, TensorEntry] = {}
    try:
        for key, value in _table_items(data):
            if key == b"":
                header = _parse_header(value)
            elif key[0] == 0:
                # Keys of the slices of partitioned variables (OrderedCode, leading 0 byte).
                continue
            else:
                name = key.decode("utf-8", errors="replace")
                entries[name] = _parse_entry(name, value)
    except _DecodeError as exc:
        raise CheckpointError(f"{index_path}: {exc}") from None
    if header is None:
        raise CheckpointError(f"{index_path}: no bundle header (not a TensorFlow V2 checkpoint)")
    if header.num_shards < 1:
        raise CheckpointError(f"{index_path}: invalid number of shards {header.num_shards}")
    if header.min_consumer > 1:
        raise CheckpointError(
            f"{index_path}: written by a newer TensorFlow (bundle min_consumer "
            f"{header.min_consumer} > 1)"
        )
    for entry in entries.values():
        if not 0 <= entry.shard_id < header.num_shards:
            raise CheckpointError(
                f"{index_path}: tensor {entry.name!r} is in shard {entry.shard_id}, "
                f"but the checkpoint has {header.num_shards}"
            )
    return _Index(prefix, header, entries)


def list_variables(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every tensor in the checkpoint: name -> (shape, numpy dtype), in key (sorted) order.

    Reads only the index file. Tensors numpy cannot represent (strings, bfloat16, ...) are
    listed with dtype ``object``; reading them raises CheckpointError. An unknown-rank shape
    is reported as ``()``.
    """
    index = _load_index(path)
    return {
        name: (entry.shape or (), _NUMPY_DTYPES.get(entry.dtype_enum, _UNDECODABLE))
        for name, entry in index.entries.items()
    }


def _check_readable(entry: TensorEntry, index_path: Path) -> None:
    """Fail before reading any bytes when a requested tensor cannot be decoded."""
    where = f"{index_path}: tensor {entry.name!r}"
    if entry.sliced:
        raise CheckpointError(f"{where} is a partitioned (sliced) variable, unsupported")
    if entry.dtype_enum not in _NUMPY_DTYPES:
        raise CheckpointError(f"{where} has dtype {_dtype_name(entry.dtype_enum)}, unsupported")
    if entry.shape is None or any(d < 0 for d in entry.shape):
        raise CheckpointError(f"{where} has an unknown shape")


def _decode(entry: TensorEntry, raw: bytearray, big_endian: bool, data_path: Path) -> np.ndarray:
    dtype = _NUMPY_DTYPES[entry.dtype_enum]
    expected = math.prod(entry.shape) * dtype.itemsize
    if expected != len(raw):
        raise CheckpointError(
            f"{data_path}: tensor {entry.name!r} holds {len(raw)} bytes, but shape "
            f"{entry.shape} of {dtype.name} needs {expected}"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder(">" if big_endian else "<"))
    return array.astype(dtype, copy=False).reshape(entry.shape)


def read_checkpoint(path: str | Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read tensors from a checkpoint as writable numpy arrays, each checked by its CRC32C.

    `names` picks which tensors (in that order); default all, in key order. A requested name
    the checkpoint lacks raises CheckpointError naming it.
    """
    index = _load_index(path)
    if names is None:
        wanted = list(index.entries)
    else:
        wanted = list(dict.fromkeys([names] if isinstance(names, str) else names))
        missing = [n for n in wanted if n not in index.entries]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CheckpointError(
                f"{_index_path(index.prefix)}: no variable {shown}{more} in this checkpoint"
            )
    entries = [index.entries[n] for n in wanted]
    for entry in entries:
        _check_readable(entry, _index_path(index.prefix))

    result: dict[str, np.ndarray] = {}
    num_shards = index.header.num_shards
    for shard in sorted({e.shard_id for e in entries}):
        data_path = _data_path(index.prefix, shard, num_shards)
        try:
            handle = data_path.open("rb")
        except FileNotFoundError:
            raise CheckpointError(f"{data_path}: checkpoint data shard not found") from None
        except OSError as exc:
            raise CheckpointError(f"{data_path}: cannot open ({exc.strerror})") from None
        with handle:
            file_size = data_path.stat().st_size
            # Reading in offset order keeps the access sequential.
            for entry in sorted((e for e in entries if e.shard_id == shard), key=_offset):
                if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > file_size:
                    raise CheckpointError(
                        f"{data_path}: tensor {entry.name!r} at bytes "
                        f"[{entry.offset}, {entry.offset + entry.size}) lies past the end of "
                        f"the {file_size}-byte file (truncated?)"
                    )
                handle.seek(entry.offset)
                raw = bytearray(entry.size)
                if handle.readinto(raw) != entry.size:
                    raise CheckpointError(f"{data_path}: short read for tensor {entry.name!r}")
                if masked_crc32c(raw) != entry.crc32c:
                    raise CheckpointError(
                        f"{data_path}: tensor {entry.name!r} fails its CRC32C check (file corrupt)"
                    )
                result[entry.name] = _decode(entry, raw, index.header.big_endian, data_path)
    return {name: result[name] for name in wanted}


def _offset(entry: TensorEntry) -> int:
    return entry.offset
