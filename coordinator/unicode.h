/* Unicode for the tokenizer: UTF-8 decoding, the character classes its pre-tokenizer patterns
 * ask about (\p{L}, \p{N}, \p{M}, \p{P}, \p{S}, \s) and NFC normalization.  The tables are
 * generated at build time from python3's unicodedata (coordinator/gen_unicode.py); the Unicode
 * version is tsr_unicode_version().  HF tokenizers' regex engine may know a newer version: only
 * characters assigned after ours can differ (they count as "other" here). */
#ifndef TSR_UNICODE_H
#define TSR_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The class of a code point, in the low 3 bits of tsr_uc_props(). */
enum { TSR_UC_OTHER = 0, TSR_UC_L = 1, TSR_UC_N = 2, TSR_UC_M = 3, TSR_UC_P = 4, TSR_UC_S = 5 };
#define TSR_UC_CLASS 0x07
#define TSR_UC_SPACE 0x08 /* White_Space: what \s matches */
#define TSR_UC_NFC 0x10   /* may change under NFC (or compose with what precedes it) */

extern const uint8_t tsr__uc_ascii[128];
uint8_t tsr__uc_props_slow(uint32_t cp);

static inline uint8_t tsr_uc_props(uint32_t cp) {
    return cp < 128 ? tsr__uc_ascii[cp] : tsr__uc_props_slow(cp);
}

/* Decodes one code point from s[0..n) (n >= 1).  An invalid or truncated sequence decodes as
 * one byte with code point 0xFFFD, so every byte of any input is consumed exactly once. */
static inline uint32_t tsr_utf8_next(const uint8_t *s, size_t n, int *len) {
    uint8_t c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c >= 0xC2 && c <= 0xDF && n >= 2 && (s[1] & 0xC0) == 0x80) {
        *len = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c >= 0xE0 && c <= 0xEF && n >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) { *len = 3; return cp; }
    }
    if (c >= 0xF0 && c <= 0xF4 && n >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 &&
        (s[3] & 0xC0) == 0x80) {
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (cp >= 0x10000 && cp <= 0x10FFFF) { *len = 4; return cp; }
    }
    *len = 1;
    return 0xFFFD;
}

/* Writes cp as UTF-8 to out (room for 4 bytes); returns the byte count. */
int tsr_utf8_put(uint32_t cp, char *out);

/* Length of the longest prefix of s[0..n) that could still grow into valid UTF-8 at its end:
 * returns how many trailing bytes form an incomplete (but so far valid) sequence, 0 if none. */
int tsr_utf8_incomplete_tail(const uint8_t *s, size_t n);

/* NFC.  Returns NULL when s[0..n) is already in NFC by the fast check (the common case);
 * otherwise a malloc'd normalized copy with its length in *out_n (NULL on OOM sets *out_n to
 * SIZE_MAX). */
char *tsr_uc_nfc(const char *s, size_t n, size_t *out_n);

const char *tsr_unicode_version(void);

#endif
