/* Block manager: the free / cached / active state machine (block_manager.c), prefix lookup by
 * chained hashes, LRU order of eviction, the counters under random operations, and the prefix
 * cache's defence against crafted collisions (keyed hash, token ids compared on a hit), and one
 * sequence's block table taken from it (tsr_bm_seq_*, the single-sequence users' allocator). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/block_manager.h"
#include "tests/test_util.h"
#include "worker/kv_pool.h"

static void test_state_machine(void) {
    tsr_block_manager *bm;
    CHECK(tsr_bm_init(4, 2, &bm) == TSR_OK);
    tsr_bm_counts c;
    int32_t a[4];
    CHECK(tsr_bm_alloc(bm, 3, a) == TSR_OK);
    tsr_bm_get_counts(bm, &c);
    CHECK(c.free == 1 && c.active == 3 && c.cached == 0);
    CHECK(tsr_bm_alloc(bm, 2, a + 3) == TSR_ERR_KV_FULL);   /* nothing taken */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.free == 1 && c.active == 3);

    int32_t t0[2] = {5, 6}, t1[2] = {7, 8};
    uint64_t h0 = tsr_bm_hash_block(0, t0, 2), h1 = tsr_bm_hash_block(h0, t1, 2);
    CHECK(h1 != tsr_bm_hash_block(0, t1, 2));   /* chained: the same block after another prefix differs */
    CHECK(tsr_bm_set_hash(bm, a[0], h0, 0, t0));
    CHECK(tsr_bm_set_hash(bm, a[1], h1, h0, t1));
    CHECK(!tsr_bm_set_hash(bm, a[2], h1, h0, t1));   /* already held by a[1] */
    CHECK(tsr_bm_lookup(bm, h0, 0, t0) == a[0] && tsr_bm_lookup(bm, h1, h0, t1) == a[1]);
    CHECK(tsr_bm_lookup(bm, h1, 0, t1) < 0);         /* same hash and tokens, another parent: a miss */

    tsr_bm_acquire(bm, a[0]);                    /* shared */
    CHECK(tsr_bm_ref(bm, a[0]) == 2);
    tsr_bm_release(bm, 3, a);                    /* a[0] stays active, a[1] cached, a[2] free */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 1 && c.cached == 1 && c.free == 2);
    CHECK(tsr_bm_lookup(bm, h1, h0, t1) == a[1]);   /* cached blocks stay findable */
    tsr_bm_release(bm, 1, a);                    /* a[0] cached too, after a[1] in the LRU */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 0 && c.cached == 2 && c.free == 2 && tsr_bm_available(bm) == 4);
    CHECK(tsr_bm_check(bm));

    /* A prefix hit takes a cached block back without losing its hash. */
    tsr_bm_acquire(bm, a[1]);
    CHECK(tsr_bm_ref(bm, a[1]) == 1 && tsr_bm_lookup(bm, h1, h0, t1) == a[1]);
    tsr_bm_release(bm, 1, &a[1]);   /* now a[0] is the least recently released */

    /* Free blocks go first, then the LRU's oldest cached one (a[0]) is evicted. */
    int32_t b[3];
    CHECK(tsr_bm_alloc(bm, 3, b) == TSR_OK);
    tsr_bm_get_counts(bm, &c);
    CHECK(c.free == 0 && c.cached == 1 && c.active == 3 && c.evictions == 1);
    CHECK(tsr_bm_lookup(bm, h0, 0, t0) < 0 && tsr_bm_lookup(bm, h1, h0, t1) == a[1]);
    CHECK(tsr_bm_check(bm));
    tsr_bm_release(bm, 3, b);
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 0 && c.free + c.cached == 4);
    CHECK(tsr_bm_check(bm));
    tsr_bm_free(bm);
    CHECK(tsr_bm_init(0, 16, &bm) == TSR_ERR_INVALID_ARG);
}

/* Random operations against a model of the reference counts. */
/* A sequence's table grows by whole blocks, shrinks back, and returns everything to FREE. */
static void test_seq(void) {
    tsr_block_manager *bm;
    CHECK(tsr_bm_init(6, 4, &bm) == TSR_OK);
    tsr_bm_counts c;
    tsr_kv_seq s = {0}, t = {0};
    CHECK(tsr_bm_seq_reserve(bm, &s, 9) == TSR_OK && s.n_blocks == 3);
    CHECK(tsr_bm_seq_reserve(bm, &s, 12) == TSR_OK && s.n_blocks == 3);   /* still covered */
    for (int64_t i = 0; i < s.n_blocks; i++) CHECK(tsr_bm_ref(bm, s.blocks[i]) == 1);
    CHECK(tsr_bm_seq_reserve(bm, &t, 16) == TSR_ERR_KV_FULL && t.n_blocks == 0);   /* nothing taken */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 3 && c.free == 3);
    s.n_tokens = 9;
    tsr_bm_seq_truncate(bm, &s, 5);
    tsr_bm_get_counts(bm, &c);
    CHECK(s.n_blocks == 2 && s.n_tokens == 5 && c.active == 2 && c.free == 4);
    CHECK(tsr_bm_seq_reserve(bm, &t, 16) == TSR_OK && t.n_blocks == 4);
    tsr_bm_seq_release(bm, &s);
    tsr_bm_seq_release(bm, &t);
    tsr_bm_get_counts(bm, &c);
    CHECK(s.blocks == NULL && s.n_blocks == 0 && c.active == 0 && c.free == 6 && c.cached == 0 && tsr_bm_check(bm));
    tsr_bm_free(bm);
}

static void test_random(void) {
    enum { NB = 64, NH = 40 };
    tsr_block_manager *bm;
    CHECK(tsr_bm_init(NB, 4, &bm) == TSR_OK);
    int32_t held[4096];
    int n_held = 0;
    srand(7);
    for (int it = 0; it < 20000; it++) {
        int op = rand() % 4;
        if (op == 0) {
            int n = rand() % 4 + 1;
            int64_t avail = tsr_bm_available(bm);
            tsr_status st = tsr_bm_alloc(bm, n, held + n_held);
            CHECK((st == TSR_OK) == (n <= avail));
            if (st == TSR_OK) n_held += n;
        } else if (op == 1 && n_held) {
            int i = rand() % n_held;
            tsr_bm_release(bm, 1, &held[i]);
            held[i] = held[--n_held];
        } else if (op == 2 && n_held) {
            int32_t k = rand() % NH + 1, t[4] = {k, k, k, k};
            tsr_bm_set_hash(bm, held[rand() % n_held], (uint64_t)k, 0, t);
        } else if (op == 3 && n_held < 4000) {
            int32_t k = rand() % NH + 1, t[4] = {k, k, k, k};
            int32_t id = tsr_bm_lookup(bm, (uint64_t)k, 0, t);
            if (id >= 0) {
                tsr_bm_acquire(bm, id);
                held[n_held++] = id;
            }
        }
        if (it % 997 == 0) CHECK(tsr_bm_check(bm));
    }
    tsr_bm_release(bm, n_held, held);
    tsr_bm_counts c;
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 0 && c.free + c.cached == NB);
    CHECK(tsr_bm_check(bm));
    tsr_bm_free(bm);
}

/* ---- prefix-cache poisoning ----
 * The hash the manager used to key its prefix cache on (unkeyed, and the only thing a lookup
 * compared), kept here to show that it was attackable: every step of it can be inverted, so a
 * client can build a block whose hash equals a victim's, and that block was served the victim's
 * KV. */
static uint64_t old_mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}
static uint64_t old_hash(uint64_t parent, const int32_t *tokens, int64_t n) {
    uint64_t h = old_mix(parent ^ 0x9e3779b97f4a7c15ULL) ^ (uint64_t)n;
    for (int64_t i = 0; i < n; i++) h = old_mix(h ^ (uint32_t)tokens[i]) + 0x632be59bd9b4e019ULL * (uint64_t)(i + 1);
    return h ? h : 1;
}
static uint64_t inv_mul(uint64_t c) {   /* c^-1 mod 2^64 (c odd), by Newton's iteration */
    uint64_t x = c;
    for (int i = 0; i < 6; i++) x *= 2 - c * x;
    return x;
}
static uint64_t inv_xorshift(uint64_t y, int s) {   /* inverse of x ^= x >> s */
    uint64_t x = y;
    for (int k = s; k < 64; k += s) x ^= y >> k;
    return x;
}
static uint64_t old_unmix(uint64_t x) {
    x = inv_xorshift(x, 31);
    x *= inv_mul(0x94d049bb133111ebULL);
    x = inv_xorshift(x, 27);
    x *= inv_mul(0xbf58476d1ce4e5b9ULL);
    return inv_xorshift(x, 30);
}
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* A block of 4 tokens that collides with `victim` under old_hash (parent 0): b[0] is chosen,
 * b[1] runs forward, b[3] backward from the victim's hash, and the 64-bit states between them
 * must agree in their high 32 bits (a meet in the middle over 2^17 x 2^17 candidates); b[2]
 * then fixes the low 32 bits.  Returns false if no pair meets. */
static bool craft_collision(const int32_t victim[4], int32_t b[4]) {
    enum { N = 1 << 17 };
    const uint64_t C = 0x632be59bd9b4e019ULL, target = old_hash(0, victim, 4);
    uint64_t *fwd = malloc(N * sizeof *fwd);
    CHECK(fwd != NULL);
    b[0] = 4242;
    uint64_t s1 = old_mix((old_mix(0x9e3779b97f4a7c15ULL) ^ 4) ^ (uint32_t)b[0]) + C;
    for (uint64_t x = 0; x < N; x++) fwd[x] = ((old_mix(s1 ^ x) + 2 * C) & ~0xffffffffULL) | x;
    qsort(fwd, N, sizeof *fwd, cmp_u64);
    const uint64_t u = old_unmix(target - 4 * C);   /* = state3 ^ b[3] */
    bool found = false;
    for (uint64_t y = 0; y < N && !found; y++) {
        uint64_t w = old_unmix((u ^ y) - 3 * C);     /* = state2 ^ b[2] */
        size_t lo = 0, hi = N;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if ((fwd[mid] >> 32) < (w >> 32)) lo = mid + 1;
            else hi = mid;
        }
        if (lo < N && (fwd[lo] >> 32) == (w >> 32)) {
            uint64_t x = fwd[lo] & 0xffffffffULL, s2 = old_mix(s1 ^ x) + 2 * C;
            b[1] = (int32_t)x;
            b[2] = (int32_t)(uint32_t)(s2 ^ w);
            b[3] = (int32_t)y;
            found = true;
        }
    }
    free(fwd);
    return found;
}

static void test_poisoning(const char *self) {
    const int32_t victim[4] = {9001, 17, 2024, 77};
    int32_t evil[4];
    CHECK(craft_collision(victim, evil));
    CHECK(memcmp(victim, evil, sizeof victim) != 0);
    const uint64_t h_old = old_hash(0, victim, 4);
    CHECK(old_hash(0, evil, 4) == h_old);   /* the old hash collides ... */
    printf("crafted old-hash collision: {%d,%d,%d,%d} and {%d,%d,%d,%d} -> %016" PRIx64 "\n", victim[0], victim[1],
           victim[2], victim[3], evil[0], evil[1], evil[2], evil[3], h_old);

    /* ... so the old manager (lookup by hash alone) served the victim's block to the crafted
     * prompt.  Now: the keyed hash differs for the two blocks, and it is not the old one. */
    const uint64_t hv = tsr_bm_hash_block(0, victim, 4), he = tsr_bm_hash_block(0, evil, 4);
    CHECK(hv != he && hv != h_old && he != h_old);

    tsr_block_manager *bm;
    CHECK(tsr_bm_init(4, 4, &bm) == TSR_OK);
    int32_t a[2];
    CHECK(tsr_bm_alloc(bm, 2, a) == TSR_OK);
    CHECK(tsr_bm_set_hash(bm, a[0], hv, 0, victim));
    CHECK(tsr_bm_lookup(bm, hv, 0, victim) == a[0]);
    CHECK(tsr_bm_lookup(bm, he, 0, evil) < 0);
    /* Even a hash that does collide (here: forced, the victim's own) is only an index: the
     * tokens are compared, and the crafted block is a miss that gets its own block. */
    CHECK(tsr_bm_lookup(bm, hv, 0, evil) < 0);
    CHECK(tsr_bm_set_hash(bm, a[1], hv, 0, evil));   /* two blocks under one hash, each found by its tokens */
    CHECK(tsr_bm_lookup(bm, hv, 0, evil) == a[1] && tsr_bm_lookup(bm, hv, 0, victim) == a[0]);
    tsr_bm_release(bm, 2, a);
    CHECK(tsr_bm_lookup(bm, hv, 0, evil) == a[1] && tsr_bm_lookup(bm, hv, 0, victim) == a[0]);
    int32_t c[4];
    CHECK(tsr_bm_alloc(bm, 4, c) == TSR_OK);          /* evicts both: both leave the hash chain */
    CHECK(tsr_bm_lookup(bm, hv, 0, evil) < 0 && tsr_bm_lookup(bm, hv, 0, victim) < 0);
    CHECK(tsr_bm_check(bm));
    tsr_bm_release(bm, 4, c);
    tsr_bm_free(bm);

    /* The key is drawn per process: two other runs of this binary hash the victim differently. */
    char cmd[4096], out[2][64] = {{0}};
    snprintf(cmd, sizeof cmd, "'%s' --hash-victim", self);
    for (int r = 0; r < 2; r++) {
        FILE *f = popen(cmd, "r");
        CHECK(f != NULL);
        if (!f) return;
        CHECK(fgets(out[r], sizeof out[r], f) != NULL);
        CHECK(pclose(f) == 0);
    }
    char mine[64];
    snprintf(mine, sizeof mine, "%016" PRIx64 "\n", hv);
    CHECK(strlen(out[0]) == 17 && strcmp(out[0], out[1]) != 0 && strcmp(out[0], mine) != 0);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--hash-victim") == 0) {
        const int32_t victim[4] = {9001, 17, 2024, 77};
        printf("%016" PRIx64 "\n", tsr_bm_hash_block(0, victim, 4));
        return 0;
    }
    test_state_machine();
    test_seq();
    test_random();
    test_poisoning(argv[0]);
    return tsr_test_finish();
}
