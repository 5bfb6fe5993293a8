/* Encoding: added tokens are matched first (leftmost-longest, with their lstrip / rstrip /
 * single_word rules), the text between them is normalized and pre-tokenized, and the
 * post-processor's BOS/EOS ids go around the result. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

static bool tsr__word_char(uint32_t cp) {
    uint8_t p = tsr_uc_props(cp);
    return TSR__IS(p, TSR_UC_L) || TSR__IS(p, TSR_UC_N) || cp == '_';
}

/* Leftmost-longest added-token match in s[from, n) among the tokens of this pass.  Returns the
 * token index or -1; [*ms, *me) is the matched span including lstrip/rstrip whitespace. */
static int tsr__find_added(const tsr__enc *e, bool normalized_pass, const uint8_t *s, size_t n, size_t from,
                           size_t *ms, size_t *me) {
    const tsr_tokenizer *t = e->t;
    for (size_t p = from; p < n; p++) {
        int cnt = t->n_added_by_byte[s[p]];
        if (!cnt) continue;
        const int32_t *list = t->added_by_byte[s[p]];
        for (int k = 0; k < cnt; k++) {
            const tsr__added *a = &t->added[list[k]];
            if (a->normalized != normalized_pass) continue;
            if (a->special && !e->parse_special) continue;
            if (a->len > n - p || memcmp(s + p, a->content, a->len)) continue;
            size_t st = p, en = p + a->len;
            if (a->single_word) {
                bool ok = true;
                if (st > 0) {
                    size_t q = st - 1;
                    while (q > 0 && (s[q] & 0xC0) == 0x80) q--;
                    int len;
                    ok = !tsr__word_char(tsr_utf8_next(s + q, n - q, &len));
                }
                if (ok && en < n) {
                    int len;
                    ok = !tsr__word_char(tsr_utf8_next(s + en, n - en, &len));
                }
                if (!ok) continue;
            }
            if (a->lstrip) {
                while (st > from) {
                    size_t q = st - 1;
                    while (q > from && (s[q] & 0xC0) == 0x80) q--;
                    int len;
                    if (!(tsr_uc_props(tsr_utf8_next(s + q, n - q, &len)) & TSR_UC_SPACE)) break;
                    st = q;
                }
            }
            if (a->rstrip) {
                while (en < n) {
                    int len;
                    if (!(tsr_uc_props(tsr_utf8_next(s + en, n - en, &len)) & TSR_UC_SPACE)) break;
                    en += (size_t)len;
                }
            }
            *ms = st;
            *me = en;
            return list[k];
        }
    }
    return -1;
}

/* A segment between non-normalized added tokens: normalize, split on normalized added
 * tokens, pre-tokenize. */
static void tsr__encode_segment(tsr__enc *e, const uint8_t *s, size_t n, bool at_start) {
    const tsr_tokenizer *t = e->t;
    if (!n) return;
    size_t nn;
    bool owned, oom = false;
    const uint8_t *ns = tsr__normalize(t, s, n, &nn, &owned, &oom);
    if (oom) { e->oom = true; return; }
    if (!t->has_normalized_added) {
        tsr__pretok(e, 0, ns, nn, at_start);
    } else {
        size_t pos = 0;
        while (pos < nn) {
            size_t ms, me;
            int k = tsr__find_added(e, true, ns, nn, pos, &ms, &me);
            if (k < 0) break;
            if (ms > pos) tsr__pretok(e, 0, ns + pos, ms - pos, at_start && pos == 0);
            tsr__emit(e, t->added[k].id);
            pos = me;
        }
        if (pos < nn) tsr__pretok(e, 0, ns + pos, nn - pos, at_start && pos == 0);
    }
    if (owned) free((void *)ns);
}

tsr_status tsr_tokenizer_encode(const tsr_tokenizer *t, const char *text, size_t len, bool add_special,
                                bool parse_special, int32_t **ids, int64_t *n_ids) {
    if (!t || (!text && len) || !ids || !n_ids) return tsr_errorf(TSR_ERR_INVALID_ARG, "tokenizer_encode: bad arguments");
    tsr__enc e = {.t = t, .parse_special = parse_special};
    const uint8_t *s = (const uint8_t *)text;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++) tsr__emit(&e, t->prefix[i]);
    size_t pos = 0;
    while (pos < len && !e.oom) {
        size_t ms, me;
        int k = tsr__find_added(&e, false, s, len, pos, &ms, &me);
        if (k < 0) break;
        tsr__encode_segment(&e, s + pos, ms - pos, pos == 0);
        tsr__emit(&e, t->added[k].id);
        pos = me;
    }
    if (pos < len) tsr__encode_segment(&e, s + pos, len - pos, pos == 0);
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++) tsr__emit(&e, t->suffix[i]);
    free(e.sym_id);
    free(e.sym_prev);
    free(e.sym_next);
    free(e.heap);
    if (e.oom) {
        free(e.ids);
        return tsr_errorf(TSR_ERR_OOM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    if (!e.ids) e.ids = malloc(sizeof(int32_t));
    *ids = e.ids;
    *n_ids = e.n;
    return TSR_OK;
}
