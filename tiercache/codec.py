"""Record format: a small versioned header, raw little-endian vector bytes, optional msgpack.

Layout (all little-endian)::

    offset size field
    0      4    checksum: low 32 bits of XXH3-64 over every byte after offset 4, XORed
                with the first 4 bytes of the record's key (version 2; see below)
    4      1    format version (2; 1 is still read)
    5      1    codec id (0 float32, 1 float16, 2 int8)
    6      1    flags (bit 0: a msgpack blob follows the vector)
    7      1    reserved (0)
    8      4    dim (uint32)
    12     8    expires_at (float64 unix seconds; 0.0 = never)
    20     4    scale (float32; int8 dequantisation scale, 1.0 otherwise)
    24     ...  vector: dim * itemsize bytes
    ...    ...  msgpack map {"m": metadata, "t": source text} when flag bit 0 is set

A 384-d float32 record is 24 + 1536 = 1560 bytes: small enough to live in an LMDB leaf page
(two per 4 KiB page) rather than an overflow page; see docs/record-format.md.

**Bound to its key.** A version-2 record verifies only under the key it was written for:
its checksum is XORed with the key's first 4 bytes (a little-endian uint32 of the 16-byte
BLAKE2b digest), so a record copied or misfiled under another key decodes as corrupt (a
miss), never as that key's vector; it costs one XOR. Version-1 records (written before
this binding) are still read, with the checksum alone, so that no stored vector is lost on
upgrade (a vector given to ``set`` cannot be recomputed); every write is version 2. The
binding is against accidents (a bug, a misdirected copy): whoever can write the store can
write any record, and the shared tier adds a keyed tag for that (``tiers/redis.py``).

Never pickle, never JSON for vectors. Decoding never raises to callers: a record that is
short, has an unknown version or codec, the wrong dim or a bad checksum decodes to ``None``
and the cache counts it as a corrupt miss.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
from xxhash import xxh3_64_intdigest

from .errors import InvalidMetadataError

FORMAT_VERSION = 2
LEGACY_VERSION = 1  # unbound checksum: read, never written
HEADER = struct.Struct("<IBBBBIdf")
HEADER_SIZE = HEADER.size  # 24
_unpack_header = HEADER.unpack_from
_FIELDS = struct.Struct("<BBBBIdf")  # the 20 header bytes after the checksum
_CHECK = struct.Struct("<I")
_MASK32 = 0xFFFFFFFF


def checksum(data: bytes | memoryview, key: bytes) -> int:
    """The 32-bit checksum of a version-2 record whose bytes after the checksum field are
    ``data`` and whose key is ``key``: XXH3-64's low half XOR :func:`key_mask` (~0.2 us
    per 1.5 KB record).

    It detects accidental corruption (bit rot, torn or truncated writes) and a record
    under another key, not tampering: whoever can write the cache directory can write
    any record.
    """
    return (xxh3_64_intdigest(data) & _MASK32) ^ key_mask(key)


def key_mask(key: bytes) -> int:
    """What a version-2 record's checksum is XORed with: the key's first 4 bytes as a
    little-endian uint32 (keys are BLAKE2b digests: uniform bits)."""
    return int.from_bytes(key[:4], "little")


def key_masks(keys: Sequence[bytes]) -> np.ndarray:
    """:func:`key_mask` of each key, as a uint32 array (the batch decoders' form)."""
    return np.frombuffer(b"".join([bytes(k[:4]).ljust(4, b"\0") for k in keys]), dtype="<u4")


CODEC_IDS = {"float32": 0, "float16": 1, "int8": 2}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
_ITEMSIZE: dict[int, int] = {0: 4, 1: 2, 2: 1}
_DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("i1")}
FLAG_BLOB = 1

MAX_METADATA_BYTES = 1 << 20
"""Largest msgpack blob (metadata + text) accepted per record, in bytes."""


class Record:
    """A decoded record. ``vector`` is a fresh float32 array owned by the caller.

    A plain slotted class rather than a frozen dataclass: it is built on every warm read,
    and a frozen dataclass's ``__init__`` costs about a microsecond more here.
    """

    __slots__ = ("vector", "expires_at", "blob")

    def __init__(self, vector: np.ndarray, expires_at: float, blob: bytes | None) -> None:
        self.vector = vector
        self.expires_at = expires_at
        self.blob = blob

    def metadata(self) -> Any:
        return unpack_blob(self.blob).get("m") if self.blob else None

    def text(self) -> str | bytes | None:
        return unpack_blob(self.blob).get("t") if self.blob else None


def record_size(dim: int, codec: str, blob_len: int = 0) -> int:
    """Bytes of one encoded record."""
    return HEADER_SIZE + dim * _ITEMSIZE[CODEC_IDS[codec]] + blob_len


def pack_blob(metadata: Any = None, text: str | bytes | None = None) -> bytes | None:
    """msgpack the optional metadata and text; ``None`` when both are absent.

    Raises InvalidMetadataError when msgpack cannot hold the metadata (sets, objects,
    integers beyond 64 bits, ...) or the blob exceeds MAX_METADATA_BYTES.
    """
    if metadata is None and text is None:
        return None
    body: dict[str, Any] = {}
    if metadata is not None:
        body["m"] = metadata
    if text is not None:
        body["t"] = text
    try:
        blob: bytes = msgpack.packb(body, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidMetadataError(f"metadata cannot be serialised with msgpack: {exc}") from exc
    if len(blob) > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {len(blob)} bytes once packed; the limit is {MAX_METADATA_BYTES}"
        )
    return blob


def unpack_blob(blob: bytes) -> dict[str, Any]:
    out = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    return out if isinstance(out, dict) else {}


def _quantize(vector: np.ndarray, codec_id: int) -> tuple[bytes, float]:
    if codec_id == 0:
        return vector.astype("<f4", copy=False).tobytes(), 1.0
    if codec_id == 1:
        return vector.astype("<f2").tobytes(), 1.0
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.rint(vector / scale), -127, 127).astype("i1")
    return q.tobytes(), scale


def encode_record(
    vector: np.ndarray,
    codec: str = "float32",
    expires_at: float = 0.0,
    blob: bytes | None = None,
    *,
    key: bytes,
) -> bytes:
    """Encode one validated float32 vector (shape ``(dim,)``) into the record bytes of
    ``key`` (the 16-byte digest it is stored under: the checksum binds the record to it)."""
    codec_id = CODEC_IDS[codec]
    body, scale = _quantize(vector, codec_id)
    flags = FLAG_BLOB if blob else 0
    fields = _FIELDS.pack(FORMAT_VERSION, codec_id, flags, 0, vector.shape[0], expires_at, scale)
    rest = fields + body + blob if blob else fields + body
    return _CHECK.pack(checksum(rest, key)) + rest


def encode_records(
    matrix: np.ndarray,
    codec: str = "float32",
    expires_at: float | Sequence[float] = 0.0,
    blobs: Sequence[bytes | None] | None = None,
    *,
    keys: Sequence[bytes],
) -> list[bytes]:
    """Encode each row of a validated ``(n, dim)`` float32 matrix for the key of the same
    index; the same bytes as :func:`encode_record` row by row. ``expires_at`` is one value
    or one per row.

    float32 and float16 rows are converted in one numpy call and sliced; int8 rows need a
    scale each and go through :func:`encode_record`.
    """
    n = matrix.shape[0]
    if len(keys) != n:
        raise ValueError(f"{n} rows but {len(keys)} keys")
    expiries = (
        [float(expires_at)] * n
        if isinstance(expires_at, (int, float))
        else [float(e) for e in expires_at]
    )
    codec_id = CODEC_IDS[codec]
    if codec_id == 2 or n == 0:
        return [
            encode_record(matrix[i], codec, expiries[i], blobs[i] if blobs else None, key=keys[i])
            for i in range(n)
        ]
    dim = matrix.shape[1]
    if not blobs or not any(blobs):
        return _encode_plain_rows(matrix, codec_id, expiries, keys)
    body = matrix.astype("<f4" if codec_id == 0 else "<f2", copy=False).tobytes()
    width = dim * (4 if codec_id == 0 else 2)
    pack = _FIELDS.pack
    check = _CHECK.pack
    out: list[bytes] = []
    for i in range(n):
        blob = blobs[i] if blobs else None
        rest = (
            pack(FORMAT_VERSION, codec_id, FLAG_BLOB if blob else 0, 0, dim, expiries[i], 1.0)
            + body[i * width : (i + 1) * width]
        )
        if blob:
            rest += blob
        out.append(check((xxh3_64_intdigest(rest) & _MASK32) ^ key_mask(keys[i])) + rest)
    return out


def _encode_plain_rows(
    matrix: np.ndarray, codec_id: int, expiries: list[float], keys: Sequence[bytes]
) -> list[bytes]:
    """:func:`encode_records` of float32/float16 rows without blobs, vectorised: every
    header written by one structured view, every body by one converting copy; only the
    checksums are a Python loop (XXH3 per record), then one copy per record (no whole-buffer
    ``tobytes`` first: at ~1.3 GB/s here every extra pass over 15 MB costs ~1 us a record)."""
    n, dim = matrix.shape
    itemsize = _ITEMSIZE[codec_id]
    size = HEADER_SIZE + dim * itemsize
    rows = np.empty((n, size), dtype=np.uint8)
    head = np.ndarray((n,), dtype=_header_dtype(0, size), buffer=rows)
    head["version"] = FORMAT_VERSION
    head["codec"] = codec_id
    head["flags"] = 0
    rows[:, 7] = 0  # reserved
    head["dim"] = dim
    head["expires_at"] = expiries
    head["scale"] = 1.0
    rows[:, HEADER_SIZE:].view(_DTYPES[codec_id])[:] = matrix
    mv = memoryview(rows.reshape(-1).data)
    head["crc"] = np.fromiter(
        (xxh3_64_intdigest(mv[r + 4 : r + size]) & _MASK32 for r in range(0, n * size, size)),
        dtype=np.uint32,
        count=n,
    ) ^ key_masks(keys)
    return [mv[r : r + size].tobytes() for r in range(0, n * size, size)]  # one copy each


def peek_expiry(buf: bytes | memoryview) -> float | None:
    """``expires_at`` of a record (0.0 = never) without verifying it; None if too short."""
    if len(buf) < HEADER_SIZE:
        return None
    value: float = HEADER.unpack_from(buf, 0)[6]
    return value


RawRecord = tuple[int, float, float, "bytes | None", bytes]
"""A verified record, not yet a numpy array: ``(codec_id, scale, expires_at, blob,
payload)``; ``payload`` is a copy of the vector bytes (safe after the transaction).
Batches of them become one matrix with :func:`raw_to_matrix` (one join, one convert)."""


def decode_raw(buf: bytes | memoryview, dim: int, key: bytes) -> RawRecord | None:
    """Verify the record of ``key`` and copy its parts out; ``None`` if malformed, corrupt,
    of another key or of another dim. Cheaper than :func:`decode_record`: no numpy
    object per record.

    Hot in every warm read, hence written for the interpreter: few lookups, one slice.
    """
    try:
        crc, version, codec_id, flags, _, rdim, expires_at, scale = _unpack_header(buf, 0)
    except struct.error:  # shorter than a header
        return None
    itemsize = _ITEMSIZE.get(codec_id)
    if rdim != dim or itemsize is None:
        return None
    if version == FORMAT_VERSION:
        crc ^= int.from_bytes(key[:4], "little")  # key_mask, inlined
    elif version != LEGACY_VERSION:
        return None
    body_end = HEADER_SIZE + dim * itemsize
    n = len(buf)
    if n != body_end and (n < body_end or not flags & FLAG_BLOB):
        return None
    mv = buf if type(buf) is memoryview else memoryview(buf)
    if xxh3_64_intdigest(mv[4:]) & _MASK32 != crc:
        return None
    if codec_id == 2 and not math.isfinite(scale):
        return None
    if n == body_end:
        return (codec_id, scale, expires_at, None, bytes(mv[HEADER_SIZE:]))
    return (codec_id, scale, expires_at, bytes(mv[body_end:]), bytes(mv[HEADER_SIZE:body_end]))


_F4 = np.dtype("<f4")
_F2 = np.dtype("<f2")
_I1 = np.dtype("i1")
_frombuffer = np.frombuffer

VectorRecord = tuple[np.ndarray, float, "bytes | None"]
"""A verified record as ``(vector, expires_at, blob)``: ``vector`` a fresh writable float32
array owned by the caller."""


def decode_at(buf: Any, start: int, end: int, dim: int, key: bytes) -> VectorRecord | None:
    """Verify and decode the record of ``key`` at ``buf[start:end]`` without slicing it
    out first (a packed segment, or a whole plain record with ``start=0, end=len(buf)``);
    ``None`` if malformed, corrupt, of another key or of another dim. The caller
    guarantees ``end <= len(buf)``.

    The warm single-get path: one header unpack, one checksum over a view, one copy of the
    vector (positional ``frombuffer`` arguments with a dtype object: keyword and string
    forms cost ~0.5 us more here). Accepts exactly what :func:`decode_raw` accepts.
    """
    n = end - start
    if n < HEADER_SIZE:
        return None
    crc, version, codec_id, flags, _, rdim, expires_at, scale = _unpack_header(buf, start)
    if rdim != dim:
        return None
    if version == FORMAT_VERSION:
        crc ^= int.from_bytes(key[:4], "little")  # key_mask, inlined
    elif version != LEGACY_VERSION:
        return None
    if codec_id == 0:
        body_end = HEADER_SIZE + 4 * dim
    elif codec_id == 1 or codec_id == 2:
        body_end = HEADER_SIZE + (2 if codec_id == 1 else 1) * dim
    else:
        return None
    if n != body_end and (n < body_end or not flags & FLAG_BLOB):
        return None
    if xxh3_64_intdigest(buf[start + 4 : end]) & _MASK32 != crc:  # a view of the map: no copy
        return None
    blob = bytes(buf[start + body_end : end]) if n != body_end else None
    if codec_id == 0:
        # one copy into a bytearray the array then owns: ~0.15 us cheaper than
        # frombuffer(...).copy() (one numpy object instead of two)
        return (
            _frombuffer(bytearray(buf[start + HEADER_SIZE : start + body_end]), _F4),
            expires_at,
            blob,
        )
    if codec_id == 1:
        return (
            _frombuffer(buf, _F2, dim, start + HEADER_SIZE).astype(np.float32),
            expires_at,
            blob,
        )
    if not math.isfinite(scale):
        return None
    return (_frombuffer(buf, _I1, dim, start + HEADER_SIZE) * np.float32(scale), expires_at, blob)


def decode_rows(
    buf: bytes, n: int, stride: int, skip: int, dim: int, codec_name: str, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``n`` records of one length laid out every ``stride`` bytes in ``buf``, each
    starting ``skip`` bytes into its row (the warm batch path: packed slots with their
    digest in front). Vectorised: one structured view checks every header, one strided view
    converts every vector; only the checksums are a Python loop (XXH3 per record).
    ``masks``: :func:`key_masks` of the rows' keys (uint32, one per row).

    Returns ``(fast, bad, expires_at, matrix)``: ``fast`` marks rows of ``codec_name``
    without a blob whose header and checksum verify (their vector is ``matrix``'s row,
    their expiry ``expires_at``'s); ``bad`` marks rows that have that shape but fail the
    checksum (corrupt). Rows in neither (another codec, a blob, a header of another dim or
    version) are for :func:`decode_raw`, one by one. ``matrix`` rows of other rows are
    garbage and must not be used; for float32 ``matrix`` is a read-only view over ``buf``.
    """
    codec_id = CODEC_IDS[codec_name]
    itemsize = _ITEMSIZE[codec_id]
    if n == 0 or stride < skip + HEADER_SIZE + dim * itemsize:
        empty = np.zeros(n, dtype=bool)
        return empty, empty.copy(), np.zeros(n), np.zeros((n, dim), dtype=np.float32)
    head = np.ndarray((n,), dtype=_header_dtype(skip, stride), buffer=buf)
    version = head["version"]
    shape_ok = (
        ((version == FORMAT_VERSION) | (version == LEGACY_VERSION))
        & (head["codec"] == codec_id)
        & (head["flags"] == 0)
        & (head["dim"] == dim)
    )
    if stride != skip + HEADER_SIZE + dim * itemsize:
        shape_ok[:] = False  # records of another length: none of them is the plain shape
    if codec_id == 2:
        shape_ok &= np.isfinite(head["scale"])
    mv = memoryview(buf)
    lo = skip + 4
    sums = np.fromiter(
        (
            xxh3_64_intdigest(mv[r : r + stride - lo]) & _MASK32
            for r in range(lo, n * stride, stride)
        ),
        dtype=np.uint32,
        count=n,
    )
    good = sums == head["crc"] ^ np.where(version == FORMAT_VERSION, masks, np.uint32(0))
    fast = shape_ok & good
    bad = shape_ok & ~good
    body = np.ndarray(
        (n, dim),
        dtype=_DTYPES[codec_id],
        buffer=buf,
        offset=skip + HEADER_SIZE,
        strides=(stride, itemsize),
    )
    if codec_id == 0:
        matrix = body  # a view over ``buf``: the caller's one copy is its scatter
    elif codec_id == 1:
        matrix = body.astype(np.float32)
    else:
        matrix = body * head["scale"].astype(np.float32)[:, None]
    return fast, bad, head["expires_at"], matrix


@functools.lru_cache(maxsize=16)
def _header_dtype(skip: int, stride: int) -> np.dtype[Any]:
    return np.dtype(
        {
            "names": ["crc", "version", "codec", "flags", "dim", "expires_at", "scale"],
            "formats": ["<u4", "u1", "u1", "u1", "<u4", "<f8", "<f4"],
            "offsets": [skip, skip + 4, skip + 5, skip + 6, skip + 8, skip + 12, skip + 20],
            "itemsize": stride,
        }
    )


def describe_record(buf: bytes | memoryview, key: bytes) -> tuple[str, int, float, int] | None:
    """``(codec, dim, expires_at, blob_bytes)`` of the record of ``key`` if it verifies
    (any dim), or ``None`` if it is malformed or corrupt. For inspection tools, not the
    read path."""
    if len(buf) < HEADER_SIZE:
        return None
    dim = _unpack_header(buf, 0)[5]
    raw = decode_raw(buf, dim, key)
    if raw is None:
        return None
    names = {v: k for k, v in CODEC_IDS.items()}
    return names[raw[0]], dim, raw[2], len(raw[3]) if raw[3] is not None else 0


def raw_to_matrix(raws: list[RawRecord], dim: int) -> np.ndarray:
    """A new ``(len(raws), dim)`` float32 matrix of the records' vectors, in order."""
    out = np.empty((len(raws), dim), dtype=np.float32)
    if not raws:
        return out
    codecs = {r[0] for r in raws}
    if codecs == {0}:  # the common case: one join, one view, one copy
        out[:] = np.frombuffer(b"".join(r[4] for r in raws), dtype="<f4").reshape(-1, dim)
        return out
    for i, (codec_id, scale, _, _, payload) in enumerate(raws):
        row = np.frombuffer(payload, dtype=_DTYPES[codec_id], count=dim)
        out[i] = row * np.float32(scale) if codec_id == 2 else row
    return out


def decode_record(buf: bytes | memoryview, dim: int, key: bytes) -> Record | None:
    """Decode and verify the record of ``key``; ``None`` for anything malformed,
    corrupt, of another key or of another dim.

    Works on a buffer that is only valid inside an LMDB transaction: the vector is copied.
    """
    raw = decode_raw(buf, dim, key)
    if raw is None:
        return None
    codec_id, scale, expires_at, blob, payload = raw
    if codec_id == 0:  # the payload is already a private copy: wrap it writable
        return Record(np.frombuffer(bytearray(payload), dtype="<f4"), expires_at, blob)
    vec = np.frombuffer(payload, dtype=_DTYPES[codec_id], count=dim)
    vector = vec * np.float32(scale) if codec_id == 2 else vec.astype(np.float32)
    return Record(vector, expires_at, blob)
