/* Stop strings and ids: crafted cases (a stop string split across many pieces, partial
 * matches that fail, overlapping prefixes, UTF-8) and a randomised check against a brute-force
 * reference that re-searches the whole text after every piece, including the hold-back rule
 * (text is held exactly while its tail could begin a stop string). */
#include <stdlib.h>
#include <string.h>

#include "coordinator/stop.h"
#include "tests/test_util.h"

typedef struct {
    char text[4096];   /* released so far */
    size_t n;
    bool stopped;
} sink;

static void feed(tsr_stop *s, sink *k, const char *piece, size_t len) {
    const char *e;
    size_t n;
    bool st = tsr_stop_push(s, piece, len, &e, &n);
    CHECK(strlen(e) == n);
    memcpy(k->text + k->n, e, n);
    k->n += n;
    k->text[k->n] = 0;
    if (st) k->stopped = true;
}

static void finish(tsr_stop *s, sink *k) {
    const char *e;
    size_t n;
    tsr_stop_flush(s, &e, &n);
    memcpy(k->text + k->n, e, n);
    k->n += n;
    k->text[k->n] = 0;
}

/* Feeds a NULL-terminated list of pieces; returns the released text. */
static sink run(const char *const *stops, int n_stops, const char *const *pieces) {
    tsr_stop s;
    CHECK(tsr_stop_init(&s, NULL, 0, false, NULL, 0, stops, n_stops) == TSR_OK);
    sink k = {{0}, 0, false};
    for (int i = 0; pieces[i] && !k.stopped; i++) feed(&s, &k, pieces[i], strlen(pieces[i]));
    if (!k.stopped) finish(&s, &k);
    tsr_stop_free(&s);
    return k;
}

static void test_crafted(void) {
    const char *im_end[] = {"<|im_end|>"};
    {   /* split across many pieces */
        const char *p[] = {"Hello", " world", "<", "|", "im", "_", "end", "|", ">", " after", NULL};
        sink k = run(im_end, 1, p);
        CHECK(k.stopped);
        CHECK(!strcmp(k.text, "Hello world"));
    }
    {   /* a partial match that fails is released in full, nothing lost */
        const char *p[] = {"a <|im", "_sta", "rt|> b", NULL};
        sink k = run(im_end, 1, p);
        CHECK(!k.stopped);
        CHECK(!strcmp(k.text, "a <|im_start|> b"));
    }
    {   /* the stop string inside one piece, with text after it */
        const char *p[] = {"x", "yy<|im_end|>zz", NULL};
        sink k = run(im_end, 1, p);
        CHECK(k.stopped && !strcmp(k.text, "xyy"));
    }
    {   /* stop string at the very start */
        const char *p[] = {"<|im_end|>", NULL};
        sink k = run(im_end, 1, p);
        CHECK(k.stopped && k.n == 0);
    }
    {   /* overlapping prefixes: "aab" in "aaab" needs the restart at the second 'a' */
        const char *st[] = {"aab"};
        const char *p[] = {"a", "a", "a", "b", "c", NULL};
        sink k = run(st, 1, p);
        CHECK(k.stopped && !strcmp(k.text, "a"));
    }
    {   /* two stop strings: the one that completes first wins, even if another started earlier */
        const char *st[] = {"abcd", "bc"};
        const char *p[] = {"xa", "b", "c", "d", NULL};
        sink k = run(st, 2, p);
        CHECK(k.stopped && !strcmp(k.text, "xa"));
    }
    {   /* both complete in the same piece: the earlier start wins */
        const char *st[] = {"cd", "abcd"};
        const char *p[] = {"x", "abcdef", NULL};
        sink k = run(st, 2, p);
        CHECK(k.stopped && !strcmp(k.text, "x"));
    }
    {   /* UTF-8: multi-byte stop string split at character boundaries of the pieces */
        const char *st[] = {"ödé"};
        const char *p[] = {"caf", "é ", "ö", "d", "x ", "ö", "dé", " no", NULL};
        sink k = run(st, 1, p);
        CHECK(k.stopped && !strcmp(k.text, "café ödx "));
    }
    {   /* no stop strings: everything passes straight through */
        const char *p[] = {"<|im", "_end|>", NULL};
        sink k = run(NULL, 0, p);
        CHECK(!k.stopped && !strcmp(k.text, "<|im_end|>"));
    }
    {   /* the hold-back is exactly the possible prefix */
        tsr_stop s;
        CHECK(tsr_stop_init(&s, NULL, 0, false, NULL, 0, im_end, 1) == TSR_OK);
        sink k = {{0}, 0, false};
        feed(&s, &k, "ab<|i", 5);
        CHECK(!strcmp(k.text, "ab"));
        feed(&s, &k, "n", 1);   /* "<|in" cannot start "<|im_end|>" any more */
        CHECK(!strcmp(k.text, "ab<|in"));
        feed(&s, &k, "<", 1);
        CHECK(!strcmp(k.text, "ab<|in"));
        finish(&s, &k);
        CHECK(!strcmp(k.text, "ab<|in<"));
        /* reset: same strings, fresh text */
        tsr_stop_reset(&s);
        k.n = 0;
        feed(&s, &k, "q<|im_end|>", 11);
        CHECK(k.stopped && !strcmp(k.text, "q"));
        CHECK(s.matched == 0);
        tsr_stop_free(&s);
    }
}

static void test_ids_and_errors(void) {
    int32_t eos[] = {2, 7};
    int32_t user[] = {42};
    tsr_stop s;
    CHECK(tsr_stop_init(&s, eos, 2, false, user, 1, NULL, 0) == TSR_OK);
    CHECK(tsr_stop_is_stop_id(&s, 2) && tsr_stop_is_stop_id(&s, 7) && tsr_stop_is_stop_id(&s, 42));
    CHECK(!tsr_stop_is_stop_id(&s, 3));
    tsr_stop_free(&s);
    CHECK(tsr_stop_init(&s, eos, 2, true, user, 1, NULL, 0) == TSR_OK);   /* ignore_eos */
    CHECK(!tsr_stop_is_stop_id(&s, 2) && !tsr_stop_is_stop_id(&s, 7) && tsr_stop_is_stop_id(&s, 42));
    tsr_stop_free(&s);
    const char *bad[] = {"ok", ""};
    CHECK(tsr_stop_init(&s, NULL, 0, false, NULL, 0, bad, 2) == TSR_ERR_INVALID_ARG);
    CHECK(strstr(tsr_last_error(), "empty") != NULL);
    tsr_stop_free(&s);
    int32_t neg[] = {-3};
    CHECK(tsr_stop_init(&s, NULL, 0, false, neg, 1, NULL, 0) == TSR_ERR_INVALID_ARG);
    tsr_stop_free(&s);
    CHECK(!strcmp(tsr_finish_reason_str(TSR_FINISH_LENGTH), "length"));
}

/* Brute force: the longest suffix of t that is a proper prefix of a stop string. */
static size_t ref_partial(const char *const *st, int n_st, const char *t, size_t n) {
    size_t best = 0;
    for (int k = 0; k < n_st; k++) {
        size_t L = strlen(st[k]);
        for (size_t m = 1; m < L && m <= n; m++)
            if (!strncmp(t + n - m, st[k], m) && m > best) best = m;
    }
    return best;
}

static void test_random_vs_reference(void) {
    /* A small alphabet makes near-misses and overlaps common. */
    const char alpha[] = "abc";
    srand(11);
    int stops_seen = 0;
    for (int trial = 0; trial < 3000; trial++) {
        char stbuf[3][8];
        const char *st[3];
        int n_st = 1 + rand() % 3;
        for (int k = 0; k < n_st; k++) {
            int L = 1 + rand() % 5;
            for (int i = 0; i < L; i++) stbuf[k][i] = alpha[rand() % 3];
            stbuf[k][L] = 0;
            st[k] = stbuf[k];
        }
        char text[80];
        int n_text = rand() % 60;
        for (int i = 0; i < n_text; i++) text[i] = alpha[rand() % 3];
        text[n_text] = 0;

        tsr_stop s;
        CHECK(tsr_stop_init(&s, NULL, 0, false, NULL, 0, st, n_st) == TSR_OK);
        sink k = {{0}, 0, false};
        char all[80];
        size_t n_all = 0;
        size_t expect_len = (size_t)-1;
        int pos = 0;
        while (pos < n_text && !k.stopped) {
            int len = 1 + rand() % 6;
            if (pos + len > n_text) len = n_text - pos;
            memcpy(all + n_all, text + pos, (size_t)len);
            n_all += (size_t)len;
            all[n_all] = 0;
            pos += len;
            /* reference: the earliest occurrence in the whole text so far */
            size_t first = (size_t)-1;
            for (int j = 0; j < n_st; j++) {
                const char *f = strstr(all, st[j]);
                if (f && (size_t)(f - all) < first) first = (size_t)(f - all);
            }
            feed(&s, &k, text + pos - len, (size_t)len);
            if (first != (size_t)-1) {
                expect_len = first;
                CHECK_MSG(k.stopped, "trial %d: a stop string is in '%s' but no stop", trial, all);
                break;
            }
            CHECK_MSG(!k.stopped, "trial %d: stopped without a stop string in '%s'", trial, all);
            /* released + held == all, and held == the longest possible stop-string start */
            size_t held = ref_partial(st, n_st, all, n_all);
            CHECK_MSG(k.n == n_all - held && !memcmp(k.text, all, k.n),
                      "trial %d: released %zu of '%s', expected %zu", trial, k.n, all, n_all - held);
        }
        if (k.stopped) {
            stops_seen++;
            CHECK_MSG(k.n == expect_len && !memcmp(k.text, all, k.n), "trial %d: released '%s' of '%s', expected %zu bytes",
                      trial, k.text, all, expect_len);
        } else {
            finish(&s, &k);
            CHECK(k.n == (size_t)n_text && !memcmp(k.text, text, k.n));
        }
        tsr_stop_free(&s);
    }
    CHECK(stops_seen > 300 && stops_seen < 2900);   /* the test exercised both outcomes */
}

/* Every released piece is whole UTF-8 when the pieces and stop strings are. */
static bool valid_utf8(const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        size_t L = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!L || i + L > n) return false;
        for (size_t j = 1; j < L; j++)
            if (((unsigned char)p[i + j] >> 6) != 2) return false;
        i += L;
    }
    return true;
}

static void test_utf8_random(void) {
    const char *chars[] = {"a", "é", "ö", "—", "€", "😀", "d", "<"};
    const char *st[] = {"é€", "😀😀", "ö—d"};
    srand(5);
    for (int trial = 0; trial < 500; trial++) {
        tsr_stop s;
        CHECK(tsr_stop_init(&s, NULL, 0, false, NULL, 0, st, 3) == TSR_OK);
        for (int piece = 0; piece < 30; piece++) {
            char buf[32];
            size_t n = 0;
            int nc = 1 + rand() % 3;
            for (int c = 0; c < nc; c++) {
                const char *ch = chars[rand() % 8];
                memcpy(buf + n, ch, strlen(ch));
                n += strlen(ch);
            }
            const char *e;
            size_t en;
            bool stopped = tsr_stop_push(&s, buf, n, &e, &en);
            CHECK(valid_utf8(e, en));
            if (stopped) break;
        }
        const char *e;
        size_t en;
        tsr_stop_flush(&s, &e, &en);
        CHECK(valid_utf8(e, en));
        tsr_stop_free(&s);
    }
}

int main(void) {
    test_crafted();
    test_ids_and_errors();
    test_random_vs_reference();
    test_utf8_random();
    return tsr_test_finish();
}
