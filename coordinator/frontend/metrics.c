/* /metrics: Prometheus text exposition (format 0.0.4).  Counters and histograms are owned by
 * the loop thread (fed from the engine's DONE events after they are marshalled there), gauges
 * come from tsr_engine_get_stats at scrape time. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/fe.h"

static const double tsr__ttft_bounds[TSR__FE_HIST_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75,
                                                              1, 2.5, 5, 10, 20, 40, 80};
static const double tsr__tpot_bounds[TSR__FE_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05,
                                                              0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5};
static const double tsr__e2e_bounds[TSR__FE_HIST_BUCKETS] = {0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240,
                                                             480, 960};

void tsr__fe_metrics_init(tsr__fe_metrics *m) {
    memset(m, 0, sizeof *m);
    m->ttft.bounds = tsr__ttft_bounds;
    m->tpot.bounds = tsr__tpot_bounds;
    m->e2e.bounds = tsr__e2e_bounds;
}

void tsr__fe_hist_add(tsr__fe_hist *h, double v) {
    int b = 0;
    while (b < TSR__FE_HIST_BUCKETS && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

typedef struct {
    char *s;
    size_t n, cap;
} tsr__buf;

static void tsr__bp(tsr__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tsr__bp(tsr__buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *s = realloc(b->s, cap);
        if (!s) return;
        b->s = s;
        b->cap = cap;
    }
}

static void tsr__hist(tsr__buf *b, const char *name, const char *help, const tsr__fe_hist *h) {
    tsr__bp(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    int64_t cum = 0;
    for (int i = 0; i < TSR__FE_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        tsr__bp(b, "%s_bucket{le=\"%g\"} %lld\n", name, h->bounds[i], (long long)cum);
    }
    cum += h->counts[TSR__FE_HIST_BUCKETS];
    tsr__bp(b, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name, (long long)cum, name, h->sum,
            name, (long long)h->n);
}

static void tsr__gauge(tsr__buf *b, const char *kind, const char *name, const char *help, long long v) {
    tsr__bp(b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, kind, name, v);
}

char *tsr__fe_metrics_render(const tsr__fe_metrics *m, const tsr_engine_stats *s, int64_t connections,
                             bool draining) {
    static const char *kinds[4] = {"chat", "completion", "interactive", "grpc"};
    static const char *fin[6] = {"none", "stop", "length", "cancelled", "error", "other"};
    tsr__buf b = {0};
    tsr__bp(&b, "# HELP tessera_requests_total Requests finished, by API and finish reason.\n"
                "# TYPE tessera_requests_total counter\n");
    for (int k = 0; k < 4; k++)
        for (int f = 1; f < 6; f++)
            tsr__bp(&b, "tessera_requests_total{api=\"%s\",finish_reason=\"%s\"} %lld\n", kinds[k], fin[f],
                    (long long)m->requests[k][f]);
    tsr__gauge(&b, "counter", "tessera_http_errors_total", "Requests answered with an error status.", (long long)m->http_errors);
    tsr__gauge(&b, "counter", "tessera_slow_client_drops_total",
               "Streams dropped because the client did not read (--max-unsent-bytes).", (long long)m->slow_client_drops);
    tsr__gauge(&b, "counter", "tessera_connections_refused_total",
               "Connections refused past --max-connections.", (long long)m->connections_refused);
    tsr__gauge(&b, "counter", "tessera_queue_refused_total", "Requests answered 429 past --max-queue.",
               (long long)m->queue_refused);
    tsr__gauge(&b, "counter", "tessera_origin_refused_total", "Requests refused for their Origin (403).",
               (long long)m->origin_refused);
    tsr__gauge(&b, "counter", "tessera_held_refused_total",
               "Connections closed because the server held --max-held-bytes of requests.", (long long)m->held_refused);
    tsr__gauge(&b, "gauge", "tessera_held_request_bytes", "Request bytes held (unparsed or bodies), all connections.",
               (long long)m->held_bytes);
    tsr__gauge(&b, "counter", "tessera_prompt_tokens_total", "Prompt tokens of finished requests.", (long long)m->prompt_tokens);
    tsr__gauge(&b, "counter", "tessera_generation_tokens_total", "Generated tokens of finished requests.",
               (long long)m->completion_tokens);
    tsr__gauge(&b, "counter", "tessera_prompt_cached_tokens_total", "Prompt tokens served from the prefix cache or a session.",
               (long long)m->cached_tokens);
    tsr__hist(&b, "tessera_time_to_first_token_seconds", "Time from submission to the first generated token.", &m->ttft);
    tsr__hist(&b, "tessera_time_per_output_token_seconds", "Mean time between generated tokens, per request.", &m->tpot);
    tsr__hist(&b, "tessera_e2e_request_latency_seconds", "Time from submission to the end of a request.", &m->e2e);
    tsr__gauge(&b, "gauge", "tessera_requests_running", "Sequences in the running batch.", (long long)s->running);
    tsr__gauge(&b, "gauge", "tessera_requests_waiting", "Requests waiting to be scheduled.", (long long)s->waiting);
    tsr__gauge(&b, "gauge", "tessera_kv_blocks_total", "KV cache blocks in the pool.", (long long)s->kv_blocks_total);
    tsr__gauge(&b, "gauge", "tessera_kv_blocks_used", "KV cache blocks held by sequences or sessions.", (long long)s->kv_blocks_used);
    tsr__gauge(&b, "gauge", "tessera_kv_blocks_free", "KV cache blocks free (including cached, reusable ones).",
               (long long)s->kv_blocks_free);
    tsr__gauge(&b, "gauge", "tessera_kv_blocks_cached", "Free KV blocks that still hold a prefix-cache entry.",
               (long long)s->kv_blocks_cached);
    tsr__gauge(&b, "counter", "tessera_prefix_cache_hit_tokens_total", "Prompt tokens found in the prefix cache.",
               (long long)s->prefix_hit_tokens);
    tsr__gauge(&b, "counter", "tessera_prefix_cache_query_tokens_total", "Prompt tokens looked up in the prefix cache.",
               (long long)s->prefix_query_tokens);
    tsr__gauge(&b, "counter", "tessera_preemptions_total", "Sequences preempted for lack of KV blocks.", (long long)s->preemptions_total);
    tsr__gauge(&b, "gauge", "tessera_sessions", "Interactive sessions holding KV.", (long long)s->sessions);
    tsr__gauge(&b, "counter", "tessera_engine_steps_total", "Engine steps run.", (long long)s->steps);
    /* busy vs wall per step: the engine's own overhead is wall - busy */
    tsr__bp(&b, "# HELP tessera_step_busy_seconds_total Time of engine steps inside the forward pass and sampling.\n"
                "# TYPE tessera_step_busy_seconds_total counter\ntessera_step_busy_seconds_total %.6f\n", s->step_busy_s);
    tsr__bp(&b, "# HELP tessera_step_wall_seconds_total Wall time of engine steps (inbox, plan, forward, sampling, "
                "outputs).\n# TYPE tessera_step_wall_seconds_total counter\ntessera_step_wall_seconds_total %.6f\n",
            s->step_wall_s);
    tsr__gauge(&b, "gauge", "tessera_connections", "Open client connections (HTTP and gRPC).", (long long)connections);
    tsr__gauge(&b, "gauge", "tessera_draining", "1 after SIGTERM: new requests are refused.", draining ? 1 : 0);
    return b.s;
}
