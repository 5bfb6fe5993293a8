/* Decoders: the steps that turn one token's vocabulary piece back into text (ByteLevel,
 * Replace, ByteFallback, Fuse, Strip, Metaspace), in the order the tokenizer lists them.  The
 * streaming decoder (detok.c) runs them on each token and joins the results. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

/* Replaces every a by b in s[0..n) into a new malloc'd buffer. */
static char *tsr__replace(const char *s, size_t n, const char *a, const char *b, size_t *out_n) {
    size_t al = strlen(a), bl = strlen(b);
    tsr__buf o = {0};
    tsr__buf_add(&o, "", 0);
    for (size_t i = 0; i < n;) {
        if (al && i + al <= n && !memcmp(s + i, a, al)) { tsr__buf_add(&o, b, bl); i += al; }
        else { tsr__buf_add(&o, s + i, 1); i++; }
    }
    if (o.oom) { free(o.p); return NULL; }
    *out_n = o.n;
    return o.p;
}

static bool tsr__is_byte_token(const char *s, size_t n, uint8_t *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int x = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (x < 0) return false;
        v = v * 16 + x;
    }
    *byte = (uint8_t)v;
    return true;
}

char *tsr__decoders_apply(const tsr_tokenizer *t, bool first, const char **sp, size_t *np, bool *oom) {
    const char *s = *sp;
    size_t n = *np;
    char *own = NULL;
    bool is_bytes = false; /* s already holds raw bytes */
    for (int k = 0; k < t->n_dec; k++) {
        const tsr__dec *dc = &t->dec[k];
        switch (dc->kind) {
        case TSR__DEC_BYTELEVEL: {
            char *r = malloc(n + 1);
            size_t rn;
            if (!r) { *oom = true; break; }
            if (tsr__bytelevel_decode(s, n, r, &rn)) {
                free(own);
                own = r;
                s = r;
                n = rn;
            } else {
                free(r);
            }
            is_bytes = true;
            break;
        }
        case TSR__DEC_REPLACE:
        case TSR__DEC_METASPACE: {
            if (is_bytes) break;
            size_t rn;
            char *r = tsr__replace(s, n, dc->a, dc->kind == TSR__DEC_REPLACE ? dc->b : " ", &rn);
            if (!r) { *oom = true; break; }
            free(own);
            own = r;
            s = r;
            n = rn;
            if (dc->kind == TSR__DEC_METASPACE && dc->meta_strip && first && n && s[0] == ' ') { s++; n--; }
            break;
        }
        case TSR__DEC_BYTEFALLBACK: {
            uint8_t b;
            if (!is_bytes && tsr__is_byte_token(s, n, &b)) {
                free(own);
                own = malloc(1);
                if (!own) { *oom = true; break; }
                own[0] = (char)b;
                s = own;
                n = 1;
                is_bytes = true;
            }
            break;
        }
        case TSR__DEC_STRIP:
            if (!dc->stream) {
                int k2 = 0;
                char cb[4];
                int cl = tsr_utf8_put(dc->strip_cp, cb);
                while (k2 < dc->strip_left && n >= (size_t)cl && !memcmp(s, cb, (size_t)cl)) { s += cl; n -= (size_t)cl; k2++; }
            }
            break;
        case TSR__DEC_FUSE: break;
        }
    }
    *sp = s;
    *np = n;
    return own;
}
