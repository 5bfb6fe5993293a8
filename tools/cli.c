/* Option parsing for subcommands (see cli.h). */
#include "tools/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/fileutil.h"

void tsr_cli_print_help(const char *usage, const char *description, const tsr_opt *opts) {
    printf("usage: %s\n", usage);
    if (description) printf("\n%s\n", description);
    printf("\noptions:\n");
    for (const tsr_opt *o = opts; o && o->name; o++) {
        char left[64];
        if (o->kind == TSR_OPT_FLAG) snprintf(left, sizeof left, "%s", o->name);
        else snprintf(left, sizeof left, "%s %s", o->name, o->metavar ? o->metavar : "X");
        printf("  %-28s %s\n", left, o->help ? o->help : "");
    }
    printf("  %-28s %s\n", "-h, --help", "show this help");
}

static int tsr__cli_set(const tsr_opt *o, const char *val) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case TSR_OPT_FLAG: *(bool *)o->dst = true; return 0;
    case TSR_OPT_STR: *(const char **)o->dst = val; return 0;
    case TSR_OPT_STR_LIST: {
        tsr_str_list *l = o->dst;
        const char **items = realloc((void *)l->items, sizeof(char *) * (size_t)(l->n + 1));
        if (!items) return -1;
        items[l->n++] = val;
        l->items = items;
        return 0;
    }
    case TSR_OPT_INT: {
        long long v = strtoll(val, &end, 10);
        if (errno || !end || *end || end == val) return -1;
        *(int64_t *)o->dst = v;
        return 0;
    }
    case TSR_OPT_FLOAT: {
        double v = strtod(val, &end);
        if (errno || !end || *end || end == val) return -1;
        *(double *)o->dst = v;
        return 0;
    }
    }
    return -1;
}

/* Open MPI, PMIx (Open MPI 5, srun --mpi=pmix), MPICH's Hydra / PMI, Slurm */
static const char *tsr__cli_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return v;
    }
    return "0";
}

bool tsr_cli_is_root(void) { return strtol(tsr__cli_rank(), NULL, 10) == 0; }

static char tsr__cli_held[2048];   /* a non-zero rank's messages, held back */

void tsr_cli_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (tsr_cli_is_root()) {
        vfprintf(stderr, fmt, ap);
    } else {
        size_t n = strlen(tsr__cli_held);
        vsnprintf(tsr__cli_held + n, sizeof tsr__cli_held - n, fmt, ap);
    }
    va_end(ap);
}

void tsr_cli_err_held_flush(void) {
    if (tsr_cli_is_root() || !tsr__cli_held[0]) return;
    sleep(3);
    fprintf(stderr, "[rank %s] %s", tsr__cli_rank(), tsr__cli_held);
    tsr__cli_held[0] = '\0';
}

int tsr_cli_parse(const char *usage, const char *description, const tsr_opt *opts, int argc,
                  char **argv, const char **pos, int max_pos, int *n_pos) {
    int np = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            tsr_cli_print_help(usage, description, opts);
            return TSR_CLI_HELP;
        }
        if (!only_pos && !strcmp(a, "--")) { only_pos = true; continue; }
        if (!only_pos && a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a, '=');
            size_t nl = eq ? (size_t)(eq - a) : strlen(a);
            const tsr_opt *o = opts;
            for (; o && o->name; o++)
                if (strlen(o->name) == nl && !strncmp(o->name, a, nl)) break;
            if (!o || !o->name) {
                tsr_cli_err("tessera %s: unknown option '%.*s' (see --help)\n", argv[0], (int)nl, a);
                return TSR_CLI_ERROR;
            }
            const char *val = NULL;
            if (o->kind == TSR_OPT_FLAG) {
                if (eq) { tsr_cli_err("tessera %s: %s takes no value\n", argv[0], o->name); return TSR_CLI_ERROR; }
            } else if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                tsr_cli_err("tessera %s: %s needs a value\n", argv[0], o->name);
                return TSR_CLI_ERROR;
            }
            if (tsr__cli_set(o, val) != 0) {
                tsr_cli_err("tessera %s: bad value '%s' for %s\n", argv[0], val ? val : "", o->name);
                return TSR_CLI_ERROR;
            }
            continue;
        }
        if (np >= max_pos) {
            tsr_cli_err("tessera %s: unexpected argument '%s' (see --help)\n", argv[0], a);
            return TSR_CLI_ERROR;
        }
        pos[np++] = a;
    }
    if (n_pos) *n_pos = np;
    return TSR_CLI_OK;
}

const char *tsr_cli_model_or_default(const char *given) {
    if (given) return given;
    static char *def;
    if (!def) def = tsr_default_model_path();
    if (!tsr_path_exists(def)) {
        tsr_cli_err(
                "tessera: no model named and the default model is missing (%s).\n"
                "Fetch it with: bash ci/fetch-model.sh   (or name a model: a .gguf file, an HF "
                "directory or a workspace)\n",
                def);
        return NULL;
    }
    return def;
}

int tsr_cli_tcp_connect(const char *host, const char *port) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int tsr_cli_quant_policy(const char *cmd, int64_t given, int64_t *policy) {
    *policy = -1;
    if (given == INT64_MIN) return 0;
    if (given != 0 && given != 8 && given != 4) {
        tsr_cli_err("tessera %s: --quant-policy %lld: must be 0 (KV of the compute type), 8 (int8 KV) or 4 (int4 KV)\n",
                    cmd, (long long)given);
        return 1;
    }
    *policy = given;
    return 0;
}
