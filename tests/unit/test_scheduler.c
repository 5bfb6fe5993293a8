/* Scheduler + block manager without a model: plan is read-only, commit applies it, chunking
 * respects the token budget and the batch size, prefix hits skip prefill, preemption takes the
 * newest sequence, and 10,000 random requests with random cancellations, sessions and a small
 * pool leave every block free.  A simulated KV pool stores the token id written into each slot,
 * so every step also checks that each sequence's block table reads back its own history (what
 * sharing, eviction and recomputation must never break). */
#include <stdlib.h>
#include <string.h>

#include "coordinator/block_manager.h"
#include "coordinator/scheduler.h"
#include "tests/test_util.h"

#define BL 4

static int32_t *g_kv;   /* [n_blocks * BL] token id held by each KV slot (-1: never written) */
static int64_t g_window; /* the scheduler's sliding window (0: none) */
static int64_t g_max_dropped;

/* Feeds the entry: checks the KV it attends to (with a window, from the first key the earliest
 * new query sees; the blocks before the released ones are -1), writes its new tokens. */
static bool sim_forward(tsr_sched_seq *q, int64_t n_new) {
    bool ok = q->n_blocks * BL >= q->n_computed + n_new;
    int64_t p0 = g_window > 0 && q->n_computed - g_window + 1 > 0 ? q->n_computed - g_window + 1 : 0;
    ok = ok && q->n_dropped * BL <= p0;
    for (int64_t i = 0; i < q->n_dropped && ok; i++) ok = q->blocks[i] == -1;
    if (q->n_dropped > g_max_dropped) g_max_dropped = q->n_dropped;
    for (int64_t p = p0; p < q->n_computed && ok; p++) ok = g_kv[q->blocks[p / BL] * BL + p % BL] == q->tokens[p];
    for (int64_t p = q->n_computed; p < q->n_computed + n_new && ok; p++) g_kv[q->blocks[p / BL] * BL + p % BL] = q->tokens[p];
    return ok;
}

static int32_t gen_token(uint64_t id, int64_t n) { return (int32_t)((id * 2654435761u + (uint64_t)n * 40503u) % 1000); }

static tsr_sched_seq *new_seq(uint64_t id, const int32_t *t, int64_t n) {
    tsr_sched_seq *q = calloc(1, sizeof *q);
    q->id = id;
    tsr_sched_seq_append(q, t, n);
    return q;
}

static void test_directed(void) {
    tsr_block_manager *bm;
    tsr_sched *s;
    CHECK(tsr_bm_init(16, BL, &bm) == TSR_OK);
    g_kv = malloc(16 * BL * sizeof *g_kv);
    memset(g_kv, 0xff, 16 * BL * sizeof *g_kv);
    tsr_sched_config cfg = {2, 6, true, 0};
    CHECK(tsr_sched_init(&cfg, bm, &s) == TSR_OK);
    int32_t prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    tsr_sched_seq *a = new_seq(1, prompt, 10), *b = new_seq(2, prompt, 10), *c = new_seq(3, prompt, 3);
    tsr_sched_add(s, a);
    tsr_sched_add(s, b);
    tsr_sched_add(s, c);
    tsr_sched_plan p = {0};
    /* Plan twice: nothing changes in between. */
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
    tsr_bm_counts bc;
    tsr_bm_get_counts(bm, &bc);
    CHECK(bc.free == 16 && a->n_blocks == 0 && a->state == TSR_SEQ_WAITING);
    CHECK(p.n_entries == 1 && p.entries[0].seq == a && p.entries[0].n_new == 6);   /* budget 6 */
    tsr_sched_commit(s, &p);
    CHECK(a->state == TSR_SEQ_RUNNING && a->n_blocks == 2);
    CHECK(sim_forward(a, 6));
    tsr_sched_advance(s, a, 6);
    /* a continues (4 left), b gets the remaining 2 of the budget. */
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
    CHECK(p.n_entries == 2 && p.entries[0].seq == a && p.entries[0].n_new == 4 && p.entries[1].seq == b &&
          p.entries[1].n_new == 2 && p.entries[1].n_hit_blocks == 1);
    tsr_sched_commit(s, &p);
    CHECK(b->n_computed == 4);   /* the first full block of a's prompt was a hit */
    CHECK(b->blocks[0] == a->blocks[0] && tsr_bm_ref(bm, a->blocks[0]) == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(sim_forward(p.entries[i].seq, p.entries[i].n_new));
        tsr_sched_advance(s, p.entries[i].seq, p.entries[i].n_new);
    }
    /* Batch of 2: c waits. */
    int32_t t = 42;
    tsr_sched_seq_append(a, &t, 1);
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
    CHECK(p.n_entries == 2 && p.entries[0].seq == a && p.entries[0].n_new == 1 && p.entries[1].seq == b);
    tsr_sched_commit(s, &p);
    tsr_sched_remove(s, a);
    tsr_sched_remove(s, b);
    tsr_sched_remove(s, c);
    tsr_bm_get_counts(bm, &bc);
    CHECK(bc.active == 0 && bc.cached == 2 && bc.free == 14);   /* a's two full blocks stay cached */
    CHECK(tsr_bm_check(bm));

    /* Preemption: 3 blocks in all; two sequences each about to need a second and third block. */
    tsr_sched_plan_free(&p);
    tsr_sched_free(s);
    tsr_bm_free(bm);
    CHECK(tsr_bm_init(3, BL, &bm) == TSR_OK);
    tsr_sched_config cfg2 = {8, 64, false, 0};
    CHECK(tsr_sched_init(&cfg2, bm, &s) == TSR_OK);
    tsr_sched_seq *x = new_seq(10, prompt, 4), *y = new_seq(11, prompt + 4, 4);
    tsr_sched_add(s, x);
    tsr_sched_add(s, y);
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
    tsr_sched_commit(s, &p);
    CHECK(p.n_entries == 2);
    tsr_sched_advance(s, x, 4);
    tsr_sched_advance(s, y, 4);
    tsr_sched_seq_append(x, &t, 1);
    tsr_sched_seq_append(y, &t, 1);
    CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);   /* x needs a block (1 free), y too: y is preempted */
    CHECK(p.n_preempt == 1 && p.preempt[0] == y && p.n_entries == 1 && p.entries[0].seq == x);
    tsr_sched_commit(s, &p);
    CHECK(y->state == TSR_SEQ_WAITING && y->n_blocks == 0 && y->n_computed == 0 && y->n_tokens == 5);
    tsr_sched_remove(s, x);
    tsr_sched_remove(s, y);
    tsr_sched_plan_free(&p);
    tsr_sched_free(s);
    tsr_bm_free(bm);
    tsr_sched_seq *all[5] = {a, b, c, x, y};
    for (int i = 0; i < 5; i++) {
        tsr_sched_seq_free(all[i]);
        free(all[i]);
    }
    free(g_kv);
}

/* ---- the random soak ---- */

typedef struct {
    tsr_sched_seq q;
    int64_t target, n_gen;
    bool session, used;
    int turns;
} req;

/* window > 0: a sliding-window model, whose sequences release the blocks behind the window */
static void test_random(int64_t window) {
    enum { NB = 48, N_REQ = 10000, MAX_LIVE = 40 };
    g_window = window;
    g_max_dropped = 0;
    tsr_block_manager *bm;
    tsr_sched *s;
    CHECK(tsr_bm_init(NB, BL, &bm) == TSR_OK);
    g_kv = malloc(NB * BL * sizeof *g_kv);
    memset(g_kv, 0xff, NB * BL * sizeof *g_kv);
    tsr_sched_config cfg = {8, 24, true, window};
    CHECK(tsr_sched_init(&cfg, bm, &s) == TSR_OK);
    req *live[MAX_LIVE] = {0};
    int n_live = 0;
    int64_t submitted = 0, finished = 0, cancelled = 0, kv_errors = 0, steps = 0, sessions_resumed = 0;
    int32_t shared[3][24];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 24; j++) shared[i][j] = 1000 + i * 100 + j;
    srand(12345);
    tsr_sched_plan p = {0};
    while ((submitted < N_REQ || n_live > 0) && steps < 400000) {
        /* arrivals */
        while (submitted < N_REQ && n_live < MAX_LIVE && rand() % 3 == 0) {
            req *r = calloc(1, sizeof *r);
            int32_t prompt[40];
            int64_t n = 1 + rand() % 30;
            int share = rand() % 4;
            for (int64_t j = 0; j < n; j++)
                prompt[j] = share < 3 && j < 24 ? shared[share][j] : (int32_t)(rand() % 1000);
            r->q.id = (uint64_t)++submitted;
            tsr_sched_seq_append(&r->q, prompt, n);
            r->target = 1 + rand() % 12;
            r->session = rand() % 8 == 0;
            r->q.user = r;
            tsr_sched_add(s, &r->q);
            live[n_live++] = r;
        }
        /* random cancellations, in any state */
        if (n_live && rand() % 10 == 0) {
            int i = rand() % n_live;
            tsr_sched_remove(s, &live[i]->q);
            tsr_sched_seq_free(&live[i]->q);
            free(live[i]);
            live[i] = live[--n_live];
            cancelled++;
        }
        /* idle sessions: resume with a new turn, or end */
        for (int i = 0; i < n_live; i++) {
            req *r = live[i];
            if (r->q.state != TSR_SEQ_IDLE || rand() % 4) continue;
            if (r->turns >= 3 || r->q.n_tokens + 20 > NB * BL / 2) {
                tsr_sched_remove(s, &r->q);
                tsr_sched_seq_free(&r->q);
                free(r);
                live[i--] = live[--n_live];
                continue;
            }
            int32_t more[6];
            int64_t n = 1 + rand() % 6;
            for (int64_t j = 0; j < n; j++) more[j] = (int32_t)(rand() % 1000);
            if (rand() % 4 == 0) tsr_sched_seq_truncate(s, &r->q, r->q.n_tokens - 3, r->q.n_tokens - 2);   /* edit */
            tsr_sched_seq_append(&r->q, more, n);
            r->n_gen = 0;
            r->turns++;
            tsr_sched_resume(s, &r->q);
            sessions_resumed++;
        }
        CHECK(tsr_sched_make_plan(s, &p) == TSR_OK);
        tsr_sched_commit(s, &p);
        steps++;
        CHECK(p.n_entries <= cfg.max_batch_size);
        for (int64_t i = 0; i < p.n_fail; i++) {
            req *r = p.fail[i]->user;
            for (int j = 0; j < n_live; j++)
                if (live[j] == r) live[j] = live[--n_live];
            tsr_sched_remove(s, &r->q);
            tsr_sched_seq_free(&r->q);
            free(r);
        }
        for (int64_t i = 0; i < p.n_entries; i++) {
            tsr_sched_seq *q = p.entries[i].seq;
            req *r = q->user;
            if (!sim_forward(q, p.entries[i].n_new)) kv_errors++;
            tsr_sched_advance(s, q, p.entries[i].n_new);
            if (q->n_computed < q->n_tokens) continue;
            int32_t t = gen_token(q->id, r->n_gen++);
            tsr_sched_seq_append(q, &t, 1);
            if (r->n_gen >= r->target || q->n_tokens >= NB * BL / 2) {
                if (r->session) {
                    tsr_sched_park(s, q, (double)steps);
                } else {
                    for (int j = 0; j < n_live; j++)
                        if (live[j] == r) live[j] = live[--n_live];
                    tsr_sched_remove(s, q);
                    tsr_sched_seq_free(q);
                    free(r);
                    finished++;
                }
            }
        }
        if (steps % 5000 == 0) CHECK(tsr_bm_check(bm));
    }
    CHECK_MSG(kv_errors == 0, "%lld steps read KV that was not their history", (long long)kv_errors);
    CHECK_MSG(n_live == 0, "%d requests never finished after %lld steps", n_live, (long long)steps);
    tsr_sched_counts sc;
    tsr_sched_get_counts(s, &sc);
    tsr_bm_counts bc;
    tsr_bm_get_counts(bm, &bc);
    CHECK(bc.active == 0 && bc.free + bc.cached == NB && bc.total == NB);
    CHECK(sc.waiting == 0 && sc.running == 0 && sc.idle == 0);
    CHECK(tsr_bm_check(bm));
    /* (with the window, released blocks leave enough room that nothing need be preempted) */
    CHECK((window > 0 || sc.preemptions > 0) && sc.prefix_hit_tokens > 0 && sessions_resumed > 0 && bc.evictions > 0);
    CHECK(window == 0 ? g_max_dropped == 0 : g_max_dropped >= (NB * BL / 2 - window) / BL - 1);
    fprintf(stderr, "soak (window %lld, up to %lld blocks released behind it): %lld requests (%lld finished, %lld cancelled), %lld steps, %lld preemptions, "
            "%lld/%lld prefix-hit tokens, %lld session turns, %lld evictions\n", (long long)window, (long long)g_max_dropped, (long long)submitted,
            (long long)finished, (long long)cancelled, (long long)steps, (long long)sc.preemptions,
            (long long)sc.prefix_hit_tokens, (long long)sc.prefix_query_tokens, (long long)sessions_resumed,
            (long long)bc.evictions);
    tsr_sched_plan_free(&p);
    tsr_sched_free(s);
    tsr_bm_free(bm);
    free(g_kv);
}

int main(void) {
    test_directed();
    test_random(0);
    test_random(6);
    return tsr_test_finish();
}
