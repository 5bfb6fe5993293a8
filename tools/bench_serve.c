/* `tessera bench serve`: the serving benchmark and soak driver.  Drives a real `tessera serve`
 * over HTTP with C concurrent streaming clients (one thread and one plain socket each, like real
 * users), and reports requests/s, output tok/s, p50/p99 time to first token and inter-token
 * latency, and every answer counted by status (2xx, 429, 503, other 4xx, 5xx, connection
 * errors).  --requests N runs N requests; --duration S keeps the clients busy for S seconds
 * (a soak, with a progress line every few seconds); --disconnect-fraction F makes that fraction
 * of requests hang up at a random point of their stream, as real users do.  With no --url it
 * starts the server itself (this binary, on a free loopback port) and stops it with SIGTERM
 * afterwards.  Prompts are random token ids sent to /v1/completions with ignore_eos, so every
 * request has exactly --prompt-len input and --max-tokens output tokens and no two requests
 * share a prefix (the prefix cache does not flatter the figures). */
#include <errno.h>
#include <limits.h>
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

/* How one request ended.  Only OK requests feed the latency figures. */
typedef enum {
    TSR__BS_OK,          /* 2xx, the stream ended with [DONE] */
    TSR__BS_HUNG_UP,     /* 2xx, we closed the socket mid-stream on purpose (--disconnect-fraction) */
    TSR__BS_STATUS,      /* a non-2xx answer (its status is counted) */
    TSR__BS_BROKEN,      /* 2xx, but the server ended the stream without [DONE] */
    TSR__BS_STREAM_ERR,  /* 2xx, with an error event inside the stream */
    TSR__BS_CONN,        /* no answer: connect, send or read failed, or closed before a status */
} tsr__bs_end;

/* counters of outcomes, indexed as tsr__bs_names */
enum { TSR__C_2XX, TSR__C_429, TSR__C_503, TSR__C_4XX, TSR__C_5XX, TSR__C_OTHER, TSR__C_CONN, TSR__C_HUNG_UP,
       TSR__C_BROKEN, TSR__C_STREAM_ERR, TSR__C_OK, TSR__C_N };
static const char *const tsr__bs_names[TSR__C_N] = {"2xx", "429", "503", "other_4xx", "5xx", "other_status",
                                                    "connection_errors", "hung_up", "broken_streams",
                                                    "stream_errors", "completed"};

typedef struct {
    const char *host, *port, *key;
    int64_t n_requests, prompt_len, max_tokens;
    double deadline;             /* --duration: no request starts after this tsr_now() */
    double disconnect_fraction;
    atomic_long next, started, finished;
    atomic_long count[TSR__C_N];
    atomic_llong out_tokens;
    /* (TTFT, latency) pairs of completed requests and inter-token gaps, appended under mu */
    pthread_mutex_t mu;
    double *lat, *itl;
    size_t n_lat, cap_lat, n_itl, cap_itl;
    char first_error[256];
} tsr__bs;

static bool tsr__bs_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);   /* a server that closed must not SIGPIPE us */
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

static uint64_t tsr__bs_mix(uint64_t x) {   /* splitmix64 */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* appends n values to *v (growing it); false when out of memory */
static bool tsr__bs_append(double **v, size_t *n, size_t *cap, const double *x, size_t k) {
    if (*n + k > *cap) {
        size_t nc = (*cap ? *cap * 2 : 4096) + k;
        double *nv = realloc(*v, nc * sizeof(double));
        if (!nv) return false;
        *v = nv, *cap = nc;
    }
    memcpy(*v + *n, x, k * sizeof(double));
    *n += k;
    return true;
}

static int tsr__bs_count_of_status(int status) {
    if (status >= 200 && status < 300) return TSR__C_2XX;
    if (status == 429) return TSR__C_429;
    if (status == 503) return TSR__C_503;
    if (status >= 400 && status < 500) return TSR__C_4XX;
    if (status >= 500 && status < 600) return TSR__C_5XX;
    return TSR__C_OTHER;
}

/* One streaming request (index i picks its prompt and whether and when it hangs up).  Counts
 * its outcome and, when it completed, appends its TTFT, latency and inter-token gaps. */
static tsr__bs_end tsr__bs_one(tsr__bs *b, int64_t i) {
    /* random token ids (seeded by the request index) above the special tokens */
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    uint64_t r1 = tsr__bs_mix((uint64_t)i ^ 0xD15C0ull), r2 = tsr__bs_mix(r1);
    bool hang_up = (double)(r1 >> 11) * 0x1.0p-53 < b->disconnect_fraction;
    int64_t hang_after = (int64_t)(r2 % (uint64_t)b->max_tokens);   /* token events, 0 = after the head */
    size_t cap = (size_t)b->prompt_len * 8 + 512;
    char *body = malloc(cap), *req = malloc(1024), *buf = NULL;
    double *gaps = malloc(sizeof(double) * (size_t)(b->max_tokens + 8));
    tsr__bs_end end = TSR__BS_CONN;
    int status = 0, fd = -1;
    double t0 = tsr_now(), last = 0, ttft = 0;
    int64_t n_gaps = 0, events = 0, out_tokens = 0;
    size_t len = 0, bcap = 0, pos = 0;
    bool head_done = false, done = false, stream_err = false;
    if (!body || !req || !gaps) {
        tsr__bs_fail(b, "out of memory");
        goto out;
    }
    size_t o = (size_t)snprintf(body, cap, "{\"prompt\":[");
    for (int64_t t = 0; t < b->prompt_len; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        o += (size_t)snprintf(body + o, cap - o, "%s%d", t ? "," : "", (int)(100 + x % 30000));
    }
    o += (size_t)snprintf(body + o, cap - o,
                          "],\"max_tokens\":%lld,\"ignore_eos\":true,\"temperature\":0,\"stream\":true,"
                          "\"stream_options\":{\"include_usage\":true}}",
                          (long long)b->max_tokens);
    int hl = snprintf(req, 1024,
                      "POST /v1/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",
                      b->host, b->port, o, b->key ? "Authorization: Bearer " : "", b->key ? b->key : "",
                      b->key ? "\r\n" : "");
    fd = tsr_cli_tcp_connect(b->host, b->port);
    t0 = tsr_now();
    if (fd < 0) {
        tsr__bs_fail(b, "cannot connect");
        goto out;
    }
    /* a server that refuses (429, 503) may answer and close before it has read the whole
     * request: a failed send still reads what came back, and is an error only without an answer */
    bool sent = tsr__bs_send_all(fd, req, (size_t)hl) && tsr__bs_send_all(fd, body, o);
    while (!done) {
        if (head_done && hang_up && events >= hang_after) {
            end = TSR__BS_HUNG_UP;   /* close() with unread bytes: the server sees a reset, as from a crashed client */
            goto out;
        }
        if (len + 4096 + 1 > bcap) {
            bcap = bcap ? bcap * 2 : 65536;
            char *nb = realloc(buf, bcap);
            if (!nb) goto out;
            buf = nb;
        }
        ssize_t k = read(fd, buf + len, bcap - len - 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (!head_done)
                tsr__bs_fail(b, !sent ? "send failed" : k < 0 ? "connection reset before an answer"
                                                             : "connection closed before an answer");
            break;
        }
        double now = tsr_now();
        len += (size_t)k;
        buf[len] = 0;
        if (!head_done) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e) continue;
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) status = -1;
            if (status < 200 || status >= 300) {
                char msg[256];
                snprintf(msg, sizeof msg, "HTTP %d: %.200s", status, e + 4);
                if (status != 429 && status != 503) tsr__bs_fail(b, msg);   /* load shedding is not an error */
                end = TSR__BS_STATUS;
                goto out;
            }
            head_done = true;
            pos = (size_t)(e + 4 - buf);
        }
        /* SSE events: "data: ...\n\n" (one per chunk; JSON never holds a raw "\n\n") */
        for (;;) {
            char *d = strstr(buf + pos, "data: ");
            if (!d) break;
            char *ee = strstr(d, "\n\n");
            if (!ee) break;
            *ee = 0;
            pos = (size_t)(ee + 2 - buf);
            const char *ev = d + 6;
            if (!strcmp(ev, "[DONE]")) {
                done = true;
                break;
            }
            cJSON *j = cJSON_Parse(ev);
            cJSON *u = cJSON_GetObjectItem(j, "usage");
            if (cJSON_IsObject(u)) {
                out_tokens = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(u, "completion_tokens"));
            } else if (cJSON_GetObjectItem(j, "error")) {
                stream_err = true;
                tsr__bs_fail(b, ev);
            } else {
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
                const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text"));
                if (t && t[0]) {
                    if (events == 0) ttft = now - t0;
                    else if (n_gaps < b->max_tokens + 8) gaps[n_gaps++] = now - last;
                    last = now;
                    events++;
                }
            }
            cJSON_Delete(j);
        }
    }
    if (head_done) {
        end = stream_err ? TSR__BS_STREAM_ERR : done && events > 0 ? TSR__BS_OK : TSR__BS_BROKEN;
        if (end == TSR__BS_BROKEN) tsr__bs_fail(b, "the stream ended without [DONE]");
    }
    if (end == TSR__BS_OK) {
        double lat[2] = {ttft, tsr_now() - t0};
        atomic_fetch_add(&b->out_tokens, out_tokens);
        pthread_mutex_lock(&b->mu);
        tsr__bs_append(&b->lat, &b->n_lat, &b->cap_lat, lat, 2);
        tsr__bs_append(&b->itl, &b->n_itl, &b->cap_itl, gaps, (size_t)n_gaps);
        pthread_mutex_unlock(&b->mu);
    }
out:
    if (fd >= 0) close(fd);
    if (end == TSR__BS_STATUS || head_done) atomic_fetch_add(&b->count[tsr__bs_count_of_status(status)], 1);
    static const int what[] = {[TSR__BS_OK] = TSR__C_OK, [TSR__BS_HUNG_UP] = TSR__C_HUNG_UP,
                               [TSR__BS_STATUS] = -1, [TSR__BS_BROKEN] = TSR__C_BROKEN,
                               [TSR__BS_STREAM_ERR] = TSR__C_STREAM_ERR, [TSR__BS_CONN] = TSR__C_CONN};
    if (what[end] >= 0) atomic_fetch_add(&b->count[what[end]], 1);
    free(buf);
    free(gaps);
    free(body);
    free(req);
    return end;
}

static void *tsr__bs_worker(void *arg) {
    tsr__bs *b = arg;
    for (;;) {
        if (b->deadline > 0 && tsr_now() >= b->deadline) break;
        long i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n_requests) break;
        atomic_fetch_add(&b->started, 1);
        tsr__bs_end e = tsr__bs_one(b, i);
        atomic_fetch_add(&b->finished, 1);
        /* a refused client waits a little before it asks again, as a polite one would */
        if (e == TSR__BS_STATUS || e == TSR__BS_CONN) usleep(50 * 1000);
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

/* The engine's step counters from GET /metrics: v = {steps, busy s, wall s}; false when the
 * server does not report them (an older one). */
static bool tsr__bs_step_counters(const tsr__bs *b, double v[3]) {
    static const char *const names[3] = {"\ntessera_engine_steps_total ", "\ntessera_step_busy_seconds_total ",
                                         "\ntessera_step_wall_seconds_total "};
    int fd = tsr_cli_tcp_connect(b->host, b->port);
    if (fd < 0) return false;
    char q[512], *r = malloc(1 << 16);
    int ql = snprintf(q, sizeof q, "GET /metrics HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n%s%s%s\r\n", b->host,
                      b->port, b->key ? "Authorization: Bearer " : "", b->key ? b->key : "", b->key ? "\r\n" : "");
    size_t n = 0;
    if (r && tsr__bs_send_all(fd, q, (size_t)ql))
        for (ssize_t k; n + 1 < (1 << 16) && ((k = read(fd, r + n, (1 << 16) - 1 - n)) > 0 || (k < 0 && errno == EINTR));)
            n += k > 0 ? (size_t)k : 0;
    close(fd);
    bool ok = r != NULL;
    if (r) r[n] = 0;
    for (int i = 0; i < 3 && ok; i++) {
        const char *at = strstr(r, names[i]);
        ok = at != NULL;
        if (ok) v[i] = strtod(at + strlen(names[i]), NULL);
    }
    free(r);
    return ok;
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


/* "2xx 80, 429 40, ..." : the outcome counts as one line */
static void tsr__bs_counts_line(tsr__bs *b, char *s, size_t n) {
    long c[TSR__C_N];
    for (int i = 0; i < TSR__C_N; i++) c[i] = atomic_load(&b->count[i]);
    snprintf(s, n,
             "2xx %ld (%ld completed, %ld hung up by the client, %ld broken, %ld stream errors), 429 %ld, 503 %ld, "
             "other 4xx %ld, 5xx %ld, other %ld, connection errors %ld",
             c[TSR__C_2XX], c[TSR__C_OK], c[TSR__C_HUNG_UP], c[TSR__C_BROKEN], c[TSR__C_STREAM_ERR], c[TSR__C_429],
             c[TSR__C_503], c[TSR__C_4XX], c[TSR__C_5XX], c[TSR__C_OTHER], c[TSR__C_CONN]);
}

static cJSON *tsr__bs_pcts(double *v, size_t n, double scale) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "p50", scale * tsr__bs_pct(v, n, 0.5));
    cJSON_AddNumberToObject(o, "p99", scale * tsr__bs_pct(v, n, 0.99));
    return o;
}

/* --json FILE: the configuration, the counts and the figures, for scripts (ci/soak.sh) */
static bool tsr__bs_write_json(const char *path, tsr__bs *b, int64_t conc, double duration, double wall,
                               double *ttft, double *e2e, size_t n_ok) {
    cJSON *j = cJSON_CreateObject(), *c = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "server", b->host);
    cJSON_AddStringToObject(j, "port", b->port);
    cJSON_AddNumberToObject(j, "concurrency", (double)conc);
    cJSON_AddNumberToObject(j, "prompt_len", (double)b->prompt_len);
    cJSON_AddNumberToObject(j, "max_tokens", (double)b->max_tokens);
    cJSON_AddNumberToObject(j, "duration_s", duration);
    cJSON_AddNumberToObject(j, "disconnect_fraction", b->disconnect_fraction);
    cJSON_AddNumberToObject(j, "wall_s", wall);
    cJSON_AddNumberToObject(j, "requests", (double)atomic_load(&b->finished));
    for (int i = 0; i < TSR__C_N; i++) cJSON_AddNumberToObject(c, tsr__bs_names[i], (double)atomic_load(&b->count[i]));
    cJSON_AddItemToObject(j, "counts", c);
    double out = (double)atomic_load(&b->out_tokens);
    cJSON_AddNumberToObject(j, "requests_per_s", (double)n_ok / wall);
    cJSON_AddNumberToObject(j, "output_tok_per_s", out / wall);
    cJSON_AddNumberToObject(j, "output_tokens", out);
    cJSON_AddItemToObject(j, "ttft_ms", tsr__bs_pcts(ttft, n_ok, 1e3));
    cJSON_AddItemToObject(j, "itl_ms", tsr__bs_pcts(b->itl, b->n_itl, 1e3));
    cJSON_AddItemToObject(j, "latency_s", tsr__bs_pcts(e2e, n_ok, 1));
    cJSON_AddStringToObject(j, "first_error", b->first_error);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = s ? fopen(path, "w") : NULL;
    bool ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    free(s);
    return ok;
}

int tsr_bench_serve(int argc, char **argv) {
    const char *url = NULL, *key = NULL, *backend = NULL, *log_path = NULL, *json_path = NULL;
    int64_t conc = 32, n_req = 0, prompt_len = 128, max_tokens = 64, threads = 0;
    double wait_s = -1, duration = 0, disconnect = 0;
    const tsr_opt opts[] = {
        {"--url", TSR_OPT_STR, &url, "URL", "benchmark a running server (http://host:port); default: start one"},
        {"--concurrency", TSR_OPT_INT, &conc, "C", "concurrent streaming clients (default 32)"},
        {"--requests", TSR_OPT_INT, &n_req, "N", "requests in all (default 2 x concurrency)"},
        {"--duration", TSR_OPT_FLOAT, &duration, "S", "run for S seconds instead of a request count (a soak)"},
        {"--disconnect-fraction", TSR_OPT_FLOAT, &disconnect, "F",
         "that fraction of requests hang up at a random point of their stream (default 0)"},
        {"--prompt-len", TSR_OPT_INT, &prompt_len, "P", "prompt tokens per request (default 128)"},
        {"--max-tokens", TSR_OPT_INT, &max_tokens, "T", "output tokens per request (ignore_eos; default 64)"},
        {"--api-key", TSR_OPT_STR, &key, "KEY", "send 'Authorization: Bearer KEY'"},
        {"--json", TSR_OPT_STR, &json_path, "FILE", "also write the counts and figures to FILE as JSON"},
        {"--backend", TSR_OPT_STR, &backend, "B", "started server: auto | cpu | cuda (default auto)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "started server: CPU backend threads (default: all cores)"},
        {"--wait", TSR_OPT_FLOAT, &wait_s, "S", "wait up to S s for /health (default 10 with --url, 600 otherwise)"},
        {"--server-log", TSR_OPT_STR, &log_path, "FILE", "started server: its output (default: discarded)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench serve [MODEL] [--url URL] [--concurrency C] [--requests N | --duration S] "
                           "[--disconnect-fraction F] [--prompt-len P] [--max-tokens T] [--json FILE]",
                           "Serving benchmark: C concurrent streaming clients over HTTP against `tessera serve`\n"
                           "(started here on a free port unless --url is given).  Reports requests/s, output tok/s,\n"
                           "p50/p99 time to first token and p50/p99 inter-token latency, and counts the answers by\n"
                           "status (2xx, 429, 503, other 4xx, 5xx, connection errors).  A refused client (429, 503,\n"
                           "no connection) waits 50 ms before its next request.  Exit status 0 when some request\n"
                           "completed and none failed (429 and 503 are load shedding, not failures).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (n_req && duration > 0) {
        tsr_cli_err("tessera bench serve: give --requests or --duration, not both\n");
        return 1;
    }
    if (!n_req) n_req = duration > 0 ? INT64_MAX : 2 * conc;
    if (conc < 1 || conc > 4096 || n_req < 1 || prompt_len < 1 || prompt_len > 1 << 20 || max_tokens < 1 ||
        max_tokens > 1 << 20 || !(duration >= 0 && duration <= 1e7) || !(disconnect >= 0 && disconnect <= 1)) {
        tsr_cli_err("tessera bench serve: need 1 <= --concurrency <= 4096, --requests >= 1, --prompt-len >= 1, "
                        "--max-tokens >= 1, --duration >= 0, 0 <= --disconnect-fraction <= 1\n");
        return 1;
    }
    char host[256] = "127.0.0.1", port[16];
    pid_t child = -1;
    if (url) {
        if (strncmp(url, "http://", 7)) {
            tsr_cli_err("tessera bench serve: --url must be http://host:port\n");
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
            tsr_cli_err("tessera bench serve: no free port\n");
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
        tsr_cli_err("tessera bench serve: the server at %s:%s did not answer /health%s\n", host, port,
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
    /* warm-up: one short request that runs to the end (first-touch of weights and KV pages is
     * not what we measure) */
    b.n_requests = 1;
    tsr__bs_worker(&b);
    if (atomic_load(&b.count[TSR__C_OK]) != 1) {
        tsr_cli_err("tessera bench serve: warm-up request failed: %s\n", b.first_error);
        if (child > 0) kill(child, SIGKILL), waitpid(child, NULL, 0);
        return 1;
    }
    for (int i = 0; i < TSR__C_N; i++) atomic_store(&b.count[i], 0);
    atomic_store(&b.out_tokens, 0);
    b.n_lat = b.n_itl = 0;
    atomic_store(&b.next, 1);   /* request 0 was the warm-up */
    atomic_store(&b.started, 0);
    atomic_store(&b.finished, 0);
    b.n_requests = n_req == INT64_MAX ? LONG_MAX : (long)n_req + 1;
    b.disconnect_fraction = disconnect;

    if (duration > 0)
        printf("bench serve: %s:%s, %lld clients for %.0f s, prompt %lld tokens, output %lld tokens, %.0f%% hang up\n",
               host, port, (long long)conc, duration, (long long)prompt_len, (long long)max_tokens, 100 * disconnect);
    else
        printf("bench serve: %s:%s, %lld clients, %lld requests, prompt %lld tokens, output %lld tokens\n", host, port,
               (long long)conc, (long long)n_req, (long long)prompt_len, (long long)max_tokens);
    fflush(stdout);
    int nt = (int)(duration > 0 || conc < n_req ? conc : n_req);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    double steps0[3], steps1[3];
    bool have_steps = tsr__bs_step_counters(&b, steps0);
    double t0 = tsr_now(), every = duration >= 100 ? 10 : duration >= 20 ? 5 : 1, next_line = t0 + every;
    if (duration > 0) b.deadline = t0 + duration;
    for (int i = 0; i < nt; i++) pthread_create(&th[i], NULL, tsr__bs_worker, &b);
    long shown = -1;
    char line[512];
    for (;;) {
        long d = atomic_load(&b.finished), s = atomic_load(&b.started);
        double now = tsr_now();
        bool over = duration > 0 ? now >= b.deadline && d == s : d >= n_req;
        if (over) break;
        if (duration <= 0) {
            if (d != shown) tsr_progress("requests", d, n_req);   /* a line per change off a tty */
            shown = d;
        } else if (now >= next_line) {
            tsr__bs_counts_line(&b, line, sizeof line);
            fprintf(stderr, "soak %4.0f/%.0f s: %ld answered, %ld in flight: %s\n", now - t0, duration, d, s - d, line);
            next_line += every;
        }
        usleep(100 * 1000);
    }
    if (duration <= 0) tsr_progress("requests", n_req, n_req);
    for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
    double wall = tsr_now() - t0;
    free(th);

    long c[TSR__C_N], total = atomic_load(&b.finished);
    for (int i = 0; i < TSR__C_N; i++) c[i] = atomic_load(&b.count[i]);
    long failed = c[TSR__C_4XX] + c[TSR__C_5XX] + c[TSR__C_OTHER] + c[TSR__C_CONN] + c[TSR__C_BROKEN] +
                  c[TSR__C_STREAM_ERR];
    size_t ok = b.n_lat / 2;
    long long out = atomic_load(&b.out_tokens);
    double *ttft = malloc(sizeof(double) * (ok + 1)), *e2e = malloc(sizeof(double) * (ok + 1));
    if (!ttft || !e2e) return 1;
    for (size_t i = 0; i < ok; i++) ttft[i] = b.lat[2 * i], e2e[i] = b.lat[2 * i + 1];
    qsort(ttft, ok, sizeof(double), tsr__bs_cmp);
    qsort(e2e, ok, sizeof(double), tsr__bs_cmp);
    qsort(b.itl, b.n_itl, sizeof(double), tsr__bs_cmp);
    printf("completed:        %zu / %ld requests in %.2f s (%ld hung up by the client, %ld refused with 429/503, "
           "%ld failed)\n",
           ok, total, wall, c[TSR__C_HUNG_UP], c[TSR__C_429] + c[TSR__C_503], failed);
    tsr__bs_counts_line(&b, line, sizeof line);
    printf("answers:          %s\n", line);
    printf("requests/s:       %.3f\n", (double)ok / wall);
    printf("output tok/s:     %.1f   (%lld tokens)\n", (double)out / wall, out);
    printf("input tok/s:      %.1f\n", (double)ok * (double)prompt_len / wall);
    printf("TTFT p50 / p99:   %.1f / %.1f ms\n", 1e3 * tsr__bs_pct(ttft, ok, 0.5), 1e3 * tsr__bs_pct(ttft, ok, 0.99));
    printf("ITL  p50 / p99:   %.1f / %.1f ms   (%zu gaps)\n", 1e3 * tsr__bs_pct(b.itl, b.n_itl, 0.5),
           1e3 * tsr__bs_pct(b.itl, b.n_itl, 0.99), b.n_itl);
    printf("latency p50 / p99: %.2f / %.2f s per request\n", tsr__bs_pct(e2e, ok, 0.5), tsr__bs_pct(e2e, ok, 0.99));
    if (have_steps && tsr__bs_step_counters(&b, steps1) && steps1[0] > steps0[0]) {
        /* busy: inside the forward pass and sampling; the rest of each step is the engine's own */
        const double n = steps1[0] - steps0[0], busy = steps1[1] - steps0[1], sw = steps1[2] - steps0[2];
        printf("engine steps:     %.0f, busy %.2f / wall %.2f ms per step (%.1f%% busy, overhead %.3f ms per step)\n", n,
               1e3 * busy / n, 1e3 * sw / n, sw > 0 ? 100 * busy / sw : 0, 1e3 * (sw - busy) / n);
    }
    if (b.first_error[0]) printf("first error: %s\n", b.first_error);
    fflush(stdout);
    bool json_ok = !json_path || tsr__bs_write_json(json_path, &b, conc, duration, wall, ttft, e2e, ok);
    if (!json_ok) tsr_cli_err("tessera bench serve: cannot write %s\n", json_path);
    free(ttft);
    free(e2e);
    free(b.itl);
    free(b.lat);
    pthread_mutex_destroy(&b.mu);
    if (child > 0) {
        kill(child, SIGTERM);
        int st = 0;
        waitpid(child, &st, 0);
    }
    return ok > 0 && failed == 0 && json_ok ? 0 : 1;
}
