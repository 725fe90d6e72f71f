from __future__ import annotations

import numpy as np
import pytest

from tiercache import codec
from tiercache.errors import InvalidMetadataError

rng = np.random.default_rng(0)


def unit(dim: int = 384) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_float32_round_trip_is_exact_with_metadata_and_expiry() -> None:
    v = unit()
    blob = codec.pack_blob({"src": "faq", "n": [1, 2]}, "the text")
    raw = codec.encode_record(v, "float32", 123.5, blob)
    assert len(raw) == codec.record_size(384, "float32", len(blob))
    rec = codec.decode_record(raw, 384)
    assert rec is not None
    assert np.array_equal(rec.vector, v) and rec.vector.dtype == np.float32
    assert rec.expires_at == 123.5
    assert rec.metadata() == {"src": "faq", "n": [1, 2]}
    assert rec.text() == "the text"


def test_lossy_codecs_keep_direction() -> None:
    v = unit()
    r16 = codec.decode_record(codec.encode_record(v, "float16"), 384)
    r8 = codec.decode_record(codec.encode_record(v, "int8"), 384)
    assert r16 is not None and r8 is not None
    assert cosine(v, r16.vector) >= 0.9999
    assert cosine(v, r8.vector) >= 0.999
    assert len(codec.encode_record(v, "float16")) == 24 + 768
    assert len(codec.encode_record(v, "int8")) == 24 + 384


def test_decoded_vector_does_not_alias_the_buffer() -> None:
    buf = bytearray(codec.encode_record(unit(8), "float32"))
    rec = codec.decode_record(memoryview(buf), 8)
    assert rec is not None
    before = rec.vector.copy()
    buf[30] ^= 0xFF
    assert np.array_equal(rec.vector, before)


@pytest.mark.parametrize("codec_name", ["float32", "float16", "int8"])
def test_every_single_bit_flip_is_detected(codec_name: str) -> None:
    raw = codec.encode_record(unit(8), codec_name, 0.0, codec.pack_blob({"a": 1}))
    for byte in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[byte] ^= 1 << bit
            assert codec.decode_record(bytes(bad), 8) is None, (byte, bit)


def test_truncated_wrong_dim_and_garbage_are_misses() -> None:
    raw = codec.encode_record(unit(8), "float32")
    for n in range(len(raw)):
        assert codec.decode_record(raw[:n], 8) is None
    assert codec.decode_record(raw, 16) is None
    assert codec.decode_record(b"\x00" * 100, 8) is None
    assert codec.decode_record(raw + b"x", 8) is None


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
    assert codec.encode_records(m, name, exp, blobs) == [
        codec.encode_record(m[i], name, exp[i], blobs[i]) for i in range(40)]
    assert codec.encode_records(m, name, 7.0) == [
        codec.encode_record(m[i], name, 7.0) for i in range(40)]
    assert codec.encode_records(m[:0], name) == []
