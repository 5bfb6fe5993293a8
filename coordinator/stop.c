/* Stop ids and stop strings with hold-back; the semantics are in stop.h.  The held text is
 * never longer than the longest stop string plus the newest piece, so the naive searches
 * below cost a few hundred byte comparisons per token. */
#include "coordinator/stop.h"

#include <stdlib.h>
#include <string.h>

const char *tsr_finish_reason_str(tsr_finish_reason r) {
    switch (r) {
    case TSR_FINISH_NONE: return "none";
    case TSR_FINISH_STOP: return "stop";
    case TSR_FINISH_LENGTH: return "length";
    case TSR_FINISH_CANCELLED: return "cancelled";
    case TSR_FINISH_ERROR: return "error";
    }
    return "?";
}

tsr_status tsr_stop_init(tsr_stop *s, const int32_t *eos_ids, int n_eos, bool ignore_eos,
                         const int32_t *user_ids, int n_user, const char *const *strs, int n_strs) {
    memset(s, 0, sizeof *s);
    s->matched = -1;
    if (n_eos < 0 || n_user < 0 || n_strs < 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "stop: negative count");
    if (n_strs > TSR_STOP_MAX_STRINGS)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "at most %d stop strings are allowed (got %d)",
                          TSR_STOP_MAX_STRINGS, n_strs);
    for (int i = 0; i < n_user; i++)
        if (user_ids[i] < 0)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "stop token id %d is negative", (int)user_ids[i]);
    for (int i = 0; i < n_strs; i++) {
        size_t n = strs[i] ? strlen(strs[i]) : 0;
        if (n == 0) return tsr_errorf(TSR_ERR_INVALID_ARG, "stop string %d is empty", i);
        if (n > TSR_STOP_MAX_STRING_LEN)
            return tsr_errorf(TSR_ERR_INVALID_ARG, "stop string %d is %zu bytes long (at most %d)", i, n,
                              TSR_STOP_MAX_STRING_LEN);
    }
    int n_ids = (ignore_eos ? 0 : n_eos) + n_user;
    s->ids = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof *s->ids);
    s->strs = calloc((size_t)(n_strs > 0 ? n_strs : 1), sizeof *s->strs);
    s->lens = calloc((size_t)(n_strs > 0 ? n_strs : 1), sizeof *s->lens);
    if (!s->ids || !s->strs || !s->lens) {
        tsr_stop_free(s);
        return tsr_errorf(TSR_ERR_OOM, "stop: out of memory");
    }
    if (!ignore_eos)
        for (int i = 0; i < n_eos; i++)
            if (eos_ids[i] >= 0) s->ids[s->n_ids++] = eos_ids[i];
    for (int i = 0; i < n_user; i++) s->ids[s->n_ids++] = user_ids[i];
    for (int i = 0; i < n_strs; i++) {
        s->lens[i] = strlen(strs[i]);
        s->strs[i] = malloc(s->lens[i] + 1);
        if (!s->strs[i]) {
            tsr_stop_free(s);
            return tsr_errorf(TSR_ERR_OOM, "stop: out of memory");
        }
        memcpy(s->strs[i], strs[i], s->lens[i] + 1);
        s->n_strs++;
    }
    return TSR_OK;
}

void tsr_stop_free(tsr_stop *s) {
    if (!s) return;
    for (int i = 0; i < s->n_strs; i++) free(s->strs[i]);
    free(s->strs);
    free(s->lens);
    free(s->ids);
    free(s->held);
    free(s->out);
    memset(s, 0, sizeof *s);
    s->matched = -1;
}

void tsr_stop_reset(tsr_stop *s) {
    s->n_held = 0;
    s->stopped = false;
    s->matched = -1;
}

bool tsr_stop_is_stop_id(const tsr_stop *s, int32_t id) {
    for (int i = 0; i < s->n_ids; i++)
        if (s->ids[i] == id) return true;
    return false;
}

size_t tsr_stop_partial_suffix(const tsr_stop *s, const char *text, size_t len) {
    size_t best = 0;
    for (int k = 0; k < s->n_strs; k++) {
        size_t L = s->lens[k];
        /* Proper prefixes only: a whole occurrence is a match, not something to wait for. */
        size_t max = L - 1 < len ? L - 1 : len;
        for (size_t m = max; m > best; m--)
            if (!memcmp(text + len - m, s->strs[k], m)) {
                best = m;
                break;
            }
    }
    return best;
}

static bool tsr__reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (!b) return false;
    *buf = b;
    *cap = c;
    return true;
}

/* Copies n bytes of held text to the release buffer and drops them from the front. */
static void tsr__release(tsr_stop *s, size_t n, size_t drop, const char **emit, size_t *emit_len) {
    TSR_ASSERT(tsr__reserve(&s->out, &s->cap_out, n + 1));
    memcpy(s->out, s->held, n);
    s->out[n] = '\0';
    memmove(s->held, s->held + drop, s->n_held - drop);
    s->n_held -= drop;
    *emit = s->out;
    *emit_len = n;
}

bool tsr_stop_push(tsr_stop *s, const char *text, size_t len, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->stopped) return true;
    if (s->n_strs == 0) {   /* nothing to hold back: pass through */
        TSR_ASSERT(tsr__reserve(&s->out, &s->cap_out, len + 1));
        memcpy(s->out, text, len);
        s->out[len] = '\0';
        *emit = s->out;
        *emit_len = len;
        return false;
    }
    TSR_ASSERT(tsr__reserve(&s->held, &s->cap_held, s->n_held + len + 1));
    const size_t old = s->n_held;
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    /* A new occurrence ends in the new text; it may start anywhere in what was held, because
     * every possible beginning was held.  The earliest start wins. */
    size_t best_pos = SIZE_MAX;
    int best_k = -1;
    for (int k = 0; k < s->n_strs; k++) {
        size_t L = s->lens[k];
        if (L > s->n_held) continue;
        size_t from = old + 1 > L ? old + 1 - L : 0;
        for (size_t p = from; p + L <= s->n_held && p < best_pos; p++)
            if (s->held[p] == s->strs[k][0] && !memcmp(s->held + p, s->strs[k], L)) {
                best_pos = p;
                best_k = k;
                break;
            }
    }
    if (best_k >= 0) {
        s->stopped = true;
        s->matched = best_k;
        tsr__release(s, best_pos, s->n_held, emit, emit_len);
        return true;
    }
    size_t keep = tsr_stop_partial_suffix(s, s->held, s->n_held);
    size_t n = s->n_held - keep;
    tsr__release(s, n, n, emit, emit_len);
    return false;
}

void tsr_stop_flush(tsr_stop *s, const char **emit, size_t *emit_len) {
    *emit = "";
    *emit_len = 0;
    if (s->stopped || s->n_held == 0) return;
    tsr__release(s, s->n_held, s->n_held, emit, emit_len);
}
