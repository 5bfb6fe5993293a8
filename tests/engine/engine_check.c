/* Drives the real engine (coordinator/engine.h) on a model; tests/engine/test_engine.py runs
 * one scenario per test:
 *   batch     same greedy tokens for requests alone and in a batch of 32 mixed others, with
 *             prefix hits, with a tiny KV pool (forced preemption) and a tiny prefill budget
 *             (chunked prefill)
 *   session   a 5-turn conversation on a session prefills only new tokens (DONE counters) and
 *             gives the same tokens as replaying the whole history without a session
 *   cancel    random cancellations and session ends leave every KV block free; a request that
 *             cannot fit is refused at submit
 *   mixed     chunked prefill mixed with decode: while a 400-token prompt is prefilled in chunks
 *             of 16 (25 steps), a running request keeps decoding one token per step, and its
 *             tokens are the ones it gets alone
 * Prints what it compared; exit code 0 when everything matched. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/engine.h"

#define MAXG 64

typedef struct {
    int32_t toks[MAXG];
    int n;
    bool done;
    tsr_finish_reason finish;
    int64_t prompt_tokens, cached_tokens;
} result;

static void on_event(void *user, const tsr_engine_event *ev) {
    result *r = user;
    if (ev->type == TSR_EVENT_TOKEN) {
        if (r->n < MAXG) r->toks[r->n++] = ev->token;
    } else {
        r->done = true;
        r->finish = ev->finish;
        r->prompt_tokens = ev->prompt_tokens;
        r->cached_tokens = ev->cached_tokens;
    }
}

static int g_fail = 0;
#define EXPECT(c, ...)                                  \
    do {                                                \
        if (!(c)) {                                     \
            g_fail++;                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);               \
            fputc('\n', stderr);                        \
        }                                               \
    } while (0)

static tsr_engine *open_engine(const char *model, double blocks, int64_t prefill, int64_t block_len, bool prefix) {
    tsr_engine_config c;
    tsr_engine_config_default(&c);
    c.model_path = model;
    c.backend = "cpu";
    c.progress = false;
    c.session_len = 1024;
    c.cache_max_entry_count = blocks > 0 ? blocks : 256;
    c.cache_block_seq_len = block_len;
    c.max_prefill_token_num = prefill;
    c.max_batch_size = 64;
    c.enable_prefix_cache = prefix;
    tsr_engine *e = NULL;
    if (tsr_engine_open(&c, NULL, NULL, &e) != TSR_OK) {
        fprintf(stderr, "engine_open: %s\n", tsr_last_error());
        exit(2);
    }
    return e;
}

/* Prompt i: shares a 40-token prefix with the others when i % 3 == 0, else its own. */
static int make_prompt(int i, int32_t *p) {
    int n = 0;
    p[n++] = 1;
    if (i % 3 == 0)
        for (int j = 0; j < 40; j++) p[n++] = 300 + j * 7;
    int len = 3 + (i * 7) % 23;
    for (int j = 0; j < len; j++) p[n++] = 500 + (i * 131 + j * 17) % 20000;
    return n;
}

static void submit_ids(tsr_engine *e, const int32_t *ids, int n, int max_new, result *r, uint64_t session, bool end,
                       uint64_t *id) {
    tsr_engine_request rq;
    tsr_engine_request_default(&rq);
    rq.prompt_ids = ids;
    rq.n_prompt_ids = n;
    rq.max_new_tokens = max_new;
    rq.sampling.temperature = 0;
    rq.ignore_eos = true;
    rq.session_id = session;
    rq.end_session = end;
    memset(r, 0, sizeof *r);
    tsr_status st = tsr_engine_submit(e, &rq, on_event, r, id);
    EXPECT(st == TSR_OK, "submit: %s", tsr_last_error());
}

static void run_batch(tsr_engine *e, int n_req, int gen, result *res) {
    int32_t p[128];
    for (int i = 0; i < n_req; i++) {
        int n = make_prompt(i, p);
        submit_ids(e, p, n, gen - (i % 4), &res[i], 0, false, NULL);
        if (i == 0) tsr_engine_drain(e);   /* its full prefix blocks are then in the cache */
    }
    tsr_engine_drain(e);
}

/* One configuration per process (a process opens the runtime once): prints each request's
 * tokens as "req I: T T T"; the Python test compares the configurations. */
static int scenario_batch(const char *model, const char *cfg) {
    enum { N = 32, GEN = 10, ALONE = 3 };
    static result res[N];
    tsr_engine *e;
    int n_req = N;
    tsr_engine_stats st;
    if (!strcmp(cfg, "alone")) {   /* one at a time */
        e = open_engine(model, 0, 2048, 16, true);
        int32_t p[128];
        for (int i = 0; i < ALONE; i++) {
            int n = make_prompt(i, p);
            submit_ids(e, p, n, GEN - (i % 4), &res[i], 0, false, NULL);
            tsr_engine_drain(e);
        }
        n_req = ALONE;
    } else if (!strcmp(cfg, "base")) {   /* a batch of 32; prefix hits on the shared prefix */
        e = open_engine(model, 0, 2048, 16, true);
        run_batch(e, N, GEN, res);
    } else if (!strcmp(cfg, "preempt")) {   /* 12 blocks x 16 tokens: preemption */
        e = open_engine(model, 12, 2048, 16, true);
        run_batch(e, N, GEN, res);
    } else if (!strcmp(cfg, "chunked")) {   /* prefill in chunks of <= 7 tokens, no prefix cache */
        e = open_engine(model, 0, 7, 16, false);
        run_batch(e, N, GEN, res);
    } else {
        fprintf(stderr, "unknown configuration %s\n", cfg);
        return 2;
    }
    tsr_engine_get_stats(e, &st);
    printf("stats: steps %lld prefix_hit_tokens %lld prefix_query_tokens %lld preemptions %lld blocks_used %lld\n",
           (long long)st.steps, (long long)st.prefix_hit_tokens, (long long)st.prefix_query_tokens,
           (long long)st.preemptions_total, (long long)st.kv_blocks_used);
    for (int i = 0; i < n_req; i++) {
        EXPECT(res[i].done && res[i].n == GEN - (i % 4), "request %d: %d tokens", i, res[i].n);
        printf("req %d:", i);
        for (int k = 0; k < res[i].n; k++) printf(" %d", res[i].toks[k]);
        printf("\n");
    }
    tsr_engine_close(e);
    return g_fail ? 1 : 0;
}

static int scenario_session(const char *model) {
    tsr_engine *e = open_engine(model, 0, 2048, 16, true);
    int32_t hist[1024];
    int nh = 0;
    result r;
    for (int turn = 0; turn < 5; turn++) {
        int32_t add[16];
        int na = 0;
        if (turn == 0) add[na++] = 1;
        for (int j = 0; j < 6 + turn; j++) add[na++] = 700 + turn * 50 + j * 3;
        submit_ids(e, add, na, 8, &r, 42, turn == 4, NULL);
        tsr_engine_drain(e);
        /* what a session-less replay of the whole history gives */
        int32_t full[1024];
        memcpy(full, hist, sizeof(int32_t) * nh);
        memcpy(full + nh, add, sizeof(int32_t) * na);
        result rr;
        submit_ids(e, full, nh + na, 8, &rr, 0, false, NULL);
        tsr_engine_drain(e);
        EXPECT(r.done && rr.done && r.n == rr.n && !memcmp(r.toks, rr.toks, sizeof(int32_t) * r.n),
               "turn %d: session and replay differ", turn);
        int64_t fed = r.prompt_tokens - r.cached_tokens;
        printf("turn %d: prompt %lld tokens, cached %lld, prefilled %lld (new %d)\n", turn, (long long)r.prompt_tokens,
               (long long)r.cached_tokens, (long long)fed, na);
        EXPECT(r.prompt_tokens == nh + na, "turn %d: prompt_tokens %lld, expected %d", turn, (long long)r.prompt_tokens, nh + na);
        /* the last sampled token of the previous turn has no KV yet: it is fed with the new ones */
        EXPECT(fed == na + (turn > 0), "turn %d: prefilled %lld tokens, expected %d", turn, (long long)fed, na + (turn > 0));
        memcpy(hist + nh, add, sizeof(int32_t) * na);
        nh += na;
        memcpy(hist + nh, r.toks, sizeof(int32_t) * r.n);
        nh += r.n;
    }
    tsr_engine_stats st;
    tsr_engine_get_stats(e, &st);
    EXPECT(st.sessions == 0 && st.kv_blocks_used == 0, "after end_session: %lld sessions, %lld blocks used",
           (long long)st.sessions, (long long)st.kv_blocks_used);
    tsr_engine_close(e);
    return g_fail ? 1 : 0;
}

static int scenario_cancel(const char *model) {
    tsr_engine *e = open_engine(model, 24, 64, 16, true);
    enum { N = 40 };
    static result res[N];
    uint64_t ids[N];
    int32_t p[128];
    srand(3);
    for (int i = 0; i < N; i++) {
        int n = make_prompt(i, p);
        submit_ids(e, p, n, 4 + rand() % 8, &res[i], i % 5 == 0 ? 1000 + (uint64_t)i : 0, false, &ids[i]);
        if (rand() % 3 == 0) tsr_engine_cancel(e, ids[rand() % (i + 1)]);
    }
    tsr_engine_drain(e);
    for (int i = 0; i < N; i += 5) tsr_engine_end_session(e, 1000 + (uint64_t)i);
    int n_cancel = 0;
    for (int i = 0; i < N; i++) {
        EXPECT(res[i].done, "request %d never ended", i);
        n_cancel += res[i].finish == TSR_FINISH_CANCELLED;
    }
    /* A request that can never fit is refused at once. */
    tsr_engine_request rq;
    tsr_engine_request_default(&rq);
    rq.prompt_ids = p;
    rq.n_prompt_ids = 10;
    rq.max_new_tokens = 5000;
    tsr_engine_error why;
    tsr_status st = tsr_engine_submit_ex(e, &rq, on_event, &res[0], NULL, &why);
    EXPECT(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "session_len"), "too long a request: %s",
           tsr_last_error());
    /* and says so as data, for a front end: max_new_tokens does not fit session_len */
    EXPECT(why.status == st && why.code == TSR_ENGINE_ERR_TOO_LONG && why.field == TSR_FIELD_MAX_NEW_TOKENS &&
               !strcmp(why.message, tsr_last_error()),
           "structured refusal: code %d field %d '%s'", (int)why.code, (int)why.field, why.message);
    printf("refused: %s\n", tsr_last_error());
    rq.max_new_tokens = 4;
    rq.sampling.top_p = 2;
    EXPECT(tsr_engine_submit_ex(e, &rq, on_event, &res[0], NULL, &why) == TSR_ERR_INVALID_ARG &&
               why.code == TSR_ENGINE_ERR_INVALID && why.field == TSR_FIELD_SAMPLING,
           "bad sampling: code %d field %d '%s'", (int)why.code, (int)why.field, why.message);
    /* end_session is asynchronous: wait for the step thread to apply it */
    tsr_engine_stats s;
    for (int k = 0; k < 200; k++) {
        tsr_engine_get_stats(e, &s);
        if (s.sessions == 0 && s.kv_blocks_used == 0) break;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    printf("cancel: %d of %d cancelled; blocks used %lld, free %lld (cached %lld) of %lld; %lld preemptions\n", n_cancel,
           N, (long long)s.kv_blocks_used, (long long)s.kv_blocks_free, (long long)s.kv_blocks_cached,
           (long long)s.kv_blocks_total, (long long)s.preemptions_total);
    EXPECT(n_cancel > 0, "nothing was cancelled");
    EXPECT(s.kv_blocks_used == 0 && s.kv_blocks_free == s.kv_blocks_total && s.running == 0 && s.waiting == 0,
           "blocks still used: %lld", (long long)s.kv_blocks_used);
    tsr_engine_close(e);
    return g_fail ? 1 : 0;
}

/* mixed: A decodes; B's long prompt arrives; B's first token comes after its 25 chunks, and by
 * then A must have had a token in (nearly) every one of those steps. */
static atomic_int g_a_tokens;
static int g_a_at_b_first = -1;

static void on_event_a(void *user, const tsr_engine_event *ev) {
    on_event(user, ev);
    if (ev->type == TSR_EVENT_TOKEN) atomic_fetch_add(&g_a_tokens, 1);
}

static void on_event_b(void *user, const tsr_engine_event *ev) {
    result *r = user;
    if (ev->type == TSR_EVENT_TOKEN && r->n == 0) g_a_at_b_first = atomic_load(&g_a_tokens);
    on_event(user, ev);
}

static int scenario_mixed(const char *model) {
    enum { BUDGET = 16, LONG = 400, GEN_A = 60 };
    tsr_engine *e = open_engine(model, 0, BUDGET, 16, false);
    int32_t pa[8] = {1, 510, 733, 1022, 4096, 77, 901, 12}, pb[LONG];
    for (int i = 0; i < LONG; i++) pb[i] = 500 + (i * 37) % 20000;
    static result a, b, alone;
    tsr_engine_request rq;
    tsr_engine_request_default(&rq);
    rq.prompt_ids = pa;
    rq.n_prompt_ids = 8;
    rq.max_new_tokens = GEN_A;
    rq.sampling.temperature = 0;
    rq.ignore_eos = true;
    EXPECT(tsr_engine_submit(e, &rq, on_event_a, &a, NULL) == TSR_OK, "submit A: %s", tsr_last_error());
    while (atomic_load(&g_a_tokens) < 2) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    const int a_at_submit = atomic_load(&g_a_tokens);
    tsr_engine_request rb = rq;
    rb.prompt_ids = pb;
    rb.n_prompt_ids = LONG;
    rb.max_new_tokens = 4;
    EXPECT(tsr_engine_submit(e, &rb, on_event_b, &b, NULL) == TSR_OK, "submit B: %s", tsr_last_error());
    tsr_engine_drain(e);
    /* A alone, for its tokens */
    EXPECT(tsr_engine_submit(e, &rq, on_event, &alone, NULL) == TSR_OK, "submit A alone: %s", tsr_last_error());
    tsr_engine_drain(e);
    const int chunks = (LONG + BUDGET - 1) / BUDGET, during = g_a_at_b_first - a_at_submit;
    printf("mixed: B's %d-token prompt in %d chunks of %d; A decoded %d tokens meanwhile (%d before B came)\n", LONG,
           chunks, BUDGET, during, a_at_submit);
    EXPECT(b.done && b.n == 4 && a.done && a.n == GEN_A, "A %d/%d tokens, B %d/4", a.n, GEN_A, b.n);
    /* a step or two of slack: B may arrive between A's steps */
    EXPECT(during >= chunks - 2, "A decoded only %d tokens while B's prompt took %d chunks: decode stalled", during,
           chunks);
    for (int i = 0; i < GEN_A; i++) EXPECT(a.toks[i] == alone.toks[i], "A's token %d differs from A alone", i);
    tsr_engine_stats st;
    tsr_engine_get_stats(e, &st);
    EXPECT(st.kv_blocks_used == 0, "%lld blocks still used", (long long)st.kv_blocks_used);
    tsr_engine_close(e);
    return g_fail ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: engine_check MODEL batch [alone|base|preempt|chunked] | session | cancel | mixed\n");
        return 2;
    }
    if (!strcmp(argv[2], "batch")) return scenario_batch(argv[1], argc > 3 ? argv[3] : "base");
    if (!strcmp(argv[2], "session")) return scenario_session(argv[1]);
    if (!strcmp(argv[2], "cancel")) return scenario_cancel(argv[1]);
    if (!strcmp(argv[2], "mixed")) return scenario_mixed(argv[1]);
    fprintf(stderr, "unknown scenario %s\n", argv[2]);
    return 2;
}
