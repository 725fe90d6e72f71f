from __future__ import annotations

import numpy as np
import pytest

from tiercache import codec
from tiercache.errors import InvalidMetadataError

rng = np.random.default_rng(0)
K = bytes(range(16))  # the key every record here is written for
OTHER = bytes(range(1, 17))


def unit(dim: int = 384) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_float32_round_trip_is_exact_with_metadata_and_expiry() -> None:
    v = unit()
    blob = codec.pack_blob({"src": "faq", "n": [1, 2]}, "the text")
    raw = codec.encode_record(v, "float32", 123.5, blob, key=K)
    assert len(raw) == codec.record_size(384, "float32", len(blob))
    rec = codec.decode_record(raw, 384, K)
    assert rec is not None
    assert np.array_equal(rec.vector, v) and rec.vector.dtype == np.float32
    assert rec.expires_at == 123.5
    assert rec.metadata() == {"src": "faq", "n": [1, 2]}
    assert rec.text() == "the text"


def test_lossy_codecs_keep_direction() -> None:
    v = unit()
    r16 = codec.decode_record(codec.encode_record(v, "float16", key=K), 384, K)
    r8 = codec.decode_record(codec.encode_record(v, "int8", key=K), 384, K)
    assert r16 is not None and r8 is not None
    assert cosine(v, r16.vector) >= 0.9999
    assert cosine(v, r8.vector) >= 0.999
    assert len(codec.encode_record(v, "float16", key=K)) == 24 + 768
    assert len(codec.encode_record(v, "int8", key=K)) == 24 + 384


def test_decoded_vector_does_not_alias_the_buffer() -> None:
    buf = bytearray(codec.encode_record(unit(8), "float32", key=K))
    rec = codec.decode_record(memoryview(buf), 8, K)
    assert rec is not None
    before = rec.vector.copy()
    buf[30] ^= 0xFF
    assert np.array_equal(rec.vector, before)


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_every_single_bit_flip_is_detected(codec_name: str) -> None:
    raw = codec.encode_record(unit(8), codec_name, 0.0, codec.pack_blob({"a": 1}), key=K)
    for byte in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            assert codec.decode_record(bytes(bad), 8, K) is None, (byte, bit)


def test_truncated_wrong_dim_and_garbage_are_misses() -> None:
    raw = codec.encode_record(unit(8), "float32", key=K)
    for n in range(len(raw)):
        assert codec.decode_record(raw[:n], 8, K) is None
    assert codec.decode_record(raw, 16, K) is None
    assert codec.decode_record(b"\x00" * 100, 8, K) is None
    assert codec.decode_record(raw + b"x", 8, K) is None


def test_unserialisable_metadata_is_typed_error() -> None:
    with pytest.raises(InvalidMetadataError):
        codec.pack_blob({"s": {1, 2}})
    with pytest.raises(InvalidMetadataError):
        codec.pack_blob(object())
    with pytest.raises(InvalidMetadataError):
        codec.pack_blob({"big": 1 << 70})
    with pytest.raises(InvalidMetadataError):
        codec.pack_blob({"x": "a" * (codec.MAX_METADATA_BYTES + 1)})
    assert codec.pack_blob(None, None) is None


@pytest.mark.parametrize("name", ["float32", "float16", "int8"])
def test_encode_records_equals_encode_record_row_by_row(name: str) -> None:
    rng = np.random.default_rng(11)
    m = rng.standard_normal((40, 24), dtype=np.float32)
    blobs = [None if i % 3 else codec.pack_blob({"i": i}, "t") for i in range(40)]
    exp = [0.0 if i % 2 else 1e9 + i for i in range(40)]
    keys = [bytes([i]) * 16 for i in range(40)]
    assert codec.encode_records(m, name, exp, blobs, keys=keys) == [
        codec.encode_record(m[i], name, exp[i], blobs[i], key=keys[i]) for i in range(40)
    ]
    assert codec.encode_records(m, name, 7.0, keys=keys) == [
        codec.encode_record(m[i], name, 7.0, key=keys[i]) for i in range(40)
    ]
    assert codec.encode_records(m[:0], name, keys=[]) == []
    with pytest.raises(ValueError):
        codec.encode_records(m, name, keys=keys[:-1])


def _same(a: object, b: object) -> bool:
    """decode_at's (vector, expires_at, blob) against decode_record's Record."""
    if a is None or b is None:
        return a is None and b is None
    vec, exp, blob = a  # type: ignore[misc]
    return bool(
        np.array_equal(vec, b.vector)
        and exp == b.expires_at  # type: ignore[attr-defined]
        and blob == b.blob
        and vec.flags.writeable
    )  # type: ignore[attr-defined]


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_decode_at_equals_decode_record_inside_a_larger_buffer(codec_name: str) -> None:
    """decode_at reads a record where it lies (a packed segment): the same answer as
    decode_record on the record alone, for intact records, every bit flip and every
    truncation; bytes around the record are never read."""
    for blob in (None, codec.pack_blob({"a": 1})):
        raw = codec.encode_record(unit(8), codec_name, 5.0, blob, key=K)
        pad = b"\xa5" * 40
        seg = memoryview(pad + raw + pad)
        assert _same(codec.decode_at(seg, 40, 40 + len(raw), 8, K), codec.decode_record(raw, 8, K))
        assert codec.decode_at(seg, 40, 40 + len(raw), 16, K) is None
        for n in range(len(raw)):
            assert codec.decode_at(seg, 40, 40 + n, 8, K) is None
        for byte in range(len(raw)):
            for bit in range(8):
                bad = bytearray(pad + raw + pad)
                bad[40 + byte] ^= 1 << bit
                assert codec.decode_at(bytes(bad), 40, 40 + len(raw), 8, K) is None, (byte, bit)
    assert codec.decode_at(b"", 0, 0, 8, K) is None


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_decode_rows_classifies_like_decode_raw(codec_name: str) -> None:
    """decode_rows' fast rows are exactly the rows decode_raw accepts with this codec and
    no blob (same vector, same expiry); its bad rows are the ones decode_raw rejects; rows
    of another codec or with a blob are left to decode_raw."""
    rng = np.random.default_rng(3)
    dim = 8
    n = 60
    m = rng.standard_normal((n, dim), dtype=np.float32)
    keys = [rng.bytes(16) for _ in range(n)]
    recs = codec.encode_records(
        m, codec_name, [0.0 if i % 2 else 100.0 + i for i in range(n)], keys=keys
    )
    size = len(recs[0])
    rows = []
    for i, rec in enumerate(recs):
        b = bytearray(rec)
        if i % 5 == 1:
            b[rng.integers(0, size)] ^= 1 << int(rng.integers(0, 8))  # corrupt anywhere
        if i % 11 == 3:  # a record of another codec of the same length: not this codec's
            b[5] = (b[5] + 1) % 3
        if i % 13 == 7:  # filed under another key: corrupt
            keys[i] = rng.bytes(16)
        rows.append(keys[i] + bytes(b))
    buf = b"".join(rows)
    masks = codec.key_masks(keys)
    fast, bad, exp, mat = codec.decode_rows(buf, n, 16 + size, 16, dim, codec_name, masks)
    assert not (fast & bad).any()
    for i in range(n):
        rec = buf[i * (16 + size) + 16 : (i + 1) * (16 + size)]
        raw = codec.decode_raw(rec, dim, keys[i])
        if fast[i]:
            assert raw is not None and raw[0] == codec.CODEC_IDS[codec_name] and raw[3] is None
            assert np.array_equal(mat[i], codec.decode_record(rec, dim, keys[i]).vector)  # type: ignore[union-attr]
            assert exp[i] == raw[2]
        elif bad[i]:
            assert raw is None
        else:  # decode_raw decides: another codec (or a corrupted header)
            assert rec[5] != codec.CODEC_IDS[codec_name] or raw is None
    assert fast.sum() > n // 2 and bad.sum() > 0
    assert all(not fast[i] for i in range(7, n, 13)) and any(bad[i] for i in range(7, n, 13))
    empty = codec.decode_rows(b"", 0, 16 + size, 16, dim, codec_name, masks[:0])
    assert empty[0].shape == (0,) and empty[3].shape == (0, dim)


def _legacy(raw: bytes) -> bytes:
    """``raw`` rewritten as a version-1 record (written before the key binding): version
    byte 1, the checksum over the rest alone."""
    rest = bytearray(raw[4:])
    rest[0] = codec.LEGACY_VERSION
    from xxhash import xxh3_64_intdigest

    return (xxh3_64_intdigest(bytes(rest)) & 0xFFFFFFFF).to_bytes(4, "little") + bytes(rest)


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_a_record_verifies_only_under_its_own_key(codec_name: str) -> None:
    """A valid record copied under another key is corrupt in every decoder (the checksum is
    bound to the key), and a version-1 record (no binding) is still read by every one."""
    v = unit(8)
    for blob in (None, codec.pack_blob({"a": 1})):
        raw = codec.encode_record(v, codec_name, 0.0, blob, key=K)
        assert raw[4] == codec.FORMAT_VERSION == 2
        assert codec.decode_record(raw, 8, K) is not None
        assert codec.decode_record(raw, 8, OTHER) is None
        assert codec.decode_raw(raw, 8, OTHER) is None
        assert codec.decode_at(raw, 0, len(raw), 8, OTHER) is None
        assert codec.describe_record(raw, OTHER) is None
        assert codec.describe_record(raw, K) is not None
        old = _legacy(raw)
        assert _same(codec.decode_at(old, 0, len(old), 8, OTHER), codec.decode_record(raw, 8, K))
        assert codec.decode_raw(old, 8, K) == codec.decode_raw(raw, 8, K)
    if codec_name != "int8":  # decode_rows: rows of this codec without a blob
        keys = [K, OTHER, K]
        recs = [codec.encode_record(v, codec_name, key=K)] * 2 + [
            _legacy(codec.encode_record(v, codec_name, key=K))
        ]
        buf = b"".join(k + r for k, r in zip(keys, recs))
        size = len(recs[0])
        fast, bad, _, _ = codec.decode_rows(
            buf, 3, 16 + size, 16, 8, codec_name, codec.key_masks(keys)
        )
        assert fast.tolist() == [True, False, True] and bad.tolist() == [False, True, False]
