/* The bytes one token adds to a text in the middle of a decode (no first-token rules such as
 * SentencePiece's leading-space strip): what constrained decoding (coordinator/grammar) walks
 * its automaton with. */
#include "coordinator/tokenizer/internal.h"

tsr_status tsr_tokenizer_token_bytes(const tsr_tokenizer *t, int32_t id, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (id < 0 || id >= t->n_vocab || !t->piece[id])
        return tsr_errorf(TSR_ERR_INVALID_ARG, "token id %d is outside the vocabulary (%lld)", id, (long long)t->n_vocab);
    const char *s = t->piece[id];
    size_t n = t->piece_len[id];
    tsr__buf o = {0};
    if (!t->has_decoder) {   /* as tsr_detok_push: tokens after the first are joined by a space */
        tsr__buf_add(&o, " ", 1);
        tsr__buf_add(&o, s, n);
    } else {
        char *own = tsr__decoders_apply(t, false, &s, &n, &o.oom);
        tsr__buf_add(&o, s, n);
        free(own);
    }
    if (o.oom) {
        free(o.p);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    if (!o.p) tsr__buf_add(&o, "", 0);
    *out = o.p;
    *len = o.n;
    return o.p ? TSR_OK : tsr_errorf(TSR_ERR_OOM, "out of memory");
}
