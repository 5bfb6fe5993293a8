/* The table of environment knobs (see knobs.h) and its parser.  Each row is a knob: what it
 * does (the comment above it), its variable, type, field, default and accepted range or
 * names.  README.md's "Environment knobs" section lists the same rows (test_common checks
 * that it names each one).  This file logs nothing through common/log (log.c reads
 * TESSERA_LOG from here): it writes its one warning line itself. */
#include "common/knobs.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum {
    TSR__KNOB_BOOL,    /* 1|0, true|false, yes|no, on|off (case-insensitive) */
    TSR__KNOB_INT,     /* a decimal integer in [lo, hi] */
    TSR__KNOB_SECONDS, /* a number in (lo, hi] */
    TSR__KNOB_NAME,    /* one of the names of `names` */
    TSR__KNOB_TEXT,    /* any text shorter than the field */
} tsr__knob_type;

typedef struct {
    const char *name;
    int value;
} tsr__knob_name;

typedef struct {
    const char *var;
    tsr__knob_type type;
    size_t off;                  /* the field in tsr_knobs */
    size_t size;                 /* TEXT: the field's size */
    double def, lo, hi;          /* default (NAME: the value), range (INT, SECONDS) */
    const tsr__knob_name *names; /* NAME: accepted names, NULL-terminated */
} tsr__knob;

/* the order of tsr_log_level (common/log.h) */
static const tsr__knob_name tsr__log_names[] = {{"debug", 0}, {"info", 1}, {"warn", 2}, {"error", 3}, {NULL, 0}};
static const tsr__knob_name tsr__dtype_names[] = {
    {"bf16", TSR_BF16}, {"bfloat16", TSR_BF16}, {"f16", TSR_F16},     {"fp16", TSR_F16},
    {"float16", TSR_F16}, {"f32", TSR_F32},     {"fp32", TSR_F32},    {"float32", TSR_F32}, {NULL, 0}};

#define TSR__AT(field) offsetof(tsr_knobs, field)

/* what it does
 * {variable, type, field, TEXT: field size, default, lo, hi, NAME: names} */
static const tsr__knob tsr__knobs[] = {
    /* stderr log level: debug, info, warn or error */
    {"TESSERA_LOG", TSR__KNOB_NAME, TSR__AT(log_level), 0, 1, 0, 0, tsr__log_names},
    /* CPU backend threads when --threads is not given (default: one per online core) */
    {"TESSERA_THREADS", TSR__KNOB_INT, TSR__AT(threads), 0, 0, 1, 4096, NULL},
    /* the CUDA backend's compute type: bf16, f16 or f32 (debugging) */
    {"TESSERA_DTYPE", TSR__KNOB_NAME, TSR__AT(cuda_dtype), 0, TSR_BF16, 0, 0, tsr__dtype_names},
    /* seconds a rank waits for the others in a step's collectives before the group is broken */
    {"TESSERA_COMM_TIMEOUT", TSR__KNOB_SECONDS, TSR__AT(comm_timeout_s), 0, 5, 0, 1e9, NULL},
    /* seconds NCCL setup and a data-plane wait may take before the communicator is aborted */
    {"TESSERA_NCCL_TIMEOUT", TSR__KNOB_SECONDS, TSR__AT(nccl_timeout_s), 0, 300, 0, 1e9, NULL},
    /* download the logits and sample on the host even where the device could sample */
    {"TESSERA_HOST_SAMPLING", TSR__KNOB_BOOL, TSR__AT(host_sampling), 0, 0, 0, 0, NULL},
    /* bench generate (CUDA): time every op of a few eager batch-1 steps and print the table */
    {"TESSERA_PROFILE", TSR__KNOB_BOOL, TSR__AT(profile), 0, 0, 0, 0, NULL},
    /* CPU: batches of this many tokens or more run quantized weights as dequantized f32 tiles
     * through OpenBLAS instead of 8-bit integer dot products (0: never) */
    {"TESSERA_QMM_GEMM_TOK", TSR__KNOB_INT, TSR__AT(qmm_gemm_tok), 0, 32, 0, 1 << 20, NULL},
    /* test-only: step_alloc:N[@R],... makes a step's activation allocation fail (worker/forward.h) */
    {"TESSERA_FAULT_INJECT", TSR__KNOB_TEXT, TSR__AT(fault_inject), sizeof(((tsr_knobs *)0)->fault_inject), 0, 0,
     0, NULL},
    /* CUDA: cuBLAS for every matmul (no skinny-GEMM kernel for decode) */
    {"TESSERA_NO_GEMV", TSR__KNOB_BOOL, TSR__AT(cuda.no_gemv), 0, 0, 0, 0, NULL},
    /* CUDA: the most tokens a step may have for the GEMV kernel to take a matmul */
    {"TESSERA_GEMV_MAX_TOK", TSR__KNOB_INT, TSR__AT(cuda.gemv_max_tok), 0, 2, 0, 8, NULL},
    /* CUDA: gate/up GEMM then silu_mul instead of the GEMV's fused SiLU epilogue */
    {"TESSERA_NO_FUSE", TSR__KNOB_BOOL, TSR__AT(cuda.no_fuse), 0, 0, 0, 0, NULL},
    /* CUDA: the scalar rmsnorm kernels instead of the 16-byte vector ones */
    {"TESSERA_NO_VEC_NORM", TSR__KNOB_BOOL, TSR__AT(cuda.no_vec_norm), 0, 0, 0, 0, NULL},
    /* CUDA: prefill attention on the generic kernel instead of tensor cores */
    {"TESSERA_NO_WMMA", TSR__KNOB_BOOL, TSR__AT(cuda.no_wmma), 0, 0, 0, 0, NULL},
    /* CUDA: run every step eagerly (no CUDA graph recording or replay) */
    {"TESSERA_NO_GRAPHS", TSR__KNOB_BOOL, TSR__AT(cuda.no_graphs), 0, 0, 0, 0, NULL},
    /* CUDA: flash-decoding splits of every decode step (default: chosen per batch) */
    {"TESSERA_DECODE_SPLITS", TSR__KNOB_INT, TSR__AT(cuda.decode_splits), 0, 0, 1, 1024, NULL},
};

static void tsr__why(char *why, size_t len, const char *fmt, ...) {
    if (!why || !len) return;
    size_t used = strlen(why);
    if (used + 1 >= len) return;
    int n = used ? snprintf(why + used, len - used, "; ") : 0;
    if (n < 0 || used + (size_t)n >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used + (size_t)n, len - used - (size_t)n, fmt, ap);
    va_end(ap);
}

/* NAME fields are ints but for the dtype, an enum */
static void tsr__put_name(tsr_knobs *k, const tsr__knob *d, int value) {
    if (d->off == TSR__AT(cuda_dtype)) k->cuda_dtype = (tsr_dtype)value;
    else *(int *)((char *)k + d->off) = value;
}

static void tsr__set_default(tsr_knobs *k, const tsr__knob *d) {
    char *f = (char *)k + d->off;
    switch (d->type) {
    case TSR__KNOB_BOOL: *(bool *)f = d->def != 0; break;
    case TSR__KNOB_INT: *(int *)f = (int)d->def; break;
    case TSR__KNOB_SECONDS: *(double *)f = d->def; break;
    case TSR__KNOB_NAME: tsr__put_name(k, d, (int)d->def); break;
    case TSR__KNOB_TEXT: f[0] = '\0'; break;
    }
}

/* true when v parsed into the field */
static bool tsr__set(tsr_knobs *k, const tsr__knob *d, const char *v, char *why, size_t why_len) {
    char *f = (char *)k + d->off, *end = NULL;
    switch (d->type) {
    case TSR__KNOB_BOOL: {
        static const char *on[] = {"1", "true", "yes", "on"}, *off[] = {"0", "false", "no", "off"};
        for (size_t i = 0; i < 4; i++) {
            if (!strcasecmp(v, on[i]) || !strcasecmp(v, off[i])) {
                *(bool *)f = !strcasecmp(v, on[i]);
                return true;
            }
        }
        tsr__why(why, why_len, "%s=%s: expected 1 or 0 (true/false, yes/no, on/off)", d->var, v);
        return false;
    }
    case TSR__KNOB_INT: {
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < (long)d->lo || n > (long)d->hi) {
            tsr__why(why, why_len, "%s=%s: expected an integer from %.0f to %.0f", d->var, v, d->lo, d->hi);
            return false;
        }
        *(int *)f = (int)n;
        return true;
    }
    case TSR__KNOB_SECONDS: {
        errno = 0;
        double s = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(s) || s <= d->lo || s > d->hi) {
            tsr__why(why, why_len, "%s=%s: expected seconds > 0", d->var, v);
            return false;
        }
        *(double *)f = s;
        return true;
    }
    case TSR__KNOB_NAME:
        for (const tsr__knob_name *n = d->names; n->name; n++) {
            if (strcasecmp(v, n->name)) continue;
            tsr__put_name(k, d, n->value);
            return true;
        }
        char list[128] = "";
        for (const tsr__knob_name *n = d->names; n->name; n++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", n == d->names ? "" : ", ", n->name);
        tsr__why(why, why_len, "%s=%s: expected one of %s", d->var, v, list);
        return false;
    case TSR__KNOB_TEXT:
        if (strlen(v) >= d->size) {
            tsr__why(why, why_len, "%s: longer than %zu characters", d->var, d->size - 1);
            return false;
        }
        memcpy(f, v, strlen(v) + 1);
        return true;
    }
    return false;
}

int tsr_knobs_parse(tsr_knobs *k, tsr_knob_lookup lookup, void *ctx, char *why, size_t why_len) {
    int bad = 0;
    if (why && why_len) why[0] = '\0';
    memset(k, 0, sizeof *k);
    for (size_t i = 0; i < sizeof tsr__knobs / sizeof tsr__knobs[0]; i++) {
        const tsr__knob *d = &tsr__knobs[i];
        tsr__set_default(k, d);
        const char *v = lookup(d->var, ctx);
        if (v && *v && !tsr__set(k, d, v, why, why_len)) bad++;
    }
    return bad;
}

static tsr_knobs tsr__env_knobs;
static char tsr__env_why[1024];
static int tsr__env_bad;
static pthread_once_t tsr__env_once = PTHREAD_ONCE_INIT;
static atomic_bool tsr__env_warned;

static const char *tsr__getenv(const char *name, void *ctx) {
    (void)ctx;
    return getenv(name);
}

static void tsr__load_env(void) {
    tsr__env_bad = tsr_knobs_parse(&tsr__env_knobs, tsr__getenv, NULL, tsr__env_why, sizeof tsr__env_why);
}

const tsr_knobs *tsr_knobs_get(void) {
    pthread_once(&tsr__env_once, tsr__load_env);
    if (tsr__env_bad && tsr__env_knobs.log_level <= 2 /* warn */ && !atomic_exchange(&tsr__env_warned, true))
        fprintf(stderr, "warn: ignoring %d environment knob%s (defaults kept): %s\n", tsr__env_bad,
                tsr__env_bad > 1 ? "s" : "", tsr__env_why);
    return &tsr__env_knobs;
}
