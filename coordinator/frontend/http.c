/* The HTTP/1.1 half's connections: accepting, reading (bytes go to http_conn.c's parser, one
 * request at a time), the timers, and writing answers -- whole responses and the chunked
 * streams that carry server-sent events and TurboMind's JSON lines.  What a request means is
 * http_routes.c's business, reached through srv->http_route (set by the loop), so this file
 * does not depend on the routes that use it.  Everything runs on the loop thread.
 *
 * Limits that keep bad clients from hurting the server: a request must arrive within
 * read_timeout_s of its first byte (slow-loris), idle keep-alive connections close after
 * idle_timeout_s, headers and bodies are bounded (431 / 413 / 414, parsed in http_conn.c), and
 * while a request is being answered the connection's further bytes are held rather than parsed
 * (reading stops past one request's worth; all connections together hold at most
 * max_held_bytes).  Pipelined requests are answered from a loop, a burst per loop turn.  Past
 * max_connections a connection gets one 503. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/ioctl.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "common/log.h"
#include "coordinator/frontend/http.h"

/* ---------------------------------------------------------------- closing and writing */

static void tsr__conn_handle_closed(uv_handle_t *h) {
    tsr__conn *c = h->data;
    if (--c->handles_open == 0) {
        if (c->prev) c->prev->next = c->next;
        else c->srv->http_conns = c->next;
        if (c->next) c->next->prev = c->prev;
        c->srv->connections--;
        tsr__http_in_free(&c->in);
        free(c);
    }
}

static void tsr__conn_account(tsr__conn *c);

void tsr__http_close(tsr__conn *c) {
    if (c->closing) return;
    c->closing = true;
    if (c->call) {
        tsr__call_detach(c->call);   /* a client gone mid-answer cancels its requests */
        c->call = NULL;
    }
    tsr__conn_account(c);   /* closing: its held bytes no longer count */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, tsr__conn_handle_closed);
    uv_close((uv_handle_t *)&c->resume, tsr__conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, tsr__conn_handle_closed);
}

/* Lingering close (as web servers do after an answer that ends the connection): closing a
 * socket whose receive queue still holds unread bytes (a pipelined flood, a body we refused)
 * makes the kernel send a reset, which can destroy the answer before the client reads it.  So
 * the server half-closes (FIN after the answer), reads and discards what still comes, and
 * closes at the client's EOF or after TSR__LINGER_MS, whichever is first.  Bounded: the
 * connection still counts against --max-connections meanwhile and holds no bytes. */
#define TSR__LINGER_MS 2000

static void tsr__on_linger_timer(uv_timer_t *t) { tsr__http_close(t->data); }

static void tsr__on_shutdown(uv_shutdown_t *req, int status) {
    tsr__conn *c = req->data;
    if (status < 0) tsr__http_close(c);
}

static void tsr__on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

static void tsr__http_linger(tsr__conn *c) {
    if (c->closing || c->lingering) return;
    c->lingering = true;
    if (c->call) {
        tsr__call_detach(c->call);
        c->call = NULL;
    }
    uv_idle_stop(&c->resume);
    tsr__conn_account(c);   /* lingering: its held bytes no longer count */
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, tsr__on_shutdown) < 0) {
        tsr__http_close(c);
        return;
    }
    if (!c->reading) uv_read_start((uv_stream_t *)&c->tcp, tsr__srv_alloc, tsr__on_read);
    c->reading = true;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, tsr__on_linger_timer, TSR__LINGER_MS, 0);
}

void tsr__http_close_all(tsr__srv *s) {
    for (tsr__conn *c = s->http_conns; c; c = c->next) tsr__http_close(c);
}

typedef struct {
    uv_write_t req;
    tsr__conn *conn;
    size_t len;
    char data[];
} tsr__wreq;

static void tsr__on_write(uv_write_t *w, int status) {
    tsr__wreq *r = (tsr__wreq *)w;
    tsr__conn *c = r->conn;
    c->unsent -= r->len;
    free(r);
    c->writes_pending--;
    if (status < 0) {
        tsr__http_close(c);
    } else if (c->close_after_writes && c->writes_pending == 0) {
        tsr__http_linger(c);
    }
    /* the connection struct lives until its handles close, which waits for the writes */
}

static void tsr__conn_write(tsr__conn *c, const char *data, size_t len) {
    if (c->closing || !len) return;
    tsr__wreq *r = malloc(sizeof *r + len);
    if (!r) {
        tsr__http_close(c);
        return;
    }
    memcpy(r->data, data, len);
    r->conn = c;
    r->len = len;
    uv_buf_t b = uv_buf_init(r->data, (unsigned)len);
    c->writes_pending++;
    c->unsent += len;
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, tsr__on_write) < 0) {
        c->unsent -= len;
        free(r);
        c->writes_pending--;
        tsr__http_close(c);
    }
}

/* ---------------------------------------------------------------- answers */

static const char *tsr__reason(int status) {
    switch (status) {
    /* RFC 9110 / 6585 reason phrases for every status this server sends */
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

static void tsr__conn_request_done(tsr__conn *c);

/* A whole response with a body. */
void tsr__http_respond(tsr__conn *c, int status, const char *ctype, const char *body, size_t len,
                       const char *extra_headers) {
    char head[1536];
    bool close = !c->in.keep_alive || c->in.reject || c->srv->draining;
    int k = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s\r\n", status,
                     tsr__reason(status), ctype, len, close ? "Connection: close\r\n" : "",
                     status == 429 || status == 503 ? "Retry-After: 1\r\n" : "", c->cors,
                     extra_headers ? extra_headers : "");
    if (k < 0 || (size_t)k >= sizeof head) k = 0;
    if (status >= 400) c->srv->metrics.http_errors++;
    tsr__conn_write(c, head, (size_t)k);
    if (!c->in.head) tsr__conn_write(c, body, len);   /* Content-Length still says what GET would get */
    if (close) {
        c->in.keep_alive = false;
        c->close_after_writes = true;
        if (c->writes_pending == 0) tsr__http_linger(c);
    }
    tsr__conn_request_done(c);
}

void tsr__http_respond_json(tsr__conn *c, int status, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    tsr__http_respond(c, status, "application/json", s ? s : "{}", s ? strlen(s) : 2, NULL);
    free(s);
}

void tsr__http_respond_error(tsr__conn *c, const tsr__fe_error *e) {
    char *s = tsr__fe_error_json(e);
    tsr__http_respond(c, e->status, "application/json", s, strlen(s),
                      e->status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
    free(s);
}

void tsr__http_error(tsr__conn *c, int status, const char *type, const char *param, const char *code,
                     const char *msg) {
    tsr__fe_error e;
    tsr__fe_seterr(&e, status, type, param, code, "%s", msg);
    tsr__http_respond_error(c, &e);
}

/* chunked transfer for streams */
void tsr__http_chunk(tsr__conn *c, const char *data, size_t len) {
    if (!len) return;
    char head[32];
    int k = snprintf(head, sizeof head, "%zx\r\n", len);
    size_t total = (size_t)k + len + 2;
    char *buf = malloc(total);
    if (!buf) return;
    memcpy(buf, head, (size_t)k);
    memcpy(buf + k, data, len);
    memcpy(buf + k + len, "\r\n", 2);
    tsr__conn_write(c, buf, total);
    free(buf);
}

void tsr__http_stream_begin(tsr__conn *c, const char *ctype) {
    char head[1280];
    int k = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n"
                     "Transfer-Encoding: chunked\r\n%s%s\r\n",
                     ctype, c->in.keep_alive && !c->srv->draining ? "" : "Connection: close\r\n", c->cors);
    tsr__conn_write(c, head, (size_t)k);
    c->stream_started = true;
}

void tsr__http_sse(tsr__conn *c, cJSON *j) {
    size_t l = 0;
    char *buf = tsr__fe_sse(j, &l);
    cJSON_Delete(j);
    if (buf) tsr__http_chunk(c, buf, l);
    free(buf);
}

void tsr__http_stream_end(tsr__conn *c) {
    tsr__conn_write(c, "0\r\n\r\n", 5);
    if (!c->in.keep_alive || c->srv->draining) {
        c->in.keep_alive = false;
        c->close_after_writes = true;
        if (c->writes_pending == 0) tsr__http_linger(c);
    }
    tsr__conn_request_done(c);
}

/* One JSON object and a newline as a chunk of an interactive (TurboMind-style) stream; takes j. */
void tsr__http_json_line(tsr__conn *conn, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return;
    size_t l = strlen(s);
    s[l] = '\n'; /* over the NUL: the chunk is sent by length */
    tsr__http_chunk(conn, s, l + 1);
    free(s);
}

/* Bytes written and not yet taken by the client: queued in libuv plus, on Linux, still in the
 * kernel's send queue (not acknowledged), so the limit does not wait for socket buffers that
 * autotuning grows to megabytes. */
size_t tsr__http_unsent(tsr__conn *c) {
    size_t n = c->unsent;
#ifdef SIOCOUTQ
    uv_os_fd_t fd;
    int q = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0) n += (size_t)q;
#endif
    return n;
}

/* ---------------------------------------------------------------- reading and draining requests */

static void tsr__on_timer(uv_timer_t *t);

static void tsr__arm_timer(tsr__conn *c) {
    double s = c->in.in_request ? c->srv->cfg.read_timeout_s : c->srv->cfg.idle_timeout_s;
    uv_timer_stop(&c->timer);
    if (s > 0) uv_timer_start(&c->timer, tsr__on_timer, (uint64_t)(s * 1000), 0);
}

/* Keeps srv->held_bytes (every connection's unparsed bytes and bodies) in step with c. */
static void tsr__conn_account(tsr__conn *c) {
    size_t now = c->closing || c->lingering ? 0 : tsr__http_in_held(&c->in);
    c->srv->held_bytes += (int64_t)now - (int64_t)c->held;
    c->held = now;
}

static void tsr__on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

/* Reading stops while a connection holds more unparsed bytes than one request may have (its
 * pipelined requests wait for the answer in progress) and resumes once they are parsed. */
static void tsr__conn_flow(tsr__conn *c) {
    if (c->closing || c->lingering) return;
    size_t limit = (size_t)c->srv->cfg.max_header_bytes + (size_t)c->srv->cfg.max_body_bytes;
    bool want = tsr__http_in_unparsed(&c->in) < limit;
    if (want && !c->reading) uv_read_start((uv_stream_t *)&c->tcp, tsr__srv_alloc, tsr__on_read);
    else if (!want && c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = want;
}

static void tsr__on_resume(uv_idle_t *i);

/* Answers the complete requests held, in order, one at a time: a loop, never recursion (an
 * answer given at once comes back here through tsr__conn_request_done's flag).  At most
 * TSR__PIPELINE_BURST per loop turn, so one connection's pipeline cannot starve the others. */
#define TSR__PIPELINE_BURST 32
static void tsr__conn_pump(tsr__conn *c) {
    if (c->pumping) return;
    c->pumping = true;
    int budget = TSR__PIPELINE_BURST;
    while (!c->closing && !c->close_after_writes && !c->call && budget > 0) {
        int r = tsr__http_in_next(&c->in);
        if (c->in.send_continue) {   /* not before an error answer (413 on Content-Length) */
            c->in.send_continue = false;
            if (r != TSR__HTTP_ERROR) tsr__conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (r == TSR__HTTP_NEED_MORE) {
            if (c->in.in_request && c->in.started && !c->refused) {
                c->in.started = false;
                tsr__arm_timer(c);   /* the read timeout starts with the request's first byte */
            }
            break;
        }
        if (r == TSR__HTTP_ERROR) {
            char msg[200];
            const char *code = tsr__http_in_error(&c->in, msg, sizeof msg);
            tsr__http_error(c, c->in.reject, "invalid_request_error", NULL, code, msg);
            break;
        }
        c->in.started = false;
        uv_timer_stop(&c->timer);
        budget--;
        if (c->refused) {
            char msg[128];
            snprintf(msg, sizeof msg, "too many connections (--max-connections %lld); retry later",
                     (long long)c->srv->cfg.max_connections);
            c->in.keep_alive = false;
            tsr__http_error(c, 503, "server_error", NULL, "too_many_connections", msg);
            break;
        }
        c->srv->http_route(c);   /* answers now, or later from the engine's events */
    }
    c->pumping = false;
    if (c->closing || c->close_after_writes) return;
    tsr__conn_account(c);
    tsr__conn_flow(c);
    if (budget == 0 && !c->call && tsr__http_in_unparsed(&c->in)) uv_idle_start(&c->resume, tsr__on_resume);
}

static void tsr__on_resume(uv_idle_t *i) {
    tsr__conn *c = i->data;
    uv_idle_stop(i);
    tsr__conn_pump(c);
}

/* After an answer: the next pipelined request is taken by the pump (on the next loop turn when
 * the answer came from an engine event), or the idle timeout runs. */
static void tsr__conn_request_done(tsr__conn *c) {
    tsr__http_in_done(&c->in);
    c->cors[0] = 0;
    if (c->closing || !c->in.keep_alive) return;
    tsr__arm_timer(c);
    if (!c->pumping && tsr__http_in_unparsed(&c->in)) uv_idle_start(&c->resume, tsr__on_resume);
}

static void tsr__on_timer(uv_timer_t *t) {
    tsr__conn *c = t->data;
    if (c->call || c->closing) return;
    if (c->refused) return tsr__http_close(c);
    if (c->in.in_request) {
        c->in.keep_alive = false;
        c->in.reject = 408;
        tsr__http_error(c, 408, "invalid_request_error", NULL, "request_timeout",
                        "the request did not arrive in time (--read-timeout)");
    } else {
        tsr__http_close(c);
    }
}

static void tsr__on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    tsr__conn *c = st->data;
    if (n < 0) {
        free(b->base);
        tsr__http_close(c);   /* EOF or reset: a streaming answer's requests are cancelled */
        return;
    }
    if (c->lingering) {   /* half-closed after the last answer: discard until EOF */
        free(b->base);
        return;
    }
    if (n == 0 || c->closing || c->close_after_writes) {   /* nothing more is read once closing */
        free(b->base);
        return;
    }
    tsr__srv *s = c->srv;
    if (s->held_bytes + n > s->cfg.max_held_bytes) {
        /* every connection's held bytes together are bounded too (--max-held-bytes) */
        free(b->base);
        s->metrics.held_refused++;
        TSR_LOGW("closing a connection: the server holds %lld request bytes (--max-held-bytes %lld)",
                 (long long)s->held_bytes, (long long)s->cfg.max_held_bytes);
        if (c->call || c->in.in_request) return tsr__http_close(c);
        c->in.keep_alive = false;
        return tsr__http_error(c, 503, "server_error", NULL, "server_busy",
                               "the server holds too many request bytes; retry later");
    }
    bool ok = tsr__http_in_push(&c->in, b->base, (size_t)n);
    free(b->base);
    if (!ok) return tsr__http_close(c);
    tsr__conn_account(c);
    tsr__conn_pump(c);
}

void tsr__http_on_connection(uv_stream_t *server, int status) {
    tsr__srv *s = server->data;
    if (status < 0) return;
    tsr__conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    uv_idle_init(s->loop, &c->resume);
    c->tcp.data = c->timer.data = c->resume.data = c;
    c->handles_open = 3;
    c->next = s->http_conns;
    if (c->next) c->next->prev = c;
    s->http_conns = c;
    tsr__http_in_init(&c->in, s->cfg.max_header_bytes, s->cfg.max_body_bytes);
    s->connections++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        tsr__http_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->connections > s->cfg.max_connections) {
        /* Over the cap (HTTP and gRPC together): the first request is read, so that closing
         * does not reset the connection under the answer, and answered 503; a client that
         * sends nothing is closed after a second. */
        s->metrics.connections_refused++;
        c->refused = true;
        uv_timer_start(&c->timer, tsr__on_timer, 1000, 0);
    } else {
        tsr__arm_timer(c);
    }
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, tsr__srv_alloc, tsr__on_read);
}
