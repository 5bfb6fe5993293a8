/* Tokenizer unit tests (also run under ASan + UBSan): small tokenizer.json files written here
 * whose ids follow by hand from BPE's rules, the Unicode helpers (NFC, UTF-8 tails), the
 * streaming decoder's guarantees on random ids, and clear errors for missing, corrupt and
 * unsupported files.  Parity with HF on real vocabularies is tests/tokenizer (pytest). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "coordinator/tokenizer.h"
#include "coordinator/unicode.h"
#include "tests/test_util.h"

static char *tmpdir;

static char *write_json(const char *name, const char *text) {
    char *p = tsr_path_join(tmpdir, name);
    TSR_ASSERT(tsr_write_file(p, text, strlen(text)) == TSR_OK);
    return p;
}

static int64_t encode(const tsr_tokenizer *t, const char *s, bool add_special, int32_t *out, int cap) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (tsr_tokenizer_encode(t, s, strlen(s), add_special, true, &ids, &n) != TSR_OK) return -1;
    for (int64_t i = 0; i < n && i < cap; i++) out[i] = ids[i];
    free(ids);
    return n;
}

static bool ids_eq(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    return na == nb && !memcmp(a, b, sizeof(int32_t) * (size_t)na);
}

static char *decode(const tsr_tokenizer *t, const int32_t *ids, int64_t n, bool skip) {
    char *s = NULL;
    size_t len;
    if (tsr_tokenizer_decode(t, ids, n, skip, &s, &len) != TSR_OK) return NULL;
    return s;
}

/* Byte-level BPE over "a", "b", "c", "Ġ" with merges a+b, ab+c, Ġ+ab; GPT-2 split. */
static const char *BYTE_LEVEL_JSON =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"<|end|>\",\"special\":true,\"normalized\":false,"
    "\"lstrip\":false,\"rstrip\":false,\"single_word\":false},"
    "{\"id\":8,\"content\":\"<sp>\",\"special\":true,\"normalized\":false,\"lstrip\":true,\"rstrip\":true}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|end|>\","
    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<|end|>\":{\"id\":"
    "\"<|end|>\",\"ids\":[7],\"tokens\":[\"<|end|>\"]}}},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"\\u0120\":3,\"ab\":4,\"abc\":5,\"\\u0120ab\":6},"
    "\"merges\":[\"a b\",\"ab c\",\"\\u0120 ab\"]}}";

static void test_byte_level(void) {
    char *p = write_json("bl.json", BYTE_LEVEL_JSON);
    tsr_tokenizer *t = NULL;
    CHECK_MSG(tsr_tokenizer_load_hf(p, &t) == TSR_OK, "%s", tsr_last_error());
    if (!t) { free(p); return; }
    int32_t ids[64];
    int64_t n;
    /* "abc ab": words "abc", " ab" -> [abc] [Ġab] */
    n = encode(t, "abc ab", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){5, 6}, 2));
    /* merges are applied by rank: "abab" -> ab ab (rank 0 both, left first) */
    n = encode(t, "abab", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){4, 4}, 2));
    /* the template adds <|end|> in front; a special string in the text is matched whole */
    n = encode(t, "ab<|end|>c", true, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){7, 4, 7, 2}, 4));
    /* lstrip/rstrip: the spaces around <sp> belong to it */
    n = encode(t, "ab  <sp>  c", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){4, 8, 2}, 3));
    /* "  ab": \s+(?!\S) leaves one space for " ab" */
    n = encode(t, "  ab", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){3, 6}, 2));
    /* bytes outside the vocabulary (no unk token) are dropped, as HF does */
    n = encode(t, "abd", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){4}, 1));
    CHECK(tsr_tokenizer_vocab_size(t) == 9);
    CHECK(tsr_tokenizer_token_to_id(t, "\xc4\xa0" "ab") == 6);
    CHECK(tsr_tokenizer_is_special(t, 7) && !tsr_tokenizer_is_special(t, 4));
    char *s = decode(t, (int32_t[]){7, 5, 6, 8}, 4, false);
    CHECK(s && !strcmp(s, "<|end|>abc ab<sp>"));
    free(s);
    s = decode(t, (int32_t[]){7, 5, 6, 8}, 4, true);
    CHECK(s && !strcmp(s, "abc ab"));
    free(s);
    /* an id outside the vocabulary is an error, not a crash */
    char *out = NULL;
    size_t len;
    CHECK(tsr_tokenizer_decode(t, (int32_t[]){99}, 1, false, &out, &len) == TSR_ERR_INVALID_ARG);
    tsr_tokenizer_free(t);
    free(p);
}

/* SentencePiece-style BPE with byte fallback (Metaspace, first). */
static const char *SPM_JSON =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":false},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"fuse_unk\":true,\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,\"<s>\":1,"
    "\"<0xE4>\":2,\"<0xBD>\":3,\"<0xA0>\":4,\"\\u2581\":5,\"h\":6,\"i\":7,\"\\u2581h\":8,\"\\u2581hi\":9},"
    "\"merges\":[\"\\u2581 h\",\"\\u2581h i\"]}}";

static void test_sentencepiece(void) {
    char *p = write_json("spm.json", SPM_JSON);
    tsr_tokenizer *t = NULL;
    CHECK_MSG(tsr_tokenizer_load_hf(p, &t) == TSR_OK, "%s", tsr_last_error());
    if (!t) { free(p); return; }
    int32_t ids[64];
    int64_t n = encode(t, "hi hi", true, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){1, 9, 9}, 3));
    /* "你" (E4 BD A0) is not in the vocabulary: its bytes */
    n = encode(t, "hi\xe4\xbd\xa0", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){9, 2, 3, 4}, 4));
    /* after a special token the first-only prefix is not added */
    n = encode(t, "<s>hi", false, ids, 64);
    CHECK(ids_eq(ids, n, (int32_t[]){1, 6, 7}, 3));
    char *s = decode(t, (int32_t[]){9, 2, 3, 4, 9}, 5, false);
    CHECK(s && !strcmp(s, "hi\xe4\xbd\xa0 hi"));
    free(s);
    /* the leading-space strip applies to the start of the text only */
    s = decode(t, (int32_t[]){1, 9}, 2, false);
    CHECK(s && !strcmp(s, "<s> hi"));
    free(s);
    s = decode(t, (int32_t[]){1, 9}, 2, true);
    CHECK(s && !strcmp(s, "hi"));
    free(s);
    /* streaming: the three byte tokens yield nothing until the character is whole */
    tsr_detok d;
    tsr_detok_init(&d, t, false);
    const int32_t seq[] = {9, 2, 3, 4, 9};
    const char *want[] = {"hi", "", "", "\xe4\xbd\xa0", " hi"};
    for (int i = 0; i < 5; i++) {
        char *o;
        size_t len;
        CHECK(tsr_detok_push(&d, seq[i], &o, &len) == TSR_OK);
        CHECK_MSG(o && !strcmp(o, want[i]), "piece %d: '%s'", i, o ? o : "(null)");
        free(o);
    }
    char *o;
    size_t len;
    CHECK(tsr_detok_finish(&d, &o, &len) == TSR_OK && len == 0);
    free(o);
    /* a truncated character at the end of a stream becomes U+FFFD */
    tsr_detok_init(&d, t, false);
    CHECK(tsr_detok_push(&d, 2, &o, &len) == TSR_OK && len == 0);
    free(o);
    CHECK(tsr_detok_finish(&d, &o, &len) == TSR_OK && !strcmp(o, "\xef\xbf\xbd"));
    free(o);
    tsr_tokenizer_free(t);
    free(p);
}

static bool valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t cp = tsr_utf8_next((const uint8_t *)s + i, n - i, &len);
        if (cp == 0xFFFD && !(len == 3 && (uint8_t)s[i] == 0xEF)) return false;
        i += (size_t)len;
    }
    return true;
}

/* Every streamed piece is valid UTF-8 and the pieces add up to the whole decode. */
static void check_stream(const tsr_tokenizer *t, uint64_t seed, int rounds) {
    int64_t v = tsr_tokenizer_vocab_size(t);
    for (int r = 0; r < rounds; r++) {
        int32_t ids[48];
        int n = 1 + (int)(seed % 47);
        for (int i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((seed >> 33) % (uint64_t)v);
        }
        for (int skip = 0; skip < 2; skip++) {
            char *whole = decode(t, ids, n, skip);
            tsr_detok d;
            tsr_detok_init(&d, t, skip);
            char cat[8192];
            size_t k = 0;
            bool ok = whole != NULL;
            for (int i = 0; i <= n && ok; i++) {
                char *o;
                size_t len;
                ok = (i < n ? tsr_detok_push(&d, ids[i], &o, &len) : tsr_detok_finish(&d, &o, &len)) == TSR_OK;
                if (!ok) break;
                ok = valid_utf8(o, len) && k + len < sizeof cat;
                if (ok) memcpy(cat + k, o, len);
                k += len;
                free(o);
            }
            CHECK(ok && k == strlen(whole) && !memcmp(cat, whole, k));
            free(whole);
        }
    }
}

static void test_unicode(void) {
    size_t n;
    char *s = tsr_uc_nfc("cafe\xcc\x81", 6, &n); /* e + combining acute -> é */
    CHECK(s && n == 5 && !memcmp(s, "caf\xc3\xa9", 5));
    free(s);
    CHECK(tsr_uc_nfc("plain ascii", 11, &n) == NULL); /* fast path: unchanged */
    s = tsr_uc_nfc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", 9, &n); /* jamo G A K -> 각 */
    CHECK(s && n == 3 && !memcmp(s, "\xea\xb0\x81", 3));
    free(s);
    s = tsr_uc_nfc("\xe2\x84\xa6", 3, &n); /* OHM SIGN -> GREEK CAPITAL OMEGA (singleton) */
    CHECK(s && n == 2 && !memcmp(s, "\xce\xa9", 2));
    free(s);
    /* marks are put in canonical order before composing: a + dot below + acute */
    s = tsr_uc_nfc("a\xcc\x81\xcc\xa3", 5, &n);
    CHECK(s && n == 5 && !memcmp(s, "\xe1\xba\xa1\xcc\x81", 5));
    free(s);
    CHECK(tsr_utf8_incomplete_tail((const uint8_t *)"a\xe4\xbd", 3) == 2);
    CHECK(tsr_utf8_incomplete_tail((const uint8_t *)"a\xe4\xbd\xa0", 4) == 0);
    CHECK(tsr_utf8_incomplete_tail((const uint8_t *)"\xc0", 1) == 0);
    CHECK((tsr_uc_props(0x4E2D) & TSR_UC_CLASS) == TSR_UC_L);
    CHECK((tsr_uc_props(0x0663) & TSR_UC_CLASS) == TSR_UC_N);
    CHECK((tsr_uc_props(0x0301) & TSR_UC_CLASS) == TSR_UC_M);
    CHECK(tsr_uc_props(0x3000) & TSR_UC_SPACE);
    CHECK(!(tsr_uc_props(0x200B) & TSR_UC_SPACE));
}

static void expect_load_error(const char *name, const char *text, tsr_status want, const char *needle) {
    char *p = write_json(name, text);
    tsr_tokenizer *t = (tsr_tokenizer *)1;
    tsr_status st = tsr_tokenizer_load_hf(p, &t);
    CHECK_MSG(st == want && t == NULL, "%s: status %d", name, (int)st);
    CHECK_MSG(strstr(tsr_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", name, tsr_last_error(), needle);
    free(p);
}

static void test_errors(void) {
    tsr_tokenizer *t = NULL;
    CHECK(tsr_tokenizer_load_hf("/nonexistent/tokenizer.json", &t) == TSR_ERR_IO && t == NULL);
    CHECK(strstr(tsr_last_error(), "/nonexistent/tokenizer.json") != NULL);
    CHECK(tsr_tokenizer_load_model("/nonexistent/model", &t) == TSR_ERR_NOT_FOUND);
    CHECK(tsr_tokenizer_load_model(tmpdir, &t) == TSR_ERR_NOT_FOUND); /* a dir without tokenizer.json */
    expect_load_error("trunc.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", TSR_ERR_FORMAT, "not valid JSON");
    expect_load_error("nomodel.json", "{\"added_tokens\": []}", TSR_ERR_FORMAT, "no 'model'");
    expect_load_error("wp.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", TSR_ERR_UNSUPPORTED, "WordPiece");
    expect_load_error("badid.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
                      TSR_ERR_FORMAT, "bad id");
    expect_load_error("hugeid.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e300}, \"merges\": []}}",
                      TSR_ERR_FORMAT, "bad id");
    expect_load_error("merge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}",
                      TSR_ERR_FORMAT, "not two tokens");
    expect_load_error("pattern.json",
                      "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"[a-z]+\"}, \"behavior\": "
                      "\"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      TSR_ERR_UNSUPPORTED, "split pattern not supported");
    expect_load_error("added.json", "{\"added_tokens\": [{\"id\": \"x\"}], \"model\": {\"type\": \"BPE\", \"vocab\": "
                      "{\"a\": 0}, \"merges\": []}}", TSR_ERR_FORMAT, "added token");
    /* every prefix of a valid file fails cleanly (no crash under the sanitizers) */
    size_t n = strlen(SPM_JSON);
    for (size_t cut = 0; cut < n; cut += 7) {
        char *buf = strndup(SPM_JSON, cut);
        char *p = write_json("cut.json", buf);
        CHECK(tsr_tokenizer_load_hf(p, &t) != TSR_OK && t == NULL);
        free(p);
        free(buf);
    }
}

/* The default model's tokenizer, when set-up has fetched it: round trips and the stream. */
static void test_default_model(void) {
    char *path = tsr_default_model_path();
    if (!tsr_path_exists(path)) {
        printf("SKIP default-model checks: %s missing (bash ci/fetch-model.sh)\n", path);
        free(path);
        return;
    }
    tsr_tokenizer *t = NULL;
    CHECK_MSG(tsr_tokenizer_load_model(path, &t) == TSR_OK, "%s", tsr_last_error());
    free(path);
    if (!t) return;
    CHECK(tsr_tokenizer_vocab_size(t) == 49152);
    CHECK(tsr_tokenizer_chat_template(t) != NULL);
    const char *texts[] = {"Hello world, it's 2024!", "  spaces\t\ttabs\n\nnewlines\r\n", "\xe4\xbd\xa0\xe5\xa5\xbd",
                           "emoji \xf0\x9f\x98\x80 and <|im_start|>user\nhi<|im_end|>"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        int64_t n;
        CHECK(tsr_tokenizer_encode(t, texts[i], strlen(texts[i]), true, true, &ids, &n) == TSR_OK);
        char *s = decode(t, ids, n, false);
        CHECK_MSG(s && !strcmp(s, texts[i]), "round trip of '%s' gave '%s'", texts[i], s ? s : "(null)");
        free(s);
        free(ids);
    }
    /* "<|im_start|>" is one special token when parsed, several when not */
    int32_t *a, *b;
    int64_t na, nb;
    CHECK(tsr_tokenizer_encode(t, "<|im_start|>", 12, false, true, &a, &na) == TSR_OK && na == 1);
    CHECK(a[0] == tsr_tokenizer_token_to_id(t, "<|im_start|>") && tsr_tokenizer_is_special(t, a[0]));
    CHECK(tsr_tokenizer_encode(t, "<|im_start|>", 12, false, false, &b, &nb) == TSR_OK && nb > 1);
    free(a);
    free(b);
    check_stream(t, 12345, 200);
    tsr_tokenizer_free(t);
}

int main(void) {
    tmpdir = tsr_test_tmpdir();
    test_unicode();
    test_byte_level();
    test_sentencepiece();
    test_errors();
    /* random ids over the small vocabularies: broken UTF-8 and byte tokens everywhere */
    char *p = write_json("bl2.json", BYTE_LEVEL_JSON);
    tsr_tokenizer *t = NULL;
    if (tsr_tokenizer_load_hf(p, &t) == TSR_OK) check_stream(t, 99, 300);
    tsr_tokenizer_free(t);
    free(p);
    test_default_model();
    free(tmpdir);
    return tsr_test_finish();
}
