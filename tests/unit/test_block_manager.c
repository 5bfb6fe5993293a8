/* Block manager: the free / cached / active state machine (block_manager.h), prefix lookup by
 * chained hashes, LRU order of eviction, and the counters under random operations. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/block_manager.h"
#include "tests/test_util.h"

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
    CHECK(tsr_bm_set_hash(bm, a[0], h0));
    CHECK(tsr_bm_set_hash(bm, a[1], h1));
    CHECK(!tsr_bm_set_hash(bm, a[2], h1));      /* already held by a[1] */
    CHECK(tsr_bm_lookup(bm, h0) == a[0] && tsr_bm_lookup(bm, h1) == a[1]);

    tsr_bm_acquire(bm, a[0]);                    /* shared */
    CHECK(tsr_bm_ref(bm, a[0]) == 2);
    tsr_bm_release(bm, 3, a);                    /* a[0] stays active, a[1] cached, a[2] free */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 1 && c.cached == 1 && c.free == 2);
    CHECK(tsr_bm_lookup(bm, h1) == a[1]);        /* cached blocks stay findable */
    tsr_bm_release(bm, 1, a);                    /* a[0] cached too, after a[1] in the LRU */
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 0 && c.cached == 2 && c.free == 2 && tsr_bm_available(bm) == 4);
    CHECK(tsr_bm_check(bm));

    /* A prefix hit takes a cached block back without losing its hash. */
    tsr_bm_acquire(bm, a[1]);
    CHECK(tsr_bm_ref(bm, a[1]) == 1 && tsr_bm_lookup(bm, h1) == a[1]);
    tsr_bm_release(bm, 1, &a[1]);   /* now a[0] is the least recently released */

    /* Free blocks go first, then the LRU's oldest cached one (a[0]) is evicted. */
    int32_t b[3];
    CHECK(tsr_bm_alloc(bm, 3, b) == TSR_OK);
    tsr_bm_get_counts(bm, &c);
    CHECK(c.free == 0 && c.cached == 1 && c.active == 3 && c.evictions == 1);
    CHECK(tsr_bm_lookup(bm, h0) < 0 && tsr_bm_lookup(bm, h1) == a[1]);
    CHECK(tsr_bm_check(bm));
    tsr_bm_release(bm, 3, b);
    tsr_bm_get_counts(bm, &c);
    CHECK(c.active == 0 && c.free + c.cached == 4);
    CHECK(tsr_bm_check(bm));
    tsr_bm_free(bm);
    CHECK(tsr_bm_init(0, 16, &bm) == TSR_ERR_INVALID_ARG);
}

/* Random operations against a model of the reference counts. */
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
            tsr_bm_set_hash(bm, held[rand() % n_held], (uint64_t)(rand() % NH) + 1);
        } else if (op == 3 && n_held < 4000) {
            int32_t id = tsr_bm_lookup(bm, (uint64_t)(rand() % NH) + 1);
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

int main(void) {
    test_state_machine();
    test_random();
    return tsr_test_finish();
}
