/* libFuzzer harness for chat templates (coordinator/chat_template.c), run by ci/fuzz.sh.  The
 * input is a template in LMDeploy's JSON form (or, when the first byte is '@', the name of a
 * built-in picked by the next byte), a NUL, then messages separated by 0x01 whose first byte
 * picks the role (s, u, a; anything else is an unknown role).  Whatever loads must render any
 * conversation, with and without the generation prompt, or refuse it with a status; the JSON
 * text is also given to detection as if it were a model's Jinja template. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];

static void tsr__cleanup(void) { unlink(path); }

static void tsr__render(const tsr_chat_template *t, const tsr_chat_message *m, size_t n) {
    (void)tsr_chat_template_name(t);
    (void)tsr_chat_template_default_system(t);
    for (const char *const *w = tsr_chat_template_stop_words(t); w && *w; w++) (void)strlen(*w);
    for (int gen = 0; gen < 2; gen++) {
        char *out = NULL;
        if (tsr_chat_template_render(t, m, n, gen, &out) == TSR_OK && !out) abort();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/tsr_fuzz_chat_%d.json", (int)getpid());
        atexit(tsr__cleanup);
    }
    const uint8_t *end = data + size, *z = memchr(data, 0, size);
    if (!z) z = end;
    /* the messages: NUL-terminated copies, so each content is its own allocation */
    char *rest = malloc((size_t)(end - z) + 1);
    if (!rest) abort();
    size_t rn = z < end ? (size_t)(end - z - 1) : 0;
    memcpy(rest, z < end ? z + 1 : z, rn);
    rest[rn] = 0;
    tsr_chat_message msgs[64];
    size_t n = 0;
    for (char *p = rest; n < 64 && (p < rest + rn || (n == 0 && rn == 0));) {
        char *sep = memchr(p, 1, (size_t)(rest + rn - p));
        if (sep) *sep = 0;
        char r = *p;
        msgs[n].role = r == 's' ? "system" : r == 'u' ? "user" : r == 'a' ? "assistant" : "tool";
        msgs[n].content = *p ? p + 1 : p;
        n++;
        if (!sep) break;
        p = sep + 1;
    }

    tsr_chat_template *t = NULL;
    if (size >= 2 && data[0] == '@') {
        const char *const *names = tsr_chat_template_builtin_names();
        size_t nn = 0;
        while (names[nn]) nn++;
        if (tsr_chat_template_load(names[data[1] % nn], &t) != TSR_OK) abort();
    } else {
        FILE *f = fopen(path, "wb");
        if (!f) abort();
        if (z > data && fwrite(data, 1, (size_t)(z - data), f) != (size_t)(z - data)) abort();
        fclose(f);
        if (tsr_chat_template_load(path, &t) != TSR_OK) t = NULL;
    }
    if (t) {
        tsr__render(t, msgs, n);
        tsr_chat_template_free(t);
    }
    /* the same text as a model's Jinja template, and the first message as its model name */
    char *jinja = malloc((size_t)(z - data) + 1);
    if (!jinja) abort();
    memcpy(jinja, data, (size_t)(z - data));
    jinja[z - data] = 0;
    if (tsr_chat_template_detect(jinja, n ? msgs[0].content : NULL, &t) == TSR_OK) {
        tsr__render(t, msgs, n);
        tsr_chat_template_free(t);
    }
    free(jinja);
    free(rest);
    return 0;
}
