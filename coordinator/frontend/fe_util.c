/* The small helpers every part of the OpenAI front end shares (openai.c's request parsing,
 * tools.c's structured output, the HTTP answers): filling an OpenAI error object and making
 * response ids.  Their own file so that openai.c and tools.c both use them without depending on
 * each other both ways. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "coordinator/frontend/fe.h"
#include "worker/sampling.h"

void tsr__fe_seterr(tsr__fe_error *e, int status, const char *type, const char *param, const char *code,
                    const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

void tsr__fe_make_id(const char *prefix, char *out, size_t cap) {
    static uint64_t counter;
    uint64_t a = tsr_sampling_random_seed(), b = ++counter ^ (uint64_t)time(NULL);
    snprintf(out, cap, "%s-%016llx%08llx", prefix, (unsigned long long)a, (unsigned long long)(b & 0xffffffffu));
}

