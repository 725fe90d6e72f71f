"""FrequencySketch: exactness of the vectorised path, aging, count-min bounds, seeding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiercache.errors import ConfigError
from tiercache.sketch import DEPTH, MAX_COUNT, FrequencySketch

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
SEEDS = st.integers(min_value=-(1 << 70), max_value=1 << 70)


def _state(s: FrequencySketch) -> tuple[bytes, int, int]:
    return s.table.tobytes(), s.additions, s.resets


@pytest.mark.parametrize(
    ("capacity", "width"), [(0, 16), (1, 16), (16, 16), (17, 32), (1000, 1024), (1024, 1024)]
)
def test_width_is_power_of_two_at_least_capacity(capacity: int, width: int) -> None:
    s = FrequencySketch(capacity, seed=1)
    assert s.width == width
    assert s.table.shape == (DEPTH, width)
    assert s.table.dtype == np.uint8
    assert s.sample_size == 10 * max(capacity, 1)


@given(seed=SEEDS, capacity=st.integers(0, 5000), hashes=st.lists(U64, max_size=50))
@settings(max_examples=60, deadline=None)
def test_scalar_and_numpy_indices_agree(seed: int, capacity: int, hashes: list[int]) -> None:
    s = FrequencySketch(capacity, seed=seed)
    many = s.indices_many(np.array(hashes, dtype=np.uint64))
    assert many.shape == (DEPTH, len(hashes))
    for j, h in enumerate(hashes):
        idx = s.indices(h)
        assert tuple(int(x) for x in many[:, j]) == idx
        assert all(0 <= i < s.width for i in idx)


def test_scalar_index_reduces_modulo_2_64() -> None:
    s = FrequencySketch(100, seed=7)
    assert s.indices(-1) == s.indices((1 << 64) - 1)
    assert s.indices(5 + (1 << 64)) == s.indices(5)
    assert s.frequency_many(np.array([-1], dtype=np.int64))[0] == s.frequency((1 << 64) - 1)


@given(
    seed=SEEDS,
    capacity=st.integers(0, 40),
    sample_factor=st.integers(1, 4),
    # a small pool of hashes gives duplicates (saturation) and collisions
    pool=st.lists(U64, min_size=1, max_size=6, unique=True),
    batches=st.lists(st.lists(st.integers(0, 5), max_size=120), min_size=1, max_size=5),
)
@settings(max_examples=80, deadline=None)
def test_increment_many_equals_sequential_increments(
    seed: int, capacity: int, sample_factor: int, pool: list[int], batches: list[list[int]]
) -> None:
    vec = FrequencySketch(capacity, seed=seed, sample_factor=sample_factor)
    seq = FrequencySketch(capacity, seed=seed, sample_factor=sample_factor)
    for batch in batches:
        hashes = [pool[i % len(pool)] for i in batch]
        vec.increment_many(np.array(hashes, dtype=np.uint64))
        for h in hashes:
            seq.increment(h)
        assert _state(vec) == _state(seq)
    probe = np.array(pool, dtype=np.uint64)
    assert vec.frequency_many(probe).tolist() == [seq.frequency(h) for h in pool]


def test_increment_many_resets_mid_batch_and_saturates() -> None:
    # sample_size 16: a 40-element batch of one key crosses two resets.
    vec = FrequencySketch(1, seed=3, sample_factor=16)
    seq = FrequencySketch(1, seed=3, sample_factor=16)
    batch = np.full(40, 12345, dtype=np.uint64)
    vec.increment_many(batch)
    for h in batch.tolist():
        seq.increment(h)
    # by hand (sample_size 16): 16 increments saturate at 15, halve to 7, additions 8;
    # then three segments of 8 each go 7 -> 15 -> halve to 7. 16 + 8 + 8 + 8 = 40.
    assert vec.resets == seq.resets == 4
    assert _state(vec) == _state(seq)
    assert vec.additions == 8
    assert vec.frequency(12345) == 7


def test_large_batches_take_the_vectorised_path_and_match() -> None:
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 1 << 64, size=40, dtype=np.uint64, endpoint=False)
    vec = FrequencySketch(16, seed=4, sample_factor=3)  # sample_size 48: many resets
    seq = FrequencySketch(16, seed=4, sample_factor=3)
    for size in (17, 100, 47, 48, 49, 1000, 5):
        batch = pool[rng.integers(0, len(pool), size=size)]
        vec.increment_many(batch)
        for h in batch.tolist():
            seq.increment(h)
        assert _state(vec) == _state(seq)
    assert vec.resets > 20
    assert int(vec.table.max()) <= MAX_COUNT


def test_increment_many_accepts_lists_and_empty() -> None:
    s = FrequencySketch(10, seed=1)
    s.increment_many([])
    s.increment_many(np.array([], dtype=np.uint64))
    assert s.additions == 0 and not s.table.any()
    s.increment_many([1, 2, (1 << 64) - 1])
    assert s.additions == 3
    assert s.frequency((1 << 64) - 1) >= 1
    with pytest.raises(TypeError):
        s.increment_many(np.array([1.5]))


def test_aging_halves_every_counter_and_additions() -> None:
    s = FrequencySketch(8, seed=11, sample_factor=4)  # sample_size 32
    assert s.sample_size == 32
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 1 << 63, size=31, dtype=np.uint64)
    s.increment_many(hashes)
    assert s.resets == 0 and s.additions == 31
    before = s.table.copy()
    last = 987654321
    expected = before.astype(np.int64)
    for r, i in enumerate(s.indices(last)):
        expected[r, i] = min(expected[r, i] + 1, MAX_COUNT)
    s.increment(last)
    assert s.resets == 1
    assert s.additions == 16
    assert np.array_equal(s.table, (expected >> 1).astype(np.uint8))


def test_aging_forgets_old_popularity() -> None:
    s = FrequencySketch(16, seed=5, sample_factor=10)  # sample_size 160
    for _ in range(15):
        s.increment(1)
    assert s.frequency(1) == 15
    # other traffic drives several resets; key 1 decays 15 -> 7 -> 3 -> 1 -> 0
    s.increment_many(np.arange(1000, 1000 + 145 + 80 * 3, dtype=np.uint64) % 7 + 100)
    assert s.resets == 4
    assert s.frequency(1) <= 1


@given(seed=SEEDS, keys=st.lists(st.integers(0, 300), max_size=400))
@settings(max_examples=60, deadline=None)
def test_count_min_never_underestimates_before_reset(seed: int, keys: list[int]) -> None:
    s = FrequencySketch(64, seed=seed)  # sample_size 640 > len(keys): no reset
    s.increment_many(np.array(keys, dtype=np.uint64))
    assert s.resets == 0
    counts = Counter(keys)
    for k, c in counts.items():
        assert s.frequency(k) >= min(c, MAX_COUNT)
    est = s.frequency_many(np.array(list(counts), dtype=np.uint64))
    assert all(e >= min(c, MAX_COUNT) for e, c in zip(est.tolist(), counts.values(), strict=True))


def test_estimates_are_mostly_exact_when_sparse() -> None:
    s = FrequencySketch(4096, seed=2)
    for k in range(200):
        for _ in range(k % 5):
            s.increment(k)
    exact = sum(s.frequency(k) == k % 5 for k in range(200))
    assert exact >= 195


def test_seed_changes_the_index_hash() -> None:
    a = FrequencySketch(1 << 16, seed=1)
    b = FrequencySketch(1 << 16, seed=2)
    c = FrequencySketch(1 << 16, seed=1)
    hashes = list(range(100))
    assert [a.indices(h) for h in hashes] == [c.indices(h) for h in hashes]
    same = sum(a.indices(h) == b.indices(h) for h in hashes)
    assert same == 0


def test_rows_use_independent_indices() -> None:
    s = FrequencySketch(1 << 16, seed=9)
    idx = s.indices_many(np.arange(1000, dtype=np.uint64))
    for r in range(1, DEPTH):
        assert np.mean(idx[0] == idx[r]) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"capacity": -1, "seed": 0}, "sketch.capacity"),
        ({"capacity": 1.5, "seed": 0}, "sketch.capacity"),
        ({"capacity": 10, "seed": 0, "sample_factor": 0}, "sketch.sample_factor"),
        ({"capacity": 10, "seed": "x"}, "sketch.seed"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        FrequencySketch(**kwargs)  # type: ignore[arg-type]
    assert exc.value.key == key
