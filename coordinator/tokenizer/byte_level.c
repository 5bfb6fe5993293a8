/* GPT-2's byte alphabet, which byte-level BPE vocabularies (GPT-2, Llama-3, Qwen2, SmolLM2) are
 * spelled in: each byte stands for one printable character.  The vocabulary index, the GGUF
 * loader and the ByteLevel decoder go through it. */
#include "coordinator/tokenizer/internal.h"

#include <stdlib.h>

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the rest move to
 * U+0100 and up, in byte order. */
static void tsr__byte_alphabet(uint32_t cp_of_byte[256], int16_t byte_of_cp[512]) {
    int n = 0;
    for (int i = 0; i < 512; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        cp_of_byte[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        byte_of_cp[cp_of_byte[b]] = (int16_t)b;
    }
}

static uint32_t tsr__cp_of_byte[256];
static int16_t tsr__byte_of_cp[512];
static pthread_once_t tsr__alphabet_once = PTHREAD_ONCE_INIT;
static void tsr__alphabet_init(void) { tsr__byte_alphabet(tsr__cp_of_byte, tsr__byte_of_cp); }

void tsr__bytelevel_init(void) { pthread_once(&tsr__alphabet_once, tsr__alphabet_init); }

bool tsr__bytelevel_decode(const char *s, size_t n, char *out, size_t *out_n) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t cp = tsr_utf8_next((const uint8_t *)s + i, n - i, &len);
        if (cp >= 512 || tsr__byte_of_cp[cp] < 0 || (cp == 0xFFFD)) return false;
        out[o++] = (char)tsr__byte_of_cp[cp];
        i += (size_t)len;
    }
    *out_n = o;
    return true;
}

char *tsr__bytelevel_encode(const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)tsr_utf8_put(tsr__cp_of_byte[(uint8_t)s[i]], o + k);
    o[k] = 0;
    *out_n = k;
    return o;
}
