/* libFuzzer harness for the HF tokenizer (coordinator/tokenizer.c), run by ci/fuzz.sh.  The
 * input is tokenizer.json, a NUL, tokenizer_config.json (may be empty: no file), a NUL, and a
 * text; the files go to a private directory and are loaded as a model's would be.  Whatever
 * loads must encode the text (with and without special tokens), decode the ids whole and one
 * at a time, and decode ids it never made (out of range included) to a status, not a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coordinator/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], json_path[96], cfg_path[96];

static void tsr__cleanup(void) {
    unlink(json_path);
    unlink(cfg_path);
    rmdir(dir);
}

static void tsr__write(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(p, 1, n, f) != n) abort();
    fclose(f);
}

static void tsr__decode_all(const tsr_tokenizer *t, const int32_t *ids, int64_t n, bool skip) {
    char *text = NULL, *piece = NULL;
    size_t len = 0, plen = 0;
    if (tsr_tokenizer_decode(t, ids, n, skip, &text, &len) == TSR_OK && strlen(text) > len) abort();
    free(text);
    tsr_detok d;
    tsr_detok_init(&d, t, skip);
    for (int64_t i = 0; i < n; i++) {
        if (tsr_detok_push(&d, ids[i], &piece, &plen) != TSR_OK) break;
        free(piece);
        piece = NULL;
    }
    if (tsr_detok_finish(&d, &piece, &plen) == TSR_OK) free(piece);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/tsr_fuzz_tok_%d", (int)getpid());
        if (mkdir(dir, 0700) != 0) abort();
        snprintf(json_path, sizeof json_path, "%s/tokenizer.json", dir);
        snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
        atexit(tsr__cleanup);
    }
    const uint8_t *end = data + size, *z1 = memchr(data, 0, size);
    if (!z1) z1 = end;
    const uint8_t *cfg = z1 < end ? z1 + 1 : end, *z2 = memchr(cfg, 0, (size_t)(end - cfg));
    if (!z2) z2 = end;
    const uint8_t *text = z2 < end ? z2 + 1 : end;
    tsr__write(json_path, data, (size_t)(z1 - data));
    if (z2 > cfg) tsr__write(cfg_path, cfg, (size_t)(z2 - cfg));
    else unlink(cfg_path);

    tsr_tokenizer *t = NULL;
    if (tsr_tokenizer_load_hf(json_path, &t) != TSR_OK) return 0;
    const size_t tlen = (size_t)(end - text);
    char *s = malloc(tlen ? tlen : 1);   /* exact size: the encoder is given a length, not a NUL */
    if (!s) abort();
    memcpy(s, text, tlen);
    for (int mode = 0; mode < 2; mode++) {
        int32_t *ids = NULL;
        int64_t n = 0;
        if (tsr_tokenizer_encode(t, s, tlen, mode, mode, &ids, &n) == TSR_OK) {
            for (int64_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= tsr_tokenizer_vocab_size(t)) abort();
            tsr__decode_all(t, ids, n, mode);
        }
        free(ids);
    }
    /* ids it never made: pairs of text bytes, spread over and past the vocabulary */
    int64_t n = (int64_t)(tlen / 2), vs = tsr_tokenizer_vocab_size(t);
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) abort();
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((text[2 * i] << 8 | text[2 * i + 1]) % (vs + 4)) - 2;
    tsr__decode_all(t, ids, n, false);
    tsr__decode_all(t, ids, n, true);
    for (int64_t i = 0; i < n; i++) {
        const char *piece = tsr_tokenizer_id_to_piece(t, ids[i]);
        if (piece) (void)tsr_tokenizer_token_to_id(t, piece);
        (void)tsr_tokenizer_is_special(t, ids[i]);
    }
    free(ids);
    free(s);
    (void)tsr_tokenizer_chat_template(t);
    tsr_tokenizer_free(t);
    return 0;
}
