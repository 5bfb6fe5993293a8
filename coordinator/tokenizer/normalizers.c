/* Normalizers, run on the text between added tokens before pre-tokenization (and on the
 * content of normalized added tokens): NFC, Prepend and Replace (a plain string), in the order
 * the tokenizer lists them. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>
#include <string.h>

const uint8_t *tsr__normalize(const tsr_tokenizer *t, const uint8_t *s, size_t n, size_t *out_n, bool *owned,
                              bool *oom) {
    *owned = false;
    *out_n = n;
    for (int k = 0; k < t->n_norm; k++) {
        const tsr__norm *nm = &t->norm[k];
        uint8_t *next = NULL;
        size_t nn = 0;
        if (nm->kind == TSR__NORM_NFC) {
            next = (uint8_t *)tsr_uc_nfc((const char *)s, n, &nn);
            if (!next && nn == SIZE_MAX) { *oom = true; break; }
            if (!next) continue;
        } else if (nm->kind == TSR__NORM_PREPEND) {
            if (!n) continue;
            size_t pl = strlen(nm->a);
            next = malloc(n + pl + 1);
            if (!next) { *oom = true; break; }
            memcpy(next, nm->a, pl);
            memcpy(next + pl, s, n);
            nn = n + pl;
        } else {
            size_t al = strlen(nm->a), bl = strlen(nm->b), cnt = 0;
            if (!al) continue;
            for (size_t i = 0; i + al <= n;) {
                if (!memcmp(s + i, nm->a, al)) { cnt++; i += al; }
                else i++;
            }
            if (!cnt) continue;
            next = malloc(n + cnt * bl + 1);
            if (!next) { *oom = true; break; }
            for (size_t i = 0; i < n;) {
                if (i + al <= n && !memcmp(s + i, nm->a, al)) { memcpy(next + nn, nm->b, bl); nn += bl; i += al; }
                else next[nn++] = s[i++];
            }
        }
        if (*owned) free((void *)s);
        s = next;
        n = nn;
        *owned = true;
    }
    *out_n = n;
    return s;
}

void tsr__normalize_added(tsr_tokenizer *t) {
    for (int i = 0; i < t->n_added; i++) {
        tsr__added *a = &t->added[i];
        if (!a->normalized || !t->n_norm) continue;
        size_t nn;
        bool owned, oom = false;
        const uint8_t *ns = tsr__normalize(t, (const uint8_t *)a->content, a->len, &nn, &owned, &oom);
        if (owned) {
            free(a->content);
            a->content = (char *)ns;
            a->len = (uint32_t)nn;
        }
    }
}
