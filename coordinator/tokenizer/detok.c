/* Detokenization: the streaming decoder, which takes ids one at a time, runs the decoder steps
 * on each, and releases only text that is final (complete UTF-8; a Strip at the start of the
 * whole text applied); a whole decode runs it to the end, so a stream and a whole decode
 * agree. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

void tsr_detok_init(tsr_detok *d, const tsr_tokenizer *t, bool skip_special) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->skip_special = skip_special;
    d->strip_left = -1;
}

static void tsr__put_cp(tsr__buf *out, tsr_detok *d, uint32_t cp) {
    if (d->strip_left == -1) {
        d->strip_left = 0;
        for (int k = 0; k < d->tok->n_dec; k++)
            if (d->tok->dec[k].kind == TSR__DEC_STRIP && d->tok->dec[k].stream) d->strip_left = d->tok->dec[k].strip_left;
    }
    if (d->strip_left > 0) {
        uint32_t want = 0;
        for (int k = 0; k < d->tok->n_dec; k++)
            if (d->tok->dec[k].kind == TSR__DEC_STRIP && d->tok->dec[k].stream) want = d->tok->dec[k].strip_cp;
        if (cp == want) { d->strip_left--; return; }
        d->strip_left = 0;
    }
    char b[4];
    int k = tsr_utf8_put(cp, b);
    tsr__buf_add(out, b, (size_t)k);
    d->emitted = true;
}

/* Feeds bytes through a lossy UTF-8 decoder (each maximal invalid subpart becomes U+FFFD, as
 * Rust's from_utf8_lossy does); an incomplete tail stays pending unless final. */
static void tsr__feed(tsr_detok *d, tsr__buf *out, const uint8_t *s, size_t n, bool final) {
    uint8_t tmp[4];
    size_t total = (size_t)d->n_pending + n;
    uint8_t *all = total <= sizeof tmp ? tmp : malloc(total);
    if (!all) { out->oom = true; return; }
    memcpy(all, d->pending, (size_t)d->n_pending);
    if (n) memcpy(all + d->n_pending, s, n);
    d->n_pending = 0;
    size_t i = 0;
    while (i < total) {
        uint8_t c = all[i];
        if (c < 0x80) { tsr__put_cp(out, d, c); i++; continue; }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 2;
        else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else { tsr__put_cp(out, d, 0xFFFD); i++; continue; }
        int k = 1;
        bool bad = false;
        while (k < need) {
            if (i + (size_t)k >= total) break;
            uint8_t x = all[i + (size_t)k];
            if (k == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) { bad = true; break; }
            k++;
        }
        if (bad) { tsr__put_cp(out, d, 0xFFFD); i += (size_t)k; continue; }
        if (k < need) { /* incomplete at the end */
            if (final) { tsr__put_cp(out, d, 0xFFFD); i = total; break; }
            memcpy(d->pending, all + i, total - i);
            d->n_pending = (int)(total - i);
            break;
        }
        int len;
        uint32_t cp = tsr_utf8_next(all + i, (size_t)need, &len);
        tsr__put_cp(out, d, cp);
        i += (size_t)need;
    }
    if (all != tmp) free(all);
}

tsr_status tsr_detok_push(tsr_detok *d, int32_t id, char **out, size_t *len) {
    const tsr_tokenizer *t = d->tok;
    *out = NULL;
    if (len) *len = 0;
    if (id < 0 || id >= t->n_vocab || !t->piece[id])
        return tsr_errorf(TSR_ERR_INVALID_ARG, "detokenize: token id %d is outside the vocabulary (%lld)", id,
                          (long long)t->n_vocab);
    d->n_pushed++;
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    if (d->skip_special && (t->flags[id] & TSR__F_SPECIAL)) goto done;
    {
        const char *s = t->piece[id];
        size_t n = t->piece_len[id];
        bool first = d->n_decoded == 0;
        d->n_decoded++;
        if (!t->has_decoder) {
            if (!first) tsr__feed(d, &o, (const uint8_t *)" ", 1, false);
            tsr__feed(d, &o, (const uint8_t *)s, n, false);
            goto done;
        }
        char *own = tsr__decoders_apply(t, first, &s, &n, &o.oom);
        tsr__feed(d, &o, (const uint8_t *)s, n, false);
        free(own);
    }
done:
    if (o.oom) {
        free(o.p);
        return tsr_errorf(TSR_ERR_OOM, "detokenize: out of memory");
    }
    *out = o.p;
    if (len) *len = o.n;
    return TSR_OK;
}

tsr_status tsr_detok_finish(tsr_detok *d, char **out, size_t *len) {
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    tsr__feed(d, &o, NULL, 0, true);
    if (o.oom) {
        free(o.p);
        return tsr_errorf(TSR_ERR_OOM, "detokenize: out of memory");
    }
    *out = o.p;
    if (len) *len = o.n;
    return TSR_OK;
}

tsr_status tsr_tokenizer_decode(const tsr_tokenizer *t, const int32_t *ids, int64_t n_ids, bool skip_special,
                                char **text, size_t *len) {
    tsr_detok d;
    tsr_detok_init(&d, t, skip_special);
    tsr__buf all = {0};
    tsr__buf_add(&all, "", 0);
    for (int64_t i = 0; i <= n_ids; i++) {
        char *piece;
        size_t pn;
        tsr_status st = i < n_ids ? tsr_detok_push(&d, ids[i], &piece, &pn) : tsr_detok_finish(&d, &piece, &pn);
        if (st != TSR_OK) { free(all.p); return st; }
        tsr__buf_add(&all, piece, pn);
        free(piece);
    }
    if (all.oom) { free(all.p); return tsr_errorf(TSR_ERR_OOM, "decode: out of memory"); }
    *text = all.p;
    if (len) *len = all.n;
    return TSR_OK;
}
