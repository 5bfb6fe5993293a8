/* Unicode tables and NFC for the tokenizer (see unicode.h).  The tables come from the header
 * gen_unicode.py writes into the build tree. */
#include "coordinator/unicode.h"

#include <stdlib.h>
#include <string.h>

#include "tsr_unicode_tables.h"

#define TSR__N(a) (sizeof(a) / sizeof((a)[0]))

const uint8_t tsr__uc_ascii[128] = {
#define O TSR_UC_OTHER
#define W (TSR_UC_OTHER | TSR_UC_SPACE)
#define L TSR_UC_L
#define N TSR_UC_N
#define P TSR_UC_P
#define S TSR_UC_S
    O, O, O, O, O, O, O, O, O, W, W, W, W, W, O, O, /* 0x00 */
    O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, /* 0x10 */
    W, P, P, P, S, P, P, P, P, P, P, S, P, P, P, P, /* ' ' ! " # $ % & ' ( ) * + , - . / */
    N, N, N, N, N, N, N, N, N, N, P, P, S, S, S, P, /* 0-9 : ; < = > ? */
    P, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* @ A-O */
    L, L, L, L, L, L, L, L, L, L, L, P, P, P, S, P, /* P-Z [ \ ] ^ _ */
    S, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* ` a-o */
    L, L, L, L, L, L, L, L, L, L, L, P, S, P, S, O, /* p-z { | } ~ DEL */
#undef O
#undef W
#undef L
#undef N
#undef P
#undef S
};

uint8_t tsr__uc_props_slow(uint32_t cp) {
    if (cp >= 0x110000) return TSR_UC_OTHER;
    return tsr__uc_stage2[tsr__uc_stage1[cp >> 8]][cp & 0xFF];
}

const char *tsr_unicode_version(void) { return TSR_UNICODE_VERSION; }

int tsr_utf8_put(uint32_t cp, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | (cp >> 6)); o[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12)); o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18)); o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Whether b[0..k) is a proper prefix of some valid UTF-8 sequence (WHATWG/Rust rules: the
 * second byte's range depends on the lead byte). */
static bool tsr__utf8_valid_prefix(const uint8_t *b, int k) {
    uint8_t c = b[0];
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return false;
    if (k >= need) return false;
    for (int i = 1; i < k; i++) {
        if (i == 1 ? (b[i] < lo || b[i] > hi) : (b[i] & 0xC0) != 0x80) return false;
    }
    return true;
}

int tsr_utf8_incomplete_tail(const uint8_t *s, size_t n) {
    for (int k = 1; k <= 3 && (size_t)k <= n; k++) {
        const uint8_t *b = s + n - k;
        if ((b[0] & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        return tsr__utf8_valid_prefix(b, k) ? k : 0;
    }
    return 0;
}

/* ---- NFC ---- */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21,
       TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static uint8_t tsr__ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = TSR__N(tsr__uc_ccc);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tsr__uc_ccc[mid][0] < cp) lo = mid + 1;
        else hi = mid;
    }
    return (lo < TSR__N(tsr__uc_ccc) && tsr__uc_ccc[lo][0] == cp) ? (uint8_t)tsr__uc_ccc[lo][1] : 0;
}

/* Full canonical decomposition of cp into out (room for 32); returns the count. */
static int tsr__decompose(uint32_t cp, uint32_t *out) {
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        out[0] = LBASE + s / NCOUNT;
        out[1] = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT) { out[2] = TBASE + s % TCOUNT; return 3; }
        return 2;
    }
    size_t lo = 0, hi = TSR__N(tsr__uc_decomp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tsr__uc_decomp[mid][0] < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < TSR__N(tsr__uc_decomp) && tsr__uc_decomp[lo][0] == cp) {
        uint32_t off = tsr__uc_decomp[lo][1], len = tsr__uc_decomp[lo][2];
        if (len > 32) len = 32;
        memcpy(out, tsr__uc_decomp_pool + off, len * sizeof(uint32_t));
        return (int)len;
    }
    out[0] = cp;
    return 1;
}

static uint32_t tsr__compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = TSR__N(tsr__uc_comp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tsr__uc_comp[mid][0] < a || (tsr__uc_comp[mid][0] == a && tsr__uc_comp[mid][1] < b)) lo = mid + 1;
        else hi = mid;
    }
    if (lo < TSR__N(tsr__uc_comp) && tsr__uc_comp[lo][0] == a && tsr__uc_comp[lo][1] == b) return tsr__uc_comp[lo][2];
    return 0;
}

char *tsr_uc_nfc(const char *s, size_t n, size_t *out_n) {
    const uint8_t *u = (const uint8_t *)s;
    bool need = false;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) { i++; continue; }
        int len;
        uint32_t cp = tsr_utf8_next(u + i, n - i, &len);
        if (tsr_uc_props(cp) & TSR_UC_NFC) { need = true; break; }
        i += (size_t)len;
    }
    if (!need) return NULL;

    /* Decompose everything (code points; invalid bytes pass through as themselves, tagged with
     * bit 31 so they are written back verbatim), reorder marks, then compose. */
    size_t cap = n * 4 + 32, m = 0;
    uint32_t *cps = malloc(cap * sizeof(uint32_t));
    char *out = malloc(n * 3 + 16);
    if (!cps || !out) { free(cps); free(out); *out_n = SIZE_MAX; return NULL; }
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t cp = tsr_utf8_next(u + i, n - i, &len);
        if (cp == 0xFFFD && !(len == 3 && u[i] == 0xEF)) {
            cps[m++] = 0x80000000u | u[i];
            i += 1;
            continue;
        }
        i += (size_t)len;
        uint32_t d[32];
        int k = tsr__decompose(cp, d);
        if (m + (size_t)k > cap) {
            cap = cap * 2 + (size_t)k;
            uint32_t *nc = realloc(cps, cap * sizeof(uint32_t));
            if (!nc) { free(cps); free(out); *out_n = SIZE_MAX; return NULL; }
            cps = nc;
        }
        for (int j = 0; j < k; j++) {
            /* canonical ordering: bubble a mark left past marks of a higher class */
            uint32_t c = d[j];
            uint8_t cc = tsr__ccc(c);
            size_t p = m++;
            cps[p] = c;
            if (cc) {
                while (p > 0 && !(cps[p - 1] & 0x80000000u) && tsr__ccc(cps[p - 1]) > cc) {
                    cps[p] = cps[p - 1];
                    cps[p - 1] = c;
                    p--;
                }
            }
        }
    }
    /* compose in place */
    size_t w = 0;
    long starter = -1;
    int last_cc = -1; /* ccc of the last char kept after the starter; -1: none yet */
    for (size_t i = 0; i < m; i++) {
        uint32_t c = cps[i];
        if (c & 0x80000000u) { cps[w++] = c; starter = -1; last_cc = -1; continue; }
        int cc = tsr__ccc(c);
        if (starter >= 0) {
            bool adjacent = last_cc == -1;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                uint32_t comp = tsr__compose(cps[starter], c);
                if (comp) { cps[starter] = comp; continue; }
            }
        }
        if (cc == 0) { starter = (long)w; last_cc = -1; }
        else last_cc = cc;
        cps[w++] = c;
    }
    size_t o = 0;
    for (size_t i = 0; i < w; i++) {
        if (cps[i] & 0x80000000u) out[o++] = (char)(cps[i] & 0xFF);
        else o += (size_t)tsr_utf8_put(cps[i], out + o);
    }
    out[o] = 0;
    free(cps);
    *out_n = o;
    return out;
}
