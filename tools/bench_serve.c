/* `tessera bench serve`: the serving benchmark.  Drives a real `tessera serve` over HTTP with
 * C concurrent streaming clients (one thread and one plain socket each, like real users), and
 * reports requests/s, output tok/s, and p50/p99 time to first token and inter-token latency.
 * With no --url it starts the server itself (this binary, on a free loopback port) and stops it
 * with SIGTERM afterwards.  Prompts are random token ids sent to /v1/completions with
 * ignore_eos, so every request has exactly --prompt-len input and --max-tokens output tokens and
 * no two requests share a prefix (the prefix cache does not flatter the figures). */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "tools/cli.h"
#include "tools/commands.h"

typedef struct {
    double ttft;                 /* seconds from send to the first token event */
    double e2e;
    int64_t out_tokens;
    bool ok;
} tsr__bs_result;

typedef struct {
    const char *host, *port, *key;
    int64_t n_requests, prompt_len, max_tokens;
    atomic_long next, done, failed;
    tsr__bs_result *res;
    /* inter-token gaps, appended under mu */
    pthread_mutex_t mu;
    double *itl;
    size_t n_itl, cap_itl;
    char first_error[256];
} tsr__bs;

static bool tsr__bs_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static void tsr__bs_fail(tsr__bs *b, const char *what) {
    pthread_mutex_lock(&b->mu);
    if (!b->first_error[0]) snprintf(b->first_error, sizeof b->first_error, "%s", what);
    pthread_mutex_unlock(&b->mu);
}

/* One streaming request; fills r and appends its inter-token gaps. */
static void tsr__bs_one(tsr__bs *b, int64_t i, tsr__bs_result *r) {
    /* random token ids (seeded by the request index) above the special tokens */
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    size_t cap = (size_t)b->prompt_len * 8 + 512;
    char *body = malloc(cap), *req = NULL;
    if (!body) return;
    size_t o = (size_t)snprintf(body, cap, "{\"prompt\":[");
    for (int64_t t = 0; t < b->prompt_len; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        o += (size_t)snprintf(body + o, cap - o, "%s%d", t ? "," : "", (int)(100 + x % 30000));
    }
    o += (size_t)snprintf(body + o, cap - o,
                          "],\"max_tokens\":%lld,\"ignore_eos\":true,\"temperature\":0,\"stream\":true,"
                          "\"stream_options\":{\"include_usage\":true}}",
                          (long long)b->max_tokens);
    size_t hcap = 1024;
    req = malloc(hcap);
    int hl = snprintf(req, hcap,
                      "POST /v1/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",
                      b->host, b->port, o, b->key ? "Authorization: Bearer " : "", b->key ? b->key : "",
                      b->key ? "\r\n" : "");
    int fd = tsr_cli_tcp_connect(b->host, b->port);
    double t0 = tsr_now(), last = 0;
    double *gaps = malloc(sizeof(double) * (size_t)(b->max_tokens + 8));
    int64_t n_gaps = 0, events = 0;
    char *buf = NULL;
    size_t len = 0, bcap = 0, pos = 0;
    bool head_done = false, done = false;
    if (fd < 0) {
        tsr__bs_fail(b, "cannot connect");
        goto out;
    }
    if (!tsr__bs_send_all(fd, req, (size_t)hl) || !tsr__bs_send_all(fd, body, o)) {
        tsr__bs_fail(b, "send failed");
        goto out;
    }
    while (!done) {
        if (len + 4096 + 1 > bcap) {
            bcap = bcap ? bcap * 2 : 65536;
            char *nb = realloc(buf, bcap);
            if (!nb) goto out;
            buf = nb;
        }
        ssize_t k = read(fd, buf + len, bcap - len - 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        double now = tsr_now();
        len += (size_t)k;
        buf[len] = 0;
        if (!head_done) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e) continue;
            int status = 0;
            sscanf(buf, "HTTP/1.%*d %d", &status);
            if (status != 200) {
                char msg[256];
                snprintf(msg, sizeof msg, "HTTP %d: %.200s", status, e + 4);
                tsr__bs_fail(b, msg);
                goto out;
            }
            head_done = true;
            pos = (size_t)(e + 4 - buf);
        }
        /* SSE events: "data: ...\n\n" (one per chunk; JSON never holds a raw "\n\n") */
        for (;;) {
            char *d = strstr(buf + pos, "data: ");
            if (!d) break;
            char *end = strstr(d, "\n\n");
            if (!end) break;
            *end = 0;
            pos = (size_t)(end + 2 - buf);
            const char *ev = d + 6;
            if (!strcmp(ev, "[DONE]")) {
                done = true;
                break;
            }
            cJSON *j = cJSON_Parse(ev);
            cJSON *u = cJSON_GetObjectItem(j, "usage");
            if (cJSON_IsObject(u)) {
                r->out_tokens = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(u, "completion_tokens"));
            } else if (cJSON_GetObjectItem(j, "error")) {
                tsr__bs_fail(b, ev);
            } else {
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
                const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text"));
                if (t && t[0]) {
                    if (events == 0) r->ttft = now - t0;
                    else if (n_gaps < b->max_tokens + 8) gaps[n_gaps++] = now - last;
                    last = now;
                    events++;
                }
            }
            cJSON_Delete(j);
        }
    }
    r->e2e = tsr_now() - t0;
    r->ok = done && events > 0;
    if (!r->ok) tsr__bs_fail(b, "the stream ended without [DONE]");
    if (r->ok && n_gaps) {
        pthread_mutex_lock(&b->mu);
        if (b->n_itl + (size_t)n_gaps > b->cap_itl) {
            size_t nc = (b->cap_itl ? b->cap_itl * 2 : 4096) + (size_t)n_gaps;
            double *ni = realloc(b->itl, nc * sizeof(double));
            if (ni) b->itl = ni, b->cap_itl = nc;
        }
        if (b->n_itl + (size_t)n_gaps <= b->cap_itl) {
            memcpy(b->itl + b->n_itl, gaps, sizeof(double) * (size_t)n_gaps);
            b->n_itl += (size_t)n_gaps;
        }
        pthread_mutex_unlock(&b->mu);
    }
out:
    if (fd >= 0) close(fd);
    free(buf);
    free(gaps);
    free(body);
    free(req);
}

static void *tsr__bs_worker(void *arg) {
    tsr__bs *b = arg;
    for (;;) {
        long i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n_requests) break;
        tsr__bs_one(b, i, &b->res[i]);
        if (!b->res[i].ok) atomic_fetch_add(&b->failed, 1);
        atomic_fetch_add(&b->done, 1);
    }
    return NULL;
}

static int tsr__bs_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double tsr__bs_pct(double *v, size_t n, double q) {
    if (!n) return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* GET /health until 200 (the server loads the model first). */
static bool tsr__bs_wait_healthy(const char *host, const char *port, pid_t pid, double timeout_s) {
    double t0 = tsr_now();
    while (tsr_now() - t0 < timeout_s) {
        int st;
        if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) return false;
        int fd = tsr_cli_tcp_connect(host, port);
        if (fd >= 0) {
            const char *q = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            char r[256] = {0};
            if (tsr__bs_send_all(fd, q, strlen(q)) && read(fd, r, sizeof r - 1) > 0 && !strncmp(r, "HTTP/1.1 200", 12)) {
                close(fd);
                return true;
            }
            close(fd);
        }
        usleep(200 * 1000);
    }
    return false;
}

static int tsr__bs_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

int tsr_bench_serve(int argc, char **argv) {
    const char *url = NULL, *key = NULL, *backend = NULL, *log_path = NULL;
    int64_t conc = 32, n_req = 0, prompt_len = 128, max_tokens = 64, threads = 0;
    double wait_s = -1;
    const tsr_opt opts[] = {
        {"--url", TSR_OPT_STR, &url, "URL", "benchmark a running server (http://host:port); default: start one"},
        {"--concurrency", TSR_OPT_INT, &conc, "C", "concurrent streaming clients (default 32)"},
        {"--requests", TSR_OPT_INT, &n_req, "N", "requests in all (default 2 x concurrency)"},
        {"--prompt-len", TSR_OPT_INT, &prompt_len, "P", "prompt tokens per request (default 128)"},
        {"--max-tokens", TSR_OPT_INT, &max_tokens, "T", "output tokens per request (ignore_eos; default 64)"},
        {"--api-key", TSR_OPT_STR, &key, "KEY", "send 'Authorization: Bearer KEY'"},
        {"--backend", TSR_OPT_STR, &backend, "B", "started server: auto | cpu | cuda (default auto)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "started server: CPU backend threads (default: all cores)"},
        {"--wait", TSR_OPT_FLOAT, &wait_s, "S", "wait up to S s for /health (default 10 with --url, 600 otherwise)"},
        {"--server-log", TSR_OPT_STR, &log_path, "FILE", "started server: its output (default: discarded)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench serve [MODEL] [--url URL] [--concurrency C] [--requests N] [--prompt-len P] "
                           "[--max-tokens T]",
                           "Serving benchmark: C concurrent streaming clients over HTTP against `tessera serve`\n"
                           "(started here on a free port unless --url is given).  Reports requests/s, output tok/s,\n"
                           "p50/p99 time to first token and p50/p99 inter-token latency.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (!n_req) n_req = 2 * conc;
    if (conc < 1 || conc > 4096 || n_req < 1 || prompt_len < 1 || prompt_len > 1 << 20 || max_tokens < 1 ||
        max_tokens > 1 << 20) {
        fprintf(stderr, "tessera bench serve: need 1 <= --concurrency <= 4096, --requests >= 1, --prompt-len >= 1, "
                        "--max-tokens >= 1\n");
        return 1;
    }
    char host[256] = "127.0.0.1", port[16];
    pid_t child = -1;
    if (url) {
        if (strncmp(url, "http://", 7)) {
            fprintf(stderr, "tessera bench serve: --url must be http://host:port\n");
            return 1;
        }
        const char *h = url + 7, *colon = strrchr(h, ':');
        size_t hl = colon ? (size_t)(colon - h) : strcspn(h, "/");
        snprintf(host, sizeof host, "%.*s", (int)hl, h);
        snprintf(port, sizeof port, "%.*s", colon ? (int)strcspn(colon + 1, "/") : 2, colon ? colon + 1 : "80");
    } else {
        const char *model = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
        if (!model) return 1;
        int p = tsr__bs_free_port();
        if (p < 0) {
            fprintf(stderr, "tessera bench serve: no free port\n");
            return 1;
        }
        snprintf(port, sizeof port, "%d", p);
        char batch[32], thr[32];
        snprintf(batch, sizeof batch, "%lld", (long long)conc);
        snprintf(thr, sizeof thr, "%lld", (long long)threads);
        const char *args[24];
        int na = 0;
        args[na++] = "tessera";
        args[na++] = "serve";
        args[na++] = model;
        args[na++] = "--server-port";
        args[na++] = port;
        args[na++] = "--grpc-port";
        args[na++] = "0";
        args[na++] = "--max-batch-size";
        args[na++] = batch;
        if (backend) args[na++] = "--backend", args[na++] = backend;
        if (threads > 0) args[na++] = "--threads", args[na++] = thr;
        if (key) args[na++] = "--api-key", args[na++] = key;
        args[na] = NULL;
        fprintf(stderr, "starting tessera serve %s on 127.0.0.1:%s ...\n", model, port);
        child = fork();
        if (child == 0) {
            int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            setpgid(0, 0);   /* a ^C to the benchmark reaches the server only through us */
            execv("/proc/self/exe", (char *const *)args);
            _exit(127);
        }
        if (child < 0) {
            perror("tessera bench serve: fork");
            return 1;
        }
    }
    if (wait_s < 0) wait_s = url ? 10 : 600;
    if (!tsr__bs_wait_healthy(host, port, child, wait_s)) {
        fprintf(stderr, "tessera bench serve: the server at %s:%s did not answer /health%s\n", host, port,
                child > 0 ? " (see --server-log FILE)" : "");
        if (child > 0) kill(child, SIGKILL), waitpid(child, NULL, 0);
        return 1;
    }

    tsr__bs b;
    memset(&b, 0, sizeof b);
    b.host = host;
    b.port = port;
    b.key = key;
    b.prompt_len = prompt_len;
    b.max_tokens = max_tokens;
    pthread_mutex_init(&b.mu, NULL);
    /* warm-up: one short request (first-touch of weights and KV pages is not what we measure) */
    b.n_requests = 1;
    b.res = calloc((size_t)n_req, sizeof *b.res);
    if (!b.res) return 1;
    tsr__bs_worker(&b);
    if (!b.res[0].ok) {
        fprintf(stderr, "tessera bench serve: warm-up request failed: %s\n", b.first_error);
        if (child > 0) kill(child, SIGKILL), waitpid(child, NULL, 0);
        return 1;
    }
    memset(b.res, 0, sizeof *b.res);
    b.n_itl = 0;
    atomic_store(&b.next, 0);
    atomic_store(&b.done, 0);
    atomic_store(&b.failed, 0);
    b.n_requests = n_req;

    printf("bench serve: %s:%s, %lld clients, %lld requests, prompt %lld tokens, output %lld tokens\n", host, port,
           (long long)conc, (long long)n_req, (long long)prompt_len, (long long)max_tokens);
    fflush(stdout);
    int nt = (int)(conc < n_req ? conc : n_req);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    double t0 = tsr_now();
    for (int i = 0; i < nt; i++) pthread_create(&th[i], NULL, tsr__bs_worker, &b);
    long shown = -1;
    while (atomic_load(&b.done) < n_req) {
        long d = atomic_load(&b.done);
        if (d != shown) tsr_progress("requests", d, n_req);   /* a line per change off a tty */
        shown = d;
        usleep(250 * 1000);
    }
    tsr_progress("requests", n_req, n_req);
    for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
    double wall = tsr_now() - t0;
    free(th);

    int64_t ok = 0, out = 0;
    double *ttft = malloc(sizeof(double) * (size_t)n_req), *e2e = malloc(sizeof(double) * (size_t)n_req);
    for (int64_t i = 0; i < n_req; i++) {
        if (!b.res[i].ok) continue;
        ttft[ok] = b.res[i].ttft;
        e2e[ok] = b.res[i].e2e;
        out += b.res[i].out_tokens;
        ok++;
    }
    qsort(ttft, (size_t)ok, sizeof(double), tsr__bs_cmp);
    qsort(e2e, (size_t)ok, sizeof(double), tsr__bs_cmp);
    qsort(b.itl, b.n_itl, sizeof(double), tsr__bs_cmp);
    printf("completed:        %lld / %lld requests in %.2f s (%lld failed)\n", (long long)ok, (long long)n_req, wall,
           (long long)(n_req - ok));
    printf("requests/s:       %.3f\n", (double)ok / wall);
    printf("output tok/s:     %.1f   (%lld tokens)\n", (double)out / wall, (long long)out);
    printf("input tok/s:      %.1f\n", (double)(ok * prompt_len) / wall);
    printf("TTFT p50 / p99:   %.1f / %.1f ms\n", 1e3 * tsr__bs_pct(ttft, (size_t)ok, 0.5),
           1e3 * tsr__bs_pct(ttft, (size_t)ok, 0.99));
    printf("ITL  p50 / p99:   %.1f / %.1f ms   (%zu gaps)\n", 1e3 * tsr__bs_pct(b.itl, b.n_itl, 0.5),
           1e3 * tsr__bs_pct(b.itl, b.n_itl, 0.99), b.n_itl);
    printf("latency p50 / p99: %.2f / %.2f s per request\n", tsr__bs_pct(e2e, (size_t)ok, 0.5),
           tsr__bs_pct(e2e, (size_t)ok, 0.99));
    if (ok < n_req) printf("first error: %s\n", b.first_error);
    free(ttft);
    free(e2e);
    free(b.itl);
    free(b.res);
    pthread_mutex_destroy(&b.mu);
    if (child > 0) {
        kill(child, SIGTERM);
        int st = 0;
        waitpid(child, &st, 0);
    }
    return ok == n_req ? 0 : 1;
}
