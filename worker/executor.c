/* Step plans: encode on rank 0, broadcast, decode and replay on every worker (see executor.h). */
#include "worker/executor.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define TSR__PLAN_MAGIC 0x4e4c5054u /* "TPLN" */

enum { TSR__OP_STEP = 1, TSR__OP_STOP = 2, TSR__OP_BEAT = 3 };

typedef struct {
    uint32_t magic, op;
    int64_t n_seq, n_tok, n_bt, flags;
    uint64_t body_bytes;
} tsr__plan_header;

static tsr_status tsr__exec_on_step(void *ctx, const tsr_step *step, bool want_logits);
static tsr_status tsr__exec_agree(void *ctx, tsr_status mine);
static tsr_status tsr__bcast_plan(tsr_exec *e, const uint8_t *data, size_t len, uint32_t op);

void tsr_exec_init(tsr_exec *e, const tsr_group *g, tsr_forward_state *fs, tsr_kv_pool *kv) {
    memset(e, 0, sizeof *e);
    e->group = g;
    e->fs = fs;
    e->kv = kv;
    if (g->rank == 0 && g->size > 1) {
        fs->on_step = tsr__exec_on_step;
        fs->on_step_ctx = e;
    }
    if (g->size > 1) {
        fs->on_agree = tsr__exec_agree;
        fs->on_agree_ctx = e;
    }
}

void tsr_exec_free(tsr_exec *e) {
    if (e->fs && e->fs->on_step == tsr__exec_on_step) e->fs->on_step = NULL;
    if (e->fs && e->fs->on_agree == tsr__exec_agree) e->fs->on_agree = NULL;
    free(e->buf);
    memset(e, 0, sizeof *e);
}

static void *tsr__grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return *buf;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    uint8_t *nb = realloc(*buf, c);
    if (!nb) return NULL;
    *buf = nb;
    *cap = c;
    return nb;
}

size_t tsr_plan_encode(const tsr_step *step, bool want_logits, uint8_t **buf, size_t *cap) {
    int64_t n_tok = 0, n_bt = 0;
    for (int64_t i = 0; i < step->n_seq; i++) {
        n_tok += step->seqs[i].n_new;
        n_bt += step->seqs[i].n_blocks;
    }
    size_t body = (size_t)step->n_seq * 3 * sizeof(int64_t) + (size_t)(n_tok + n_bt) * sizeof(int32_t);
    size_t total = sizeof(tsr__plan_header) + body;
    uint8_t *p = tsr__grow(buf, cap, total);
    if (!p) return 0;
    tsr__plan_header h = {TSR__PLAN_MAGIC, TSR__OP_STEP, step->n_seq, n_tok, n_bt, (step->all_logits ? 1 : 0) | (want_logits ? 2 : 0), body};
    memcpy(p, &h, sizeof h);
    uint8_t *q = p + sizeof h;
    for (int64_t i = 0; i < step->n_seq; i++) {
        int64_t v[3] = {step->seqs[i].n_new, step->seqs[i].n_past, step->seqs[i].n_blocks};
        memcpy(q, v, sizeof v);
        q += sizeof v;
    }
    for (int64_t i = 0; i < step->n_seq; i++) {
        memcpy(q, step->seqs[i].tokens, (size_t)step->seqs[i].n_new * sizeof(int32_t));
        q += (size_t)step->seqs[i].n_new * sizeof(int32_t);
    }
    for (int64_t i = 0; i < step->n_seq; i++) {
        memcpy(q, step->seqs[i].block_table, (size_t)step->seqs[i].n_blocks * sizeof(int32_t));
        q += (size_t)step->seqs[i].n_blocks * sizeof(int32_t);
    }
    TSR_ASSERT((size_t)(q - p) == total);
    return total;
}

tsr_status tsr_plan_decode(const uint8_t *buf, size_t len, tsr_step *step, bool *want_logits,
                           tsr_seq_step **seqs_out) {
    tsr__plan_header h;
    if (len < sizeof h) return tsr_errorf(TSR_ERR_COMM, "step plan: %zu bytes is shorter than its header", len);
    memcpy(&h, buf, sizeof h);
    if (h.magic != TSR__PLAN_MAGIC || h.op != TSR__OP_STEP || h.n_seq < 0 || h.n_tok < 0 || h.n_bt < 0 ||
        h.n_seq > (1 << 24) || h.n_tok > (1LL << 32) || h.n_bt > (1LL << 32))
        return tsr_errorf(TSR_ERR_COMM, "step plan: bad header");
    size_t body = (size_t)h.n_seq * 3 * sizeof(int64_t) + (size_t)(h.n_tok + h.n_bt) * sizeof(int32_t);
    if (h.body_bytes != body || len != sizeof h + body) return tsr_errorf(TSR_ERR_COMM, "step plan: size mismatch");
    tsr_seq_step *seqs = realloc(*seqs_out, sizeof *seqs * (size_t)(h.n_seq ? h.n_seq : 1));
    if (!seqs) return tsr_errorf(TSR_ERR_OOM, "no memory to decode a step plan of %lld sequences", (long long)h.n_seq);
    *seqs_out = seqs;
    const uint8_t *q = buf + sizeof h;
    int64_t tok_sum = 0, bt_sum = 0;
    for (int64_t i = 0; i < h.n_seq; i++) {
        int64_t v[3];
        memcpy(v, q, sizeof v);
        q += sizeof v;
        if (v[0] < 0 || v[2] < 0 || v[1] < 0) return tsr_errorf(TSR_ERR_COMM, "step plan: negative sizes");
        seqs[i] = (tsr_seq_step){.n_new = v[0], .n_past = v[1], .n_blocks = v[2]};
        tok_sum += v[0];
        bt_sum += v[2];
    }
    if (tok_sum != h.n_tok || bt_sum != h.n_bt) return tsr_errorf(TSR_ERR_COMM, "step plan: counts disagree");
    const int32_t *toks = (const int32_t *)q;   /* body offsets are multiples of 8 then 4 */
    const int32_t *blocks = toks + h.n_tok;
    for (int64_t i = 0; i < h.n_seq; i++) {
        seqs[i].tokens = toks;
        toks += seqs[i].n_new;
        seqs[i].block_table = blocks;
        blocks += seqs[i].n_blocks;
    }
    step->seqs = seqs;
    step->n_seq = h.n_seq;
    step->all_logits = h.flags & 1;
    *want_logits = (h.flags & 2) != 0;
    return TSR_OK;
}

static tsr_status tsr__bcast_plan(tsr_exec *e, const uint8_t *data, size_t len, uint32_t op) {
    tsr__plan_header h = {TSR__PLAN_MAGIC, op, 0, 0, 0, 0, 0};
    if (data) memcpy(&h, data, sizeof h);
    const double to = e->group->timeout_s;
    TSR_TRY(tsr_group_bcast(e->group, &h, sizeof h, 0, to));
    if (data && len > sizeof h) TSR_TRY(tsr_group_bcast(e->group, (void *)(data + sizeof h), len - sizeof h, 0, to));
    return TSR_OK;
}

/* The forward state's on_step hook on rank 0: every step it is about to run goes out first. */
static tsr_status tsr__exec_on_step(void *ctx, const tsr_step *step, bool want_logits) {
    tsr_exec *e = ctx;
    size_t len = tsr_plan_encode(step, want_logits, &e->buf, &e->buf_cap);
    if (!len) return tsr_errorf(TSR_ERR_OOM, "no memory to encode the step plan");
    e->n_steps++;
    return tsr__bcast_plan(e, e->buf, len, TSR__OP_STEP);
}

/* Every rank's forward state calls this after allocating a step's activations and before the
 * step's first collective: the step runs only where all ranks can run it. */
static tsr_status tsr__exec_agree(void *ctx, tsr_status mine) {
    tsr_exec *e = ctx;
    return tsr_group_agree(e->group, mine);
}

tsr_status tsr_exec_heartbeat(tsr_exec *e) {
    if (e->group->size <= 1 || e->group->rank != 0) return TSR_OK;
    TSR_TRY(tsr__bcast_plan(e, NULL, 0, TSR__OP_BEAT));
    return tsr_group_agree(e->group, TSR_OK);   /* both ways: rank 0 hears from every worker */
}

void tsr_exec_stop(tsr_exec *e) {
    if (e->group->size <= 1 || e->group->rank != 0 || tsr_group_broken(NULL)) return;
    tsr__bcast_plan(e, NULL, 0, TSR__OP_STOP);
}

tsr_status tsr_exec_worker_loop(tsr_exec *e) {
    TSR_ASSERT(e->group->rank != 0);
    tsr_seq_step *seqs = NULL;
    float *logits = NULL;
    size_t logits_cap = 0;
    tsr_status st = TSR_OK;
    bool beating = false;
    const int64_t vocab = e->fs->model->cfg.vocab_size;
    for (;;) {
        tsr__plan_header h;
        /* no deadline while idle -- unless rank 0 sends heartbeats, then missing ones mean it
         * stopped answering */
        st = tsr_group_bcast(e->group, &h, sizeof h, 0, beating ? e->group->timeout_s + 1.0 : 0);
        if (st != TSR_OK) break;
        if (h.magic != TSR__PLAN_MAGIC) { st = tsr_errorf(TSR_ERR_COMM, "step plan: bad magic"); break; }
        if (h.op == TSR__OP_STOP) break;
        if (h.op == TSR__OP_BEAT) {
            beating = true;
            st = tsr_group_agree(e->group, TSR_OK);
            if (st != TSR_OK) break;
            continue;
        }
        size_t len = sizeof h + h.body_bytes;
        if (h.body_bytes > ((uint64_t)1 << 40) || !tsr__grow(&e->buf, &e->buf_cap, len)) {
            st = tsr_errorf(TSR_ERR_OOM, "no memory for a step plan of %llu bytes", (unsigned long long)h.body_bytes);
            break;
        }
        memcpy(e->buf, &h, sizeof h);
        if (h.body_bytes) {
            st = tsr_group_bcast(e->group, e->buf + sizeof h, h.body_bytes, 0, e->group->timeout_s);
            if (st != TSR_OK) break;
        }
        tsr_step step;
        bool want_logits = false;
        st = tsr_plan_decode(e->buf, len, &step, &want_logits, &seqs);
        if (st != TSR_OK) break;
        size_t n_out = (size_t)(step.all_logits ? h.n_tok : h.n_seq);
        float *out = NULL;
        if (want_logits && n_out * (size_t)vocab > logits_cap) {
            float *nl = realloc(logits, n_out * (size_t)vocab * sizeof(float));
            if (nl) {
                logits = nl;
                logits_cap = n_out * (size_t)vocab;
            }
        }
        if (want_logits) out = n_out * (size_t)vocab <= logits_cap ? logits : NULL;
        if (want_logits && !out) {
            /* the step still has to be agreed on: forward fails it on every rank */
            e->fs->fail_next = true;
            tsr_errorf(TSR_ERR_OOM, "no host memory for %zu rows of logits", n_out);
        }
        st = tsr_forward(e->fs, e->kv, &step, out ? out : (want_logits ? logits : NULL));
        e->n_steps++;
        if (st == TSR_OK) continue;
        /* A step the group agreed to skip (a rank out of memory) fails its requests on rank 0;
         * the group goes on.  A broken group or a bad plan ends the loop. */
        if (tsr_group_broken(NULL) || st == TSR_ERR_COMM) break;
        TSR_LOGW("step %lld skipped by the group: %s", (long long)e->n_steps, tsr_last_error());
        st = TSR_OK;
    }
    free(seqs);
    free(logits);
    if (st != TSR_OK) TSR_LOGE("worker step loop failed: %s", tsr_last_error());
    return st;
}
