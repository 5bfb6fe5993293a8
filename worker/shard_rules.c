/* The shard-rule table and the TP plan (see shard_rules.h): which rows and columns of each
 * logical tensor belong to a rank. */
#include "worker/shard_rules.h"

#include <stdio.h>
#include <string.h>

static const tsr_shard_rule tsr__rules[TSR_W_COUNT] = {
    [TSR_W_TOK_EMBD] = {TSR_W_TOK_EMBD, "token embedding", false, false, TSR_SPLIT_OUT, TSR_UNIT_VOCAB},
    [TSR_W_ATTN_NORM] = {TSR_W_ATTN_NORM, "attention norm", true, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_Q] = {TSR_W_Q, "q projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_HEAD},
    [TSR_W_K] = {TSR_W_K, "k projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_V] = {TSR_W_V, "v projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_Q_BIAS] = {TSR_W_Q_BIAS, "q bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_HEAD},
    [TSR_W_K_BIAS] = {TSR_W_K_BIAS, "k bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_V_BIAS] = {TSR_W_V_BIAS, "v bias", true, true, TSR_SPLIT_OUT, TSR_UNIT_KV_HEAD},
    [TSR_W_O] = {TSR_W_O, "attention output projection", true, false, TSR_SPLIT_IN, TSR_UNIT_HEAD},
    /* a row-parallel bias is replicated and added once, after the all-reduce */
    [TSR_W_O_BIAS] = {TSR_W_O_BIAS, "attention output bias", true, true, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_FFN_NORM] = {TSR_W_FFN_NORM, "ffn norm", true, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_GATE] = {TSR_W_GATE, "gate projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_FF},
    [TSR_W_UP] = {TSR_W_UP, "up projection", true, false, TSR_SPLIT_OUT, TSR_UNIT_FF},
    [TSR_W_DOWN] = {TSR_W_DOWN, "down projection", true, false, TSR_SPLIT_IN, TSR_UNIT_FF},
    [TSR_W_OUT_NORM] = {TSR_W_OUT_NORM, "final norm", false, false, TSR_SPLIT_NONE, TSR_UNIT_NONE},
    [TSR_W_LM_HEAD] = {TSR_W_LM_HEAD, "lm head", false, true, TSR_SPLIT_OUT, TSR_UNIT_VOCAB},
};

const tsr_shard_rule *tsr_shard_rule_of(tsr_wkind kind) {
    TSR_ASSERT(kind >= 0 && kind < TSR_W_COUNT);
    return &tsr__rules[kind];
}

void tsr_shard_split(int64_t n, int rank, int size, int64_t *first, int64_t *count) {
    int64_t base = n / size, extra = n % size;
    *count = base + (rank < extra ? 1 : 0);
    *first = rank * base + (rank < extra ? rank : extra);
}

/* Splits need not be even: ranks get balanced, contiguous shares (SmolLM2's 9 heads run on 2
 * or 4 ranks).  Attention keeps whole KV groups together so a rank's query heads always map
 * onto its own KV heads with the same group ratio the kernels assume:
 *  - tp <= n_kv_head: the KV heads are split in balanced contiguous runs and each rank takes
 *    the query heads of its KV heads;
 *  - tp > n_kv_head: the ranks are split among the KV groups (balanced), every rank keeps the
 *    one KV head of its group (replicated) and a balanced share of that group's query heads. */
tsr_status tsr_shard_plan(const tsr_model_config *cfg, int rank, int size, tsr_shard *out) {
    if (size < 1 || rank < 0 || rank >= size)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "bad tensor-parallel rank %d of %d", rank, size);
    memset(out, 0, sizeof *out);
    out->rank = rank;
    out->size = size;
    if (cfg->n_kv_head < 1 || cfg->n_head % cfg->n_kv_head)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "n_head %lld is not a multiple of n_kv_head %lld",
                          (long long)cfg->n_head, (long long)cfg->n_kv_head);
    const int64_t group = cfg->n_head / cfg->n_kv_head;
    if (size > cfg->n_head)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "tensor parallelism: tp_size %d is larger than n_head (attention heads) %lld: every rank "
                          "needs at least one whole head",
                          size, (long long)cfg->n_head);
    if (size <= cfg->n_kv_head) {
        tsr_shard_split(cfg->n_kv_head, rank, size, &out->kv_head0, &out->n_kv_head);
        out->head0 = out->kv_head0 * group;
        out->n_head = out->n_kv_head * group;
    } else {
        /* rank -> KV group: the inverse of splitting `size` ranks over n_kv_head groups */
        int64_t g = 0, r0 = 0, nr = 0;
        for (g = 0; g < cfg->n_kv_head; g++) {
            tsr_shard_split(size, (int)g, (int)cfg->n_kv_head, &r0, &nr);
            if (rank < r0 + nr) break;
        }
        if (nr > group)
            return tsr_errorf(TSR_ERR_INVALID_ARG,
                              "tensor parallelism: tp_size %d puts %lld ranks on a KV group of only %lld query heads "
                              "(n_head %lld, n_kv_head %lld)",
                              size, (long long)nr, (long long)group, (long long)cfg->n_head, (long long)cfg->n_kv_head);
        out->kv_head0 = g;
        out->n_kv_head = 1;
        int64_t q0, nq;
        tsr_shard_split(group, (int)(rank - r0), (int)nr, &q0, &nq);
        out->head0 = g * group + q0;
        out->n_head = nq;
    }
    if (size > cfg->d_ff)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor parallelism: tp_size %d is larger than d_ff (intermediate_size) %lld",
                          size, (long long)cfg->d_ff);
    tsr_shard_split(cfg->d_ff, rank, size, &out->ff0, &out->d_ff);
    if (size > cfg->vocab_size)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "tensor parallelism: tp_size %d is larger than vocab_size %lld", size,
                          (long long)cfg->vocab_size);
    tsr_shard_split(cfg->vocab_size, rank, size, &out->vocab0, &out->vocab);
    out->vocab_pad = (cfg->vocab_size + size - 1) / size;
    return TSR_OK;
}

void tsr__shard_global_shape(const tsr_model_config *c, tsr_wkind k, int64_t *rows, int64_t *cols) {
    int64_t d = c->d_model, hd = c->head_dim;
    switch (k) {
    case TSR_W_TOK_EMBD: case TSR_W_LM_HEAD: *rows = c->vocab_size; *cols = d; return;
    case TSR_W_ATTN_NORM: case TSR_W_FFN_NORM: case TSR_W_OUT_NORM: case TSR_W_O_BIAS: *rows = d; *cols = 1; return;
    case TSR_W_Q: *rows = c->n_head * hd; *cols = d; return;
    case TSR_W_K: case TSR_W_V: *rows = c->n_kv_head * hd; *cols = d; return;
    case TSR_W_Q_BIAS: *rows = c->n_head * hd; *cols = 1; return;
    case TSR_W_K_BIAS: case TSR_W_V_BIAS: *rows = c->n_kv_head * hd; *cols = 1; return;
    case TSR_W_O: *rows = d; *cols = c->n_head * hd; return;
    case TSR_W_GATE: case TSR_W_UP: *rows = c->d_ff; *cols = d; return;
    case TSR_W_DOWN: *rows = d; *cols = c->d_ff; return;
    case TSR_W_COUNT: break;
    }
    TSR_ASSERT(0);
}

/* The first unit, the number of units and the unit's size in rows/cols for a rank. */
static void tsr__unit_range(const tsr_model_config *c, const tsr_shard *sh, tsr_split_unit u,
                            int64_t *first, int64_t *n, int64_t *usize) {
    switch (u) {
    case TSR_UNIT_HEAD: *first = sh->head0; *n = sh->n_head; *usize = c->head_dim; return;
    case TSR_UNIT_KV_HEAD: *first = sh->kv_head0; *n = sh->n_kv_head; *usize = c->head_dim; return;
    case TSR_UNIT_FF: *first = sh->ff0; *n = sh->d_ff; *usize = 1; return;
    case TSR_UNIT_VOCAB: *first = sh->vocab0; *n = sh->vocab; *usize = 1; return;
    case TSR_UNIT_NONE: break;
    }
    TSR_ASSERT(0);
}

void tsr__shard_local_slice(const tsr_model_config *c, const tsr_shard *sh, tsr_wkind k, int64_t *r0, int64_t *nr,
                            int64_t *c0, int64_t *nc) {
    int64_t rows, cols;
    tsr__shard_global_shape(c, k, &rows, &cols);
    *r0 = 0, *nr = rows, *c0 = 0, *nc = cols;
    const tsr_shard_rule *r = &tsr__rules[k];
    if (r->split == TSR_SPLIT_NONE) return;
    int64_t first, n, us;
    tsr__unit_range(c, sh, r->unit, &first, &n, &us);
    if (r->split == TSR_SPLIT_OUT) *r0 = first * us, *nr = n * us;
    else *c0 = first * us, *nc = n * us;
}

/* Whether every cut rank r of `size` makes in kind k falls on a block edge of w. */
static bool tsr__cuts_whole(const tsr_model_config *c, tsr_wkind k, const tsr_wtensor *w, int r, int size) {
    tsr_shard sh;
    if (tsr_shard_plan(c, r, size, &sh) != TSR_OK) {
        tsr_clear_error();
        return false;
    }
    int64_t r0, nr, c0, nc;
    tsr__shard_local_slice(c, &sh, k, &r0, &nr, &c0, &nc);
    int64_t ur = tsr_wtensor_split_unit(w, TSR_SPLIT_ROWS), uc = tsr_wtensor_split_unit(w, TSR_SPLIT_COLS);
    if (ur <= 0 || uc <= 0) return false;
    return r0 % ur == 0 && (r0 + nr) % ur == 0 && c0 % uc == 0 && (c0 + nc) % uc == 0;
}

tsr_status tsr_shard_check_blocks(const tsr_model_config *c, tsr_wkind k, const tsr_wtensor *w, const char *name,
                                  int rank, int size) {
    if (tsr__cuts_whole(c, k, w, rank, size)) return TSR_OK;
    char ok[160] = "";
    size_t len = 0;
    for (int t = 1; t <= 2 * size && len + 16 < sizeof ok; t++) {
        bool all = true;
        for (int r = 0; r < t && all; r++) all = tsr__cuts_whole(c, k, w, r, t);
        if (all) len += (size_t)snprintf(ok + len, sizeof ok - len, "%s%d", len ? ", " : "", t);
    }
    if (!len) snprintf(ok, sizeof ok, "none up to %d", 2 * size);
    tsr_shard sh;
    TSR_TRY(tsr_shard_plan(c, rank, size, &sh));
    int64_t r0, nr, c0, nc;
    tsr__shard_local_slice(c, &sh, k, &r0, &nr, &c0, &nc);
    bool cols = c0 != 0 || nc != w->cols;
    return tsr_errorf(TSR_ERR_INVALID_ARG,
                      "tensor '%s' (%s [%lld, %lld]): rank %d of %d would hold %s %lld..%lld, which cuts a block of "
                      "%lld; TP sizes that would work: %s",
                      name, tsr_wtype_name(w->type), (long long)w->rows, (long long)w->cols, rank, size,
                      cols ? "columns (in)" : "rows (out)", (long long)(cols ? c0 : r0),
                      (long long)(cols ? c0 + nc : r0 + nr),
                      (long long)tsr_wtensor_split_unit(w, cols ? TSR_SPLIT_COLS : TSR_SPLIT_ROWS), ok);
}
