/* Pre-tokenizers: the steps that cut normalized text into words for BPE (Split on a pattern,
 * ByteLevel, Digits, Metaspace), run in order, each handing its pieces to the next and the last
 * to BPE.  No general regex engine: the split patterns models use are recognised by their exact
 * text and matched by hand-written functions that follow the regex's alternation order and
 * backtracking (an unknown pattern is TSR_ERR_UNSUPPORTED at load). */
#include "coordinator/tokenizer/word_cache.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *text;
    tsr__pat pat;
} tsr__patterns[] = {
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", TSR__PAT_GPT2},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_LLAMA3},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_QWEN2},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_QWEN35},
    {"\\p{N}{1,3}", TSR__PAT_DIGITS3},
    {"[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+", TSR__PAT_CJK},
    {"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
     "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+", TSR__PAT_DSV3},
};

bool tsr__pattern_find(const char *regex, tsr__pat *pat) {
    size_t k = 0, np = sizeof tsr__patterns / sizeof tsr__patterns[0];
    while (k < np && strcmp(tsr__patterns[k].text, regex)) k++;
    if (k == np) return false;
    *pat = tsr__patterns[k].pat;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* pattern matchers: the length of the regex match starting exactly at s[i], 0 when none      */

static inline uint8_t tsr__cls_at(const uint8_t *s, size_t n, size_t i, int *len) {
    if (s[i] < 0x80) { *len = 1; return tsr__uc_ascii[s[i]]; }
    uint32_t cp = tsr_utf8_next(s + i, n - i, len);
    return tsr_uc_props(cp);
}

static size_t tsr__run_letters(const uint8_t *s, size_t n, size_t i, bool with_marks) {
    while (i < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if (!(TSR__IS(p, TSR_UC_L) || (with_marks && TSR__IS(p, TSR_UC_M)))) break;
        i += (size_t)len;
    }
    return i;
}

static size_t tsr__run_class(const uint8_t *s, size_t n, size_t i, int cls, size_t max_chars) {
    size_t k = 0;
    while (i < n && k < max_chars) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if (!TSR__IS(p, cls)) break;
        i += (size_t)len;
        k++;
    }
    return i;
}

/* [^\s\p{L}\p{N}]+ (with_marks: also not \p{M}) */
static size_t tsr__run_other(const uint8_t *s, size_t n, size_t i, bool with_marks) {
    while (i < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, i, &len);
        if ((p & TSR_UC_SPACE) || TSR__IS(p, TSR_UC_L) || TSR__IS(p, TSR_UC_N) ||
            (with_marks && TSR__IS(p, TSR_UC_M)))
            break;
        i += (size_t)len;
    }
    return i;
}

/* The whitespace alternatives every pattern ends with:
 *   [\s*[\r\n]+ if newline_alt] | \s+(?!\S) | \s+        (returns 0 if s[i] is not \s) */
static size_t tsr__match_space(const uint8_t *s, size_t n, size_t i, bool newline_alt) {
    size_t k = i, last_start = i, last_nl = SIZE_MAX;
    while (k < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, k, &len);
        if (!(p & TSR_UC_SPACE)) break;
        if (s[k] == '\r' || s[k] == '\n') last_nl = k;
        last_start = k;
        k += (size_t)len;
    }
    if (k == i) return 0;
    if (newline_alt && last_nl != SIZE_MAX) return last_nl + 1 - i;
    if (k == n) return k - i;              /* \s+(?!\S) at the end */
    if (last_start > i) return last_start - i; /* back off one char so (?!\S) holds */
    return k - i;                          /* \s+ */
}

static size_t tsr__contraction(const uint8_t *s, size_t n, size_t i, bool icase) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (icase) {
        if (a >= 'A' && a <= 'Z') a = (uint8_t)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (uint8_t)(b + 32);
        /* U+017F LATIN SMALL LETTER LONG S folds to 's'; U+212A KELVIN SIGN to 'k' (unused) */
        if (a == 0xC5 && b == 0xBF) return 3;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static size_t tsr__match_gpt2(const uint8_t *s, size_t n, size_t i) {
    size_t m = tsr__contraction(s, n, i, false);
    if (m) return m;
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, j, &len);
        if (TSR__IS(p, TSR_UC_L)) return tsr__run_letters(s, n, j, false) - i;
        if (TSR__IS(p, TSR_UC_N)) return tsr__run_class(s, n, j, TSR_UC_N, SIZE_MAX) - i;
        if (!(p & TSR_UC_SPACE)) return tsr__run_other(s, n, j, false) - i;
    }
    return tsr__match_space(s, n, i, false);
}

/* Llama-3 (max_digits 3), Qwen2 (1), Qwen3.5 (1, letters include marks). */
static size_t tsr__match_llama3(const uint8_t *s, size_t n, size_t i, size_t max_digits, bool lm) {
    size_t m = tsr__contraction(s, n, i, true);
    if (m) return m;
    int len0;
    uint8_t p0 = tsr__cls_at(s, n, i, &len0);
    bool letter0 = TSR__IS(p0, TSR_UC_L) || (lm && TSR__IS(p0, TSR_UC_M));
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!TSR__IS(p0, TSR_UC_L) && !TSR__IS(p0, TSR_UC_N) && s[i] != '\r' && s[i] != '\n') {
        size_t j = i + (size_t)len0;
        if (j < n) {
            int len1;
            uint8_t p1 = tsr__cls_at(s, n, j, &len1);
            if (TSR__IS(p1, TSR_UC_L) || (lm && TSR__IS(p1, TSR_UC_M))) return tsr__run_letters(s, n, j, lm) - i;
        }
    }
    if (letter0) return tsr__run_letters(s, n, i, lm) - i;
    if (TSR__IS(p0, TSR_UC_N)) return tsr__run_class(s, n, i, TSR_UC_N, max_digits) - i;
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        int len;
        uint8_t p = tsr__cls_at(s, n, j, &len);
        if (!(p & TSR_UC_SPACE) && !TSR__IS(p, TSR_UC_L) && !TSR__IS(p, TSR_UC_N) && !(lm && TSR__IS(p, TSR_UC_M))) {
            size_t k = tsr__run_other(s, n, j, lm);
            while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
            return k - i;
        }
    }
    return tsr__match_space(s, n, i, true);
}

static bool tsr__is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x309F) || (cp >= 0x30A0 && cp <= 0x30FF);
}

static bool tsr__ascii_punct(uint8_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

static bool tsr__ascii_alpha(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static size_t tsr__match_dsv3(const uint8_t *s, size_t n, size_t i) {
    /* [!"#...~][A-Za-z]+ */
    if (tsr__ascii_punct(s[i]) && i + 1 < n && tsr__ascii_alpha(s[i + 1])) {
        size_t k = i + 1;
        while (k < n && tsr__ascii_alpha(s[k])) k++;
        return k - i;
    }
    int len0;
    uint8_t p0 = tsr__cls_at(s, n, i, &len0);
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    if (!TSR__IS(p0, TSR_UC_L) && !TSR__IS(p0, TSR_UC_P) && !TSR__IS(p0, TSR_UC_S) && s[i] != '\r' && s[i] != '\n') {
        size_t j = i + (size_t)len0;
        if (j < n) {
            int len1;
            uint8_t p1 = tsr__cls_at(s, n, j, &len1);
            if (TSR__IS(p1, TSR_UC_L) || TSR__IS(p1, TSR_UC_M)) return tsr__run_letters(s, n, j, true) - i;
        }
    }
    if (TSR__IS(p0, TSR_UC_L) || TSR__IS(p0, TSR_UC_M)) return tsr__run_letters(s, n, i, true) - i;
    /* ` ?[\p{P}\p{S}]+[\r\n]*` */
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        size_t k = j;
        while (k < n) {
            int len;
            uint8_t p = tsr__cls_at(s, n, k, &len);
            if (!TSR__IS(p, TSR_UC_P) && !TSR__IS(p, TSR_UC_S)) break;
            k += (size_t)len;
        }
        if (k > j) {
            while (k < n && (s[k] == '\r' || s[k] == '\n')) k++;
            return k - i;
        }
    }
    return tsr__match_space(s, n, i, true);
}

static size_t tsr__match(tsr__pat pat, const uint8_t *s, size_t n, size_t i) {
    switch (pat) {
    case TSR__PAT_GPT2: return tsr__match_gpt2(s, n, i);
    case TSR__PAT_LLAMA3: return tsr__match_llama3(s, n, i, 3, false);
    case TSR__PAT_QWEN2: return tsr__match_llama3(s, n, i, 1, false);
    case TSR__PAT_QWEN35: return tsr__match_llama3(s, n, i, 1, true);
    case TSR__PAT_DIGITS3: {
        int len;
        if (!TSR__IS(tsr__cls_at(s, n, i, &len), TSR_UC_N)) return 0;
        return tsr__run_class(s, n, i, TSR_UC_N, 3) - i;
    }
    case TSR__PAT_CJK: {
        size_t k = i;
        while (k < n) {
            int len;
            uint32_t cp = tsr_utf8_next(s + k, n - k, &len);
            if (!tsr__is_cjk(cp)) break;
            k += (size_t)len;
        }
        return k - i;
    }
    case TSR__PAT_DSV3: return tsr__match_dsv3(s, n, i);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* running the steps                                                                          */

/* Hands s[a, b) to the next step. */
static inline void tsr__next(tsr__enc *e, int step, const uint8_t *s, size_t a, size_t b, bool at_start) {
    if (b > a) tsr__pretok(e, step + 1, s + a, b - a, at_start && a == 0);
}

static void tsr__split_pattern(tsr__enc *e, int step, tsr__pat pat, const uint8_t *s, size_t n, bool at_start) {
    size_t pos = 0;
    while (pos < n) {
        size_t p = pos, m = 0;
        while (p < n && !(m = tsr__match(pat, s, n, p))) {
            int len;
            tsr_utf8_next(s + p, n - p, &len);
            p += (size_t)len;
        }
        tsr__next(e, step, s, pos, p, at_start);
        if (p >= n) break;
        tsr__next(e, step, s, p, p + m, at_start);
        pos = p + m;
    }
}

void tsr__pretok(tsr__enc *e, int step, const uint8_t *s, size_t n, bool at_start) {
    const tsr_tokenizer *t = e->t;
    if (e->oom || !n) return;
    if (step >= t->n_pre) {
        tsr__encode_word(e, s, n);
        return;
    }
    const tsr__pre *pre = &t->pre[step];
    switch (pre->kind) {
    case TSR__PRE_SPLIT:
        tsr__split_pattern(e, step, pre->pat, s, n, at_start);
        return;
    case TSR__PRE_BYTELEVEL: {
        uint8_t *tmp = NULL;
        if (pre->add_prefix_space && s[0] != ' ') {
            tmp = malloc(n + 1);
            if (!tmp) { e->oom = true; return; }
            tmp[0] = ' ';
            memcpy(tmp + 1, s, n);
            s = tmp;
            n++;
        }
        if (pre->use_regex) tsr__split_pattern(e, step, TSR__PAT_GPT2, s, n, at_start);
        else tsr__pretok(e, step + 1, s, n, at_start);
        free(tmp);
        return;
    }
    case TSR__PRE_DIGITS: {
        size_t pos = 0, i = 0;
        while (i < n) {
            int len;
            uint8_t p = tsr__cls_at(s, n, i, &len);
            if (!TSR__IS(p, TSR_UC_N)) { i += (size_t)len; continue; }
            size_t end = pre->individual ? i + (size_t)len : tsr__run_class(s, n, i, TSR_UC_N, SIZE_MAX);
            tsr__next(e, step, s, pos, i, at_start);
            tsr__next(e, step, s, i, end, at_start);
            pos = i = end;
        }
        tsr__next(e, step, s, pos, n, at_start);
        return;
    }
    case TSR__PRE_METASPACE: {
        size_t rl = strlen(pre->repl), spaces = 0;
        for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
        bool prepend = (pre->prepend == TSR__PREPEND_ALWAYS || (pre->prepend == TSR__PREPEND_FIRST && at_start));
        uint8_t *buf = malloc(n + (spaces + 1) * rl + 1);
        if (!buf) { e->oom = true; return; }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') { memcpy(buf + o, pre->repl, rl); o += rl; }
            else buf[o++] = s[i];
        }
        if (prepend && !(o >= rl && !memcmp(buf, pre->repl, rl))) {
            memmove(buf + rl, buf, o);
            memcpy(buf, pre->repl, rl);
            o += rl;
        }
        if (!pre->split) {
            tsr__pretok(e, step + 1, buf, o, at_start);
        } else {
            /* MergedWithNext on the replacement: each piece starts at a replacement */
            size_t start = 0;
            for (size_t i = 0; i + rl <= o; i++) {
                if (i > start && !memcmp(buf + i, pre->repl, rl)) {
                    tsr__next(e, step, buf, start, i, at_start);
                    start = i;
                }
            }
            tsr__next(e, step, buf, start, o, at_start);
        }
        free(buf);
        return;
    }
    }
}
