/*
 * Issue #17's window sizing by miniature simulation (sizing: mini): the lean shadow
 * W-TinyLFU caches (shadow.c) that the W-TinyLFU core (policy.c) feeds with a
 * hash-sampled share of its accesses. A shadow holds key hashes only: an open-addressing
 * table from hash to node, the window / probation / protected lists as index-linked
 * arrays, a count-min sketch (one for all shadows: 4 rows of saturating 4-bit counts in bytes, halved
 * every sample_size additions, as tiercache.sketch.FrequencySketch), a splitmix64 rng for
 * TinyLFU's jitter and, optionally, the reuse gate's ghost. Its decisions are exactly
 * those of WTinyLFUPolicy (adaptive off) over the key hashes with an identity hasher
 * (tiercache/wtinylfu.py's _MiniShadow, the specification).
 */
#ifndef TIERCACHE_SHADOW_H
#define TIERCACHE_SHADOW_H

#include <stdint.h>
#include <stddef.h>

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define MINI_MAX_SHADOWS 8

typedef struct {
    uint64_t h; /* the key as z = mix64(key hash ^ k0), a bijection (shadow.c) */
    int32_t prev, next;
    uint32_t last, gap; /* the reuse gate's last access and gap */
    uint8_t seg;
} SNode; /* 32 bytes */

typedef struct {
    int32_t cap, wcap, mcap, pcap;
    int32_t len[4];
    SNode *nodes; /* 0..3: sentinels (1 window, 2 probation, 3 protected); 4..: entries */
    int32_t free_head;
    int32_t *tab; /* hash -> node, linear probing, -1 empty */
    uint64_t tmask;
    uint8_t *sk; /* 4 x width counters (shadow 0's, shared: every shadow counts the same
                    sampled accesses with the same hash functions) */
    char own_sk;
    uint64_t width, k0, mult[4];
    int shift;
    long long additions, sample_size;
    uint64_t rng;
    int jitter;
    /* the reuse gate (rcap > 0) */
    int32_t rcap, rg_head, rg_count;
    uint32_t clock;
    uint64_t *rg_hash;
    uint32_t *rg_last;
    int32_t *rg_tab;
    uint64_t rg_mask;
    long long hits; /* since the last decision */
} Shadow;

typedef struct {
    int k;
    uint64_t threshold; /* a key is sampled when mini_sample(h, salt) < threshold */
    uint64_t salt;
    long long count, period;
    Shadow sh[MINI_MAX_SHADOWS];
} Mini;

/* the sampling test: the top 24 bits of a splitmix64 of the key hash xor the salt */
static inline uint64_t mini_sample(uint64_t h, uint64_t salt) {
    uint64_t z = h ^ salt;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (z ^ (z >> 31)) >> 40;
}

/* a key as the shadows hold it: z = splitmix64's finalizer of (key hash ^ k0), a bijection */
static inline uint64_t tc_shadow_z(const Shadow *s, uint64_t h) {
    uint64_t z = h ^ s->k0;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int tc_shadow_init(Shadow *s, int32_t cap, int32_t wcap, int32_t pcap, int jitter,
                   int32_t rcap, uint64_t width, int shift, uint64_t k0, const uint64_t *mult,
                   long long sample_size, uint64_t rng_seed, uint8_t *shared_sk);
void tc_shadow_free(Shadow *s);
void tc_shadow_access(Shadow *s, uint64_t z, int count);
size_t tc_shadow_bytes(const Shadow *s);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
