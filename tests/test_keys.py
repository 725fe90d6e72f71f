from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiercache.errors import InvalidContentError
from tiercache.keys import KEY_BYTES, Fingerprint, KeyMaker, key_from_str, key_to_str

FP = Fingerprint(model="m", dim=384, revision="1", normalize=True, role="document")


def test_key_is_128_bit_and_deterministic() -> None:
    km = KeyMaker(FP)
    k = km.digest("hello")
    assert len(k) == KEY_BYTES == 16
    assert KeyMaker(FP).digest("hello") == k


def test_str_and_bytes_never_share_a_key() -> None:
    km = KeyMaker(FP)
    assert km.digest("abc") != km.digest(b"abc")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Fingerprint)])
def test_every_fingerprint_field_changes_the_key(field: str) -> None:
    value = getattr(FP, field)
    if isinstance(value, bool):
        new = not value
    elif isinstance(value, int):
        new = value + 1
    else:
        new = value + "x"
    other = dataclasses.replace(FP, **{field: new})
    assert KeyMaker(FP).digest("same text") != KeyMaker(other).digest("same text")


def test_field_boundaries_are_unambiguous() -> None:
    # "ab"+"c" vs "a"+"bc": length prefixes keep these apart
    a = Fingerprint(model="ab", dim=1, revision="c")
    b = Fingerprint(model="a", dim=1, revision="bc")
    assert a.encode() != b.encode()
    assert KeyMaker(a).digest("t") != KeyMaker(b).digest("t")


@given(
    st.tuples(st.text(), st.text(), st.one_of(st.text(), st.binary())),
    st.tuples(st.text(), st.text(), st.one_of(st.text(), st.binary())),
)
def test_distinct_tuples_have_distinct_preimages(x: tuple, y: tuple) -> None:  # type: ignore[type-arg]
    fx = Fingerprint(model=x[0], dim=8, role=x[1])
    fy = Fingerprint(model=y[0], dim=8, role=y[1])
    enc_x = fx.encode() + repr((type(x[2]), x[2])).encode()
    enc_y = fy.encode() + repr((type(y[2]), y[2])).encode()
    same_input = (fx == fy) and type(x[2]) is type(y[2]) and x[2] == y[2]
    assert (enc_x == enc_y) == same_input
    assert (KeyMaker(fx).digest(x[2]) == KeyMaker(fy).digest(y[2])) == same_input


@pytest.mark.parametrize("bad", [None, 1, 1.5, ["a"], {"a": 1}])
def test_non_text_content_is_a_typed_error(bad: object) -> None:
    with pytest.raises(InvalidContentError):
        KeyMaker(FP).digest(bad)  # type: ignore[arg-type]


def test_public_key_round_trip() -> None:
    k = KeyMaker(FP).digest("x")
    assert key_from_str(key_to_str(k)) == k
    with pytest.raises(InvalidContentError):
        key_from_str("zz")
    with pytest.raises(InvalidContentError):
        key_from_str("ab" * 4)


def test_fingerprint_diff_and_dict_round_trip() -> None:
    other = dataclasses.replace(FP, revision="2")
    assert FP.diff(other) == {"revision": ("1", "2")}
    assert Fingerprint.from_dict(FP.to_dict()) == FP


def test_vectorised_hash_agrees_with_scalar() -> None:
    import numpy as np

    from tiercache.keys import key_hash64, key_hash64_many

    keys = [KeyMaker(FP).digest(str(i)) for i in range(50)]
    assert key_hash64_many(keys).tolist() == [key_hash64(k) for k in keys]
    odd = [b"short", keys[0]]
    assert key_hash64_many(odd).tolist() == [key_hash64(k) for k in odd]
    assert key_hash64_many([]).dtype == np.uint64


def test_compiled_digest_equals_hashlib() -> None:
    """KeyMaker.digest in C (``_core.Digester``) is hashlib's digest byte for byte: str
    (ASCII and not), bytes, lengths around BLAKE2b's 128-byte block; other types and
    lone surrogates fall back to hashlib; ``digests`` keeps input order."""
    km = KeyMaker(FP)
    if km._c is None:
        pytest.skip("the compiled core is not built")
    rng = np.random.default_rng(5)
    contents: list[Any] = ["", b"", "é", "\U0001f600 x", "\udc80 lone", "a" * 127, "a" * 128]
    contents += ["é" * n for n in (60, 63, 64, 65, 200)] + [b"\x00" * n for n in (111, 112, 113)]
    contents += [rng.bytes(int(n)) for n in rng.integers(0, 600, 200)]
    contents += [
        "".join(map(chr, rng.integers(32, 0x2FFF, int(n)))) for n in rng.integers(0, 300, 200)
    ]
    for c in contents:
        assert km.digest(c) == km._digest_py(c), c
    assert km._c.digest("\udc80 lone") is None and km._c.digest(bytearray(b"x")) is None
    mixed = contents + [bytearray(b"ba"), memoryview(b"mv")]
    assert km.digests(mixed) == [km._digest_py(c) for c in mixed]
    with pytest.raises(InvalidContentError):
        km.digests(["ok", 3])  # type: ignore[list-item]
