/* The server's loop (tsr_server_run): it owns the server state (srv.h), binds the HTTP and
 * gRPC listeners and hands their connections to http.c and grpc.c, wires the engine's event
 * queue to call.c, and drains on SIGTERM/SIGINT.  The arrows go down from here: the halves and
 * the call bridge never call back into this file. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/frontend/grpc.h"
#include "coordinator/frontend/http.h"
#include "coordinator/frontend/server.h"

void tsr_server_config_default(tsr_server_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 23333;
    c->grpc_port = 23334;
    c->max_body_bytes = 8 << 20;
    c->max_header_bytes = 16 << 10;
    c->read_timeout_s = 30;
    c->idle_timeout_s = 60;
    c->max_connections = 1024;
    c->max_unsent_bytes = 4 << 20;
    c->max_held_bytes = (int64_t)256 << 20;
    c->max_running = 64;
    c->max_queue = 1024;
}

/* ---------------------------------------------------------------- life cycle */

static void tsr__on_signal(uv_signal_t *sig, int signum) {
    tsr__srv *s = sig->data;
    if (s->draining) {
        TSR_LOGW("second signal: exiting now");
        uv_stop(s->loop);
        return;
    }
    TSR_LOGI("%s: no longer admitting requests; finishing %lld running", signum == SIGTERM ? "SIGTERM" : "SIGINT",
             (long long)s->live_calls);
    s->draining = true;
    tsr__call_drain_check(s);
}

/* what: "" (HTTP) or " for gRPC", for the message */
static tsr_status tsr__listen(tsr__srv *s, uv_tcp_t *t, int port, uv_connection_cb cb, const char *what) {
    struct sockaddr_storage addr;
    if (uv_ip4_addr(s->cfg.host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(s->cfg.host, port, (struct sockaddr_in6 *)&addr) != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--server-name '%s' is not an IPv4 or IPv6 address", s->cfg.host);
    uv_tcp_init(s->loop, t);
    t->data = s;
    int r = uv_tcp_bind(t, (const struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)t, 511, cb);
    if (r != 0) return tsr_errorf(TSR_ERR_IO, "cannot listen%s on %s:%d: %s", what, s->cfg.host, port, uv_strerror(r));
    return TSR_OK;
}

static void tsr__walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);   /* at exit: what the connection lists did not close */
}

tsr_status tsr_server_run(tsr_engine *e, const tsr_server_config *cfg) {
    signal(SIGPIPE, SIG_IGN);
    tsr__srv *s = calloc(1, sizeof *s);
    if (!s) return tsr_errorf(TSR_ERR_OOM, "server state");
    s->engine = e;
    s->cfg = *cfg;
    s->model = cfg->model_name ? cfg->model_name : tsr_engine_model_name(e);
    if (!s->model) s->model = "default";
    s->loop = uv_default_loop();
    pthread_mutex_init(&s->mu, NULL);
    tsr__fe_metrics_init(&s->metrics);
    uv_async_init(s->loop, &s->async, tsr__call_on_async);
    s->async.data = s;
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    s->http_route = tsr__http_route;
    s->grpc_headers = tsr__grpc_service_headers;
    s->grpc_handle = tsr__grpc_service_handle;
    s->grpc_message = tsr__grpc_reflection_message;
    tsr_status st = tsr__listen(s, &s->http_listener, cfg->port, tsr__http_on_connection, "");
    if (st == TSR_OK && cfg->grpc_port > 0) {
        st = tsr__listen(s, &s->grpc_listener, cfg->grpc_port, tsr__grpc_on_connection, " for gRPC");
        s->grpc_on = st == TSR_OK;
    }
    if (st == TSR_OK) {
        uv_signal_init(s->loop, &s->sigterm);
        uv_signal_init(s->loop, &s->sigint);
        s->sigterm.data = s->sigint.data = s;
        uv_signal_start(&s->sigterm, tsr__on_signal, SIGTERM);
        uv_signal_start(&s->sigint, tsr__on_signal, SIGINT);
        const char *shown = strchr(cfg->host, ':') ? "[%s]" : "%s";
        char host[128];
        snprintf(host, sizeof host, shown, cfg->host);
        fprintf(stderr,
                "tessera serve: model '%s' ready\n"
                "  web chat:   http://%s:%d/\n"
                "  OpenAI API: http://%s:%d/v1  (e.g. OpenAI(base_url=\"http://%s:%d/v1\", api_key=\"%s\"))\n",
                s->model, host, cfg->port, host, cfg->port, host, cfg->port, cfg->n_api_keys ? "KEY" : "none");
        if (s->grpc_on) fprintf(stderr, "  gRPC:       %s:%d  (tessera.v1.Tessera, proto/tessera.proto)\n", host, cfg->grpc_port);
        fflush(stderr);
        uv_run(s->loop, UV_RUN_DEFAULT);
        TSR_LOGI("server stopped");
    }
    /* close every handle (connections included) and let the callbacks run */
    if (s->grpc_on) tsr__grpc_close(s);
    tsr__http_close_all(s);
    uv_walk(s->loop, tsr__walk_close, NULL);
    uv_run(s->loop, UV_RUN_DEFAULT);
    tsr__call_queue_close(s);
    uv_loop_close(s->loop);
    /* With calls still running (a second signal), the engine may still call back until it is
     * closed: s stays allocated (marked dead) rather than freed under it. */
    if (s->live_calls == 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return st;
}
