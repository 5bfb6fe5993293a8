/* The server's loop and its HTTP/1.1 half: connections parsed with http-parser (keep-alive,
 * chunked request bodies, pipelined requests answered in order), routing, authentication,
 * the OpenAI endpoints with server-sent events, TurboMind's /v1/chat/interactive, /health,
 * /metrics and the built-in web page.  Everything here runs on the libuv loop thread; the
 * engine's callback (its step thread) only copies an event into a queue and wakes the loop.
 *
 * Limits that keep bad clients from hurting the server: a request must arrive within
 * read_timeout_s of its first byte (slow-loris), idle keep-alive connections close after
 * idle_timeout_s, headers and bodies are bounded (431 / 413 / 414, parsed in http_conn.c), and
 * while a request is being answered the connection's further bytes are held rather than parsed
 * (reading stops past one request's worth; all connections together hold at most
 * max_held_bytes).  Pipelined requests are answered from a loop, a burst per loop turn.  Past
 * max_connections a connection gets one 503; past max_running + max_queue engine requests a
 * call gets 429; a stream whose client stops reading is dropped past max_unsent_bytes.  Host
 * and Origin are checked against the bound address, loopback names and the allowed lists. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>
#include <sys/ioctl.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "common/log.h"
#include "coordinator/frontend/http_conn.h"
#include "coordinator/frontend/srv.h"

/* the web page, embedded at build time (frontend.cmake) */
extern const unsigned char tsr__web_index_html[];
extern const size_t tsr__web_index_html_len;

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

/* ---------------------------------------------------------------- events from the engine */

struct tsr__evnode {
    tsr__evnode *next;
    tsr__choice *choice;
    tsr_engine_event ev;
    tsr_sample_result sample;
    char *text;
    char err[256];
};

static void tsr__engine_cb(void *user, const tsr_engine_event *ev) {
    tsr__choice *ch = user;
    tsr__srv *s = ch->call->srv;
    tsr__evnode *n = calloc(1, sizeof *n);
    char *text = malloc(ev->text_len + 1);
    if (!n || !text) {
        /* Losing a TOKEN event only loses text; a DONE must get through or the call leaks, so
         * it retries a smaller allocation (the node alone). */
        free(text);
        if (ev->type != TSR_EVENT_DONE) {
            free(n);
            return;
        }
        while (!n) n = calloc(1, sizeof *n);
        text = NULL;
    }
    n->choice = ch;
    n->ev = *ev;
    if (text) {
        memcpy(text, ev->text ? ev->text : "", ev->text_len);
        text[ev->text_len] = 0;
    }
    n->text = text;
    n->ev.text = text ? text : "";
    n->ev.text_len = text ? ev->text_len : 0;
    if (ev->sample) {
        n->sample = *ev->sample;
        n->ev.sample = &n->sample;
    }
    if (ev->error_message) snprintf(n->err, sizeof n->err, "%s", ev->error_message);
    n->ev.error_message = n->err;
    pthread_mutex_lock(&s->mu);
    if (s->dead) {   /* the loop is gone (forced exit): nobody will read it */
        pthread_mutex_unlock(&s->mu);
        free(n->text);
        free(n);
        return;
    }
    if (s->q_tail) s->q_tail->next = n; else s->q_head = n;
    s->q_tail = n;
    uv_async_send(&s->async);
    pthread_mutex_unlock(&s->mu);
}

static void tsr__call_free(tsr__call *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->ch[i].text);
        free(c->ch[i].ids);
        if (c->ch[i].logprobs) cJSON_Delete(c->ch[i].logprobs);
    }
    tsr__fe_params_free(&c->p);
    c->srv->live_calls--;
    free(c);
}

static void tsr__maybe_finish_drain(tsr__srv *s);

static void tsr__dispatch(tsr__evnode *n) {
    tsr__choice *ch = n->choice;
    tsr__call *c = ch->call;
    tsr__srv *s = c->srv;
    const tsr_engine_event *ev = &n->ev;
    if (ev->type == TSR_EVENT_TOKEN) {
        if (c->owner) {
            ch->completion_tokens++;
            c->ops->on_token(c, ch, ev);
        }
        return;
    }
    ch->done = true;
    ch->finish = ev->finish;
    ch->error = ev->error;
    snprintf(ch->error_message, sizeof ch->error_message, "%s", n->err);
    ch->prompt_tokens = ev->prompt_tokens;
    ch->cached_tokens = ev->cached_tokens;
    ch->completion_tokens = ev->completion_tokens;
    int f = ev->finish >= 1 && ev->finish <= 4 ? (int)ev->finish : 5;
    s->metrics.requests[c->api][f]++;
    s->metrics.prompt_tokens += ev->prompt_tokens;
    s->metrics.completion_tokens += ev->completion_tokens;
    s->metrics.cached_tokens += ev->cached_tokens;
    if (ev->completion_tokens > 0) {
        tsr__fe_hist_add(&s->metrics.ttft, ev->time_to_first_token_s);
        if (ev->completion_tokens > 1)
            tsr__fe_hist_add(&s->metrics.tpot,
                             (ev->total_s - ev->time_to_first_token_s) / (double)(ev->completion_tokens - 1));
    }
    tsr__fe_hist_add(&s->metrics.e2e, ev->total_s);
    c->outstanding--;
    s->inflight--;
    if (c->owner) {
        c->ops->on_done(c, ch, ev);
        if (c->outstanding == 0 && c->owner) c->ops->on_complete(c);
    }
    if (c->outstanding == 0 && !c->owner) {
        tsr__call_free(c);
        tsr__maybe_finish_drain(s);
    }
}

static void tsr__on_async(uv_async_t *a) {
    tsr__srv *s = a->data;
    pthread_mutex_lock(&s->mu);
    tsr__evnode *n = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (n) {
        tsr__evnode *next = n->next;
        tsr__dispatch(n);
        free(n->text);
        free(n);
        n = next;
    }
}

tsr__call *tsr__call_new(tsr__srv *s, int api, tsr__fe_params *p, void *owner, const tsr__call_ops *ops) {
    tsr__call *c = calloc(1, sizeof *c);
    if (!c) {
        tsr__fe_params_free(p);
        return NULL;
    }
    c->srv = s;
    c->api = api;
    c->p = *p;
    memset(p, 0, sizeof *p);
    c->owner = owner;
    c->ops = ops;
    c->n = c->p.n > 0 ? c->p.n : 1;
    c->created = (long long)time(NULL);
    tsr__fe_make_id(api == 1 ? "cmpl" : "chatcmpl", c->id, sizeof c->id);
    for (int i = 0; i < c->n; i++) {
        c->ch[i].call = c;
        c->ch[i].index = i;
    }
    s->live_calls++;
    return c;
}

bool tsr__call_submit(tsr__call *c, tsr__fe_error *err) {
    tsr__srv *s = c->srv;
    if (s->inflight + c->n > s->cfg.max_running + s->cfg.max_queue) {
        /* a bounded queue: what it cannot hold is told to come back (429 + Retry-After) */
        s->metrics.queue_refused++;
        tsr__fe_seterr(err, 429, "rate_limit_error", NULL, "queue_full",
                       "the server is at capacity (%lld running or waiting, --max-queue %lld); retry later",
                       (long long)s->inflight, (long long)s->cfg.max_queue);
        return false;
    }
    for (int i = 0; i < c->n; i++) {
        tsr_engine_request r;
        tsr__fe_to_engine(&c->p, i, &r);
        uint64_t rid = 0;
        tsr_status st = tsr_engine_submit(c->srv->engine, &r, tsr__engine_cb, &c->ch[i], &rid);
        if (st != TSR_OK) {
            const char *m = tsr_last_error();
            const char *param = strstr(m, "max_tokens") || strstr(m, "max_new_tokens") ? "max_tokens"
                                : strstr(m, "session") || strstr(m, "prompt") ? (c->p.messages ? "messages" : "prompt")
                                                                              : NULL;
            if (st == TSR_ERR_INVALID_ARG || st == TSR_ERR_NOT_FOUND || st == TSR_ERR_UNSUPPORTED)
                tsr__fe_seterr(err, 400, "invalid_request_error", param,
                               strstr(m, "session") || strstr(m, "long") ? "context_length_exceeded" : "invalid_value",
                               "%s", m);
            else
                tsr__fe_seterr(err, 503, "server_error", NULL, "engine_unavailable", "%s", m);
            return false;
        }
        c->ch[i].rid = rid;
        c->ch[i].submitted = true;
        c->outstanding++;
        s->inflight++;
    }
    return true;
}

void tsr__call_detach(tsr__call *c) {
    c->owner = NULL;
    for (int i = 0; i < c->n; i++)
        if (c->ch[i].submitted && !c->ch[i].done) tsr_engine_cancel(c->srv->engine, c->ch[i].rid);
    if (c->outstanding == 0) {
        tsr__srv *s = c->srv;
        tsr__call_free(c);
        tsr__maybe_finish_drain(s);
    }
}

char *tsr__srv_token_text(tsr__srv *s, int32_t id) {
    const tsr_tokenizer *tok = tsr_engine_tokenizer(s->engine);
    char *t = NULL;
    size_t len = 0;
    if (!tok || tsr_tokenizer_decode(tok, &id, 1, false, &t, &len) != TSR_OK) {
        char buf[32];
        snprintf(buf, sizeof buf, "<%d>", (int)id);
        return strdup(buf);
    }
    char *out = tsr__fe_utf8_sanitize(t, len);
    free(t);
    return out;
}

const char *tsr__srv_finish_str(tsr_finish_reason f) {
    switch (f) {
    case TSR_FINISH_LENGTH: return "length";
    case TSR_FINISH_CANCELLED: return "abort";
    case TSR_FINISH_ERROR: return "error";
    default: return "stop";
    }
}

/* ---------------------------------------------------------------- HTTP connections */

typedef struct tsr__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_idle_t resume;            /* continues draining pipelined requests on the next loop turn */
    tsr__srv *srv;
    tsr__http_in in;             /* the request being read and the bytes held after it */
    int handles_open;
    int writes_pending;
    size_t unsent;               /* bytes handed to uv_write and not yet written to the socket */
    size_t held;                 /* this connection's share of srv->held_bytes */
    bool closing, close_after_writes;
    bool pumping, reading;
    bool refused;                /* over --max-connections: its first request gets 503 */
    char cors[768];              /* CORS headers for the current request's answer ("" if none) */
    /* the answer */
    tsr__call *call;
    bool stream_started;
} tsr__conn;

static void tsr__conn_handle_closed(uv_handle_t *h) {
    tsr__conn *c = h->data;
    if (--c->handles_open == 0) {
        c->srv->connections--;
        tsr__http_in_free(&c->in);
        free(c);
    }
}

static void tsr__conn_account(tsr__conn *c);

static void tsr__conn_close(tsr__conn *c) {
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
        tsr__conn_close(c);
    } else if (c->close_after_writes && c->writes_pending == 0) {
        tsr__conn_close(c);
    }
    /* the connection struct lives until its handles close, which waits for the writes */
}

static void tsr__conn_write(tsr__conn *c, const char *data, size_t len) {
    if (c->closing || !len) return;
    tsr__wreq *r = malloc(sizeof *r + len);
    if (!r) {
        tsr__conn_close(c);
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
        tsr__conn_close(c);
    }
}

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
static void tsr__respond(tsr__conn *c, int status, const char *ctype, const char *body, size_t len,
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
        if (c->writes_pending == 0) tsr__conn_close(c);
    }
    tsr__conn_request_done(c);
}

static void tsr__respond_json(tsr__conn *c, int status, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    tsr__respond(c, status, "application/json", s ? s : "{}", s ? strlen(s) : 2, NULL);
    free(s);
}

static void tsr__respond_error(tsr__conn *c, const tsr__fe_error *e) {
    char *s = tsr__fe_error_json(e);
    tsr__respond(c, e->status, "application/json", s, strlen(s),
                 e->status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
    free(s);
}

static void tsr__error(tsr__conn *c, int status, const char *type, const char *param, const char *code,
                       const char *msg) {
    tsr__fe_error e;
    tsr__fe_seterr(&e, status, type, param, code, "%s", msg);
    tsr__respond_error(c, &e);
}

/* chunked transfer for streams */
static void tsr__chunk(tsr__conn *c, const char *data, size_t len) {
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

static void tsr__stream_begin(tsr__conn *c, const char *ctype) {
    char head[1280];
    int k = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n"
                     "Transfer-Encoding: chunked\r\n%s%s\r\n",
                     ctype, c->in.keep_alive && !c->srv->draining ? "" : "Connection: close\r\n", c->cors);
    tsr__conn_write(c, head, (size_t)k);
    c->stream_started = true;
}

static void tsr__sse(tsr__conn *c, cJSON *j) {
    size_t l = 0;
    char *buf = tsr__fe_sse(j, &l);
    cJSON_Delete(j);
    if (buf) tsr__chunk(c, buf, l);
    free(buf);
}

static void tsr__stream_end(tsr__conn *c) {
    tsr__conn_write(c, "0\r\n\r\n", 5);
    if (!c->in.keep_alive || c->srv->draining) {
        c->in.keep_alive = false;
        c->close_after_writes = true;
        if (c->writes_pending == 0) tsr__conn_close(c);
    }
    tsr__conn_request_done(c);
}

/* ---------------------------------------------------------------- OpenAI answers */

static void tsr__text_append(tsr__choice *ch, const char *t, size_t n) {
    if (ch->text_len + n + 1 > ch->text_cap) {
        size_t cap = (ch->text_cap ? ch->text_cap * 2 : 256) + n;
        char *x = realloc(ch->text, cap);
        if (!x) return;
        ch->text = x;
        ch->text_cap = cap;
    }
    memcpy(ch->text + ch->text_len, t, n);
    ch->text_len += n;
    ch->text[ch->text_len] = 0;
}

/* One token's logprob entry: chat shape {token, logprob, bytes, top_logprobs}. */
static cJSON *tsr__logprob_entry(tsr__srv *s, const tsr_sample_result *r, bool top_too) {
    cJSON *e = cJSON_CreateObject();
    char *t = tsr__srv_token_text(s, r->token);
    cJSON_AddStringToObject(e, "token", t ? t : "");
    cJSON_AddNumberToObject(e, "logprob", r->logprob);
    cJSON *bytes = cJSON_AddArrayToObject(e, "bytes");
    for (const unsigned char *p = (const unsigned char *)(t ? t : ""); *p; p++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber(*p));
    free(t);
    if (top_too) {
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int i = 0; i < r->n_top; i++) {
            tsr_sample_result one = {.token = r->top[i].id, .logprob = r->top[i].logprob};
            cJSON_AddItemToArray(top, tsr__logprob_entry(s, &one, false));
        }
    }
    return e;
}

static cJSON *tsr__usage(const tsr__call *c) {
    int64_t comp = 0;
    for (int i = 0; i < c->n; i++) comp += c->ch[i].completion_tokens;
    return tsr__fe_usage(c->ch[0].prompt_tokens, comp, c->ch[0].cached_tokens);
}

static tsr__fe_chunk_info tsr__chunk_info(const tsr__call *c) {
    tsr__fe_chunk_info ci = {c->id, c->srv->model, c->created, c->api != 1, c->p.include_usage};
    return ci;
}

/* One JSON object and a newline as a chunk of an interactive (TurboMind-style) stream; takes j. */
static void tsr__json_line(tsr__conn *conn, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return;
    size_t l = strlen(s);
    s[l] = '\n'; /* over the NUL: the chunk is sent by length */
    tsr__chunk(conn, s, l + 1);
    free(s);
}

static void tsr__http_token_out(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__conn *conn = c->owner;
    cJSON *lp = NULL;
    if (c->p.logprobs >= 0 && ev->sample) lp = tsr__logprob_entry(c->srv, ev->sample, true);
    if (c->api == 2) {   /* interactive */
        tsr__text_append(ch, ev->text, ev->text_len);
        if (lp) cJSON_Delete(lp);
        if (c->p.stream && ev->text_len) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "text", ev->text);
            cJSON_AddNumberToObject(j, "tokens", (double)ch->completion_tokens);
            cJSON_AddNullToObject(j, "finish_reason");
            tsr__json_line(conn, j);
        }
        return;
    }
    if (!c->p.stream) {
        tsr__text_append(ch, ev->text, ev->text_len);
        if (lp) {
            if (!ch->logprobs) ch->logprobs = cJSON_CreateArray();
            cJSON_AddItemToArray(ch->logprobs, lp);
        }
        return;
    }
    if (!ev->text_len && !lp && ch->sent_first) return;
    tsr__fe_chunk_info ci = tsr__chunk_info(c);
    cJSON *lpo = NULL;
    if (lp && c->api == 0) {
        lpo = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(lpo, "content"), lp);
    } else if (lp) {
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, lp);
        lpo = tsr__fe_legacy_logprobs(arr);
        cJSON_Delete(arr);
    }
    cJSON *j = tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, ev->text, lpo, NULL);
    ch->sent_first = true;
    tsr__sse(conn, j);
}

/* Bytes written and not yet taken by the client: queued in libuv plus, on Linux, still in the
 * kernel's send queue (not acknowledged), so the limit does not wait for socket buffers that
 * autotuning grows to megabytes. */
static size_t tsr__conn_unsent(tsr__conn *c) {
    size_t n = c->unsent;
#ifdef SIOCOUTQ
    uv_os_fd_t fd;
    int q = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0) n += (size_t)q;
#endif
    return n;
}

/* Backpressure: a client that does not read its stream is dropped once its unsent bytes pass
 * --max-unsent-bytes (its requests are cancelled: finish reason "abort", a warning in the log,
 * tessera_slow_client_drops_total), so a slow reader costs bounded memory and no generation.
 * Checked on tokens only: a TOKEN means this choice's DONE is still to come, so closing here
 * cannot free the call under tsr__dispatch. */
static void tsr__http_on_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__http_token_out(c, ch, ev);
    tsr__conn *conn = c->owner;
    if (!conn || conn->closing || !c->p.stream) return;
    size_t unsent = tsr__conn_unsent(conn);
    if ((int64_t)unsent > c->srv->cfg.max_unsent_bytes) {
        c->srv->metrics.slow_client_drops++;
        TSR_LOGW("dropping %s: the client has %zu unsent bytes (--max-unsent-bytes %lld); its requests are cancelled",
                 c->id, unsent, (long long)c->srv->cfg.max_unsent_bytes);
        tsr__conn_close(conn);
    }
}

static void tsr__http_on_done(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    (void)ev;
    tsr__conn *conn = c->owner;
    if (!c->p.stream || c->api == 2) return;
    if (ch->finish == TSR_FINISH_ERROR) {   /* the choice ends with finish_reason "error", then why */
        tsr__fe_chunk_info ci = tsr__chunk_info(c);
        tsr__sse(conn, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, "error"));
        cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "message", ch->error_message[0] ? ch->error_message : "generation failed");
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddNullToObject(e, "param");
        if (ch->error == TSR_ERR_OOM || ch->error == TSR_ERR_KV_FULL) cJSON_AddStringToObject(e, "code", "insufficient_resources");
        else if (ch->error == TSR_ERR_COMM) cJSON_AddStringToObject(e, "code", "engine_unavailable");
        else cJSON_AddNullToObject(e, "code");
        tsr__sse(conn, j);
        return;
    }
    tsr__fe_chunk_info ci = tsr__chunk_info(c);
    tsr__sse(conn, tsr__fe_stream_chunk(&ci, ch->index, !ch->sent_first, NULL, NULL, tsr__srv_finish_str(ch->finish)));
}

static void tsr__http_on_complete(tsr__call *c) {
    tsr__conn *conn = c->owner;
    conn->call = NULL;
    c->owner = NULL;
    if (c->api == 2) {
        const tsr__choice *ch = &c->ch[0];
        cJSON *j = cJSON_CreateObject();
        if (ch->finish == TSR_FINISH_ERROR && !c->p.stream) {
            tsr__fe_error e;
            tsr__fe_seterr(&e, 400, "invalid_request_error", "prompt", NULL, "%s", ch->error_message);
            cJSON_Delete(j);
            tsr__respond_error(conn, &e);
        } else {
            cJSON_AddStringToObject(j, "text", c->p.stream ? "" : (ch->text ? ch->text : ""));
            cJSON_AddNumberToObject(j, "tokens", (double)ch->completion_tokens);
            cJSON_AddNumberToObject(j, "input_tokens", (double)ch->prompt_tokens);
            cJSON_AddNumberToObject(j, "history_tokens", (double)ch->cached_tokens);
            cJSON_AddStringToObject(j, "finish_reason", tsr__srv_finish_str(ch->finish));
            if (c->p.stream) {
                tsr__json_line(conn, j);
                tsr__stream_end(conn);
            } else {
                tsr__respond_json(conn, 200, j);
            }
        }
    } else if (c->p.stream) {
        if (c->p.include_usage) {
            tsr__fe_chunk_info ci = tsr__chunk_info(c);
            tsr__sse(conn, tsr__fe_usage_chunk(&ci, tsr__usage(c)));
        }
        tsr__chunk(conn, "data: [DONE]\n\n", 14);
        tsr__stream_end(conn);
    } else {
        const tsr__choice *bad = NULL;
        for (int i = 0; i < c->n; i++)
            if (c->ch[i].finish == TSR_FINISH_ERROR) bad = &c->ch[i];
        if (bad) {
            tsr__fe_error e;
            /* the engine's code picks the status: no memory for it now -> 429 (retry), the group
             * broke -> 503, both with Retry-After */
            const bool res = bad->error == TSR_ERR_OOM || bad->error == TSR_ERR_KV_FULL;
            tsr__fe_seterr(&e, bad->error == TSR_ERR_INVALID_ARG ? 400 : res ? 429 : bad->error == TSR_ERR_COMM ? 503 : 500,
                           bad->error == TSR_ERR_INVALID_ARG ? "invalid_request_error" : "server_error", NULL,
                           res ? "insufficient_resources" : bad->error == TSR_ERR_COMM ? "engine_unavailable" : NULL,
                           "%s", bad->error_message[0] ? bad->error_message : "generation failed");
            tsr__respond_error(conn, &e);
        } else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "id", c->id);
            cJSON_AddStringToObject(j, "object", c->api == 1 ? "text_completion" : "chat.completion");
            cJSON_AddNumberToObject(j, "created", (double)c->created);
            cJSON_AddStringToObject(j, "model", c->srv->model);
            cJSON *choices = cJSON_AddArrayToObject(j, "choices");
            for (int i = 0; i < c->n; i++) {
                tsr__choice *ch = &c->ch[i];
                cJSON *o = cJSON_CreateObject();
                cJSON_AddItemToArray(choices, o);
                cJSON_AddNumberToObject(o, "index", i);
                const char *text = ch->text ? ch->text : "";
                if (c->api == 0) {
                    cJSON *m = cJSON_AddObjectToObject(o, "message");
                    cJSON_AddStringToObject(m, "role", "assistant");
                    cJSON_AddStringToObject(m, "content", text);
                    if (c->p.logprobs >= 0) {
                        cJSON *l = cJSON_AddObjectToObject(o, "logprobs");
                        cJSON_AddItemToObject(l, "content", ch->logprobs ? ch->logprobs : cJSON_CreateArray());
                        ch->logprobs = NULL;
                    } else {
                        cJSON_AddNullToObject(o, "logprobs");
                    }
                } else {
                    if (c->p.echo && c->p.prompt) {
                        size_t pl = strlen(c->p.prompt);
                        char *both = malloc(pl + ch->text_len + 1);
                        if (both) {
                            memcpy(both, c->p.prompt, pl);
                            memcpy(both + pl, text, ch->text_len + 1);
                            cJSON_AddStringToObject(o, "text", both);
                            free(both);
                        }
                    } else {
                        cJSON_AddStringToObject(o, "text", text);
                    }
                    if (c->p.logprobs >= 0) {
                        cJSON *arr = ch->logprobs ? ch->logprobs : cJSON_CreateArray();
                        cJSON_AddItemToObject(o, "logprobs", tsr__fe_legacy_logprobs(arr));
                        cJSON_Delete(arr);
                        ch->logprobs = NULL;
                    } else {
                        cJSON_AddNullToObject(o, "logprobs");
                    }
                }
                cJSON_AddStringToObject(o, "finish_reason", tsr__srv_finish_str(ch->finish));
            }
            cJSON_AddItemToObject(j, "usage", tsr__usage(c));
            tsr__respond_json(conn, 200, j);
        }
    }
    /* tsr__dispatch frees the call now that it has no owner and nothing outstanding */
}

static const tsr__call_ops tsr__http_ops = {tsr__http_on_token, tsr__http_on_done, tsr__http_on_complete};

/* ---------------------------------------------------------------- routes */

static cJSON *tsr__models_json(tsr__srv *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(j, "data"), *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", s->model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "tessera");
    cJSON_AddNumberToObject(m, "max_model_len", (double)tsr_engine_session_len(s->engine));
    return j;
}

static bool tsr__authorized(tsr__conn *c) {
    const tsr_server_config *cfg = &c->srv->cfg;
    if (cfg->n_api_keys == 0) return true;
    if (c->in.auth_len < 7 || strncasecmp(c->in.auth, "Bearer ", 7)) return false;
    const char *k = c->in.auth + 7;
    size_t kl = c->in.auth_len - 7;
    bool ok = false;
    for (int i = 0; i < cfg->n_api_keys; i++) ok |= tsr__fe_key_equal(k, kl, cfg->api_keys[i]);
    return ok;
}

/* Host and Origin (DNS rebinding, cross-origin pages): false after answering 421 / 403.  An
 * allowed Origin gets CORS headers on the answer, and OPTIONS preflights are answered here. */
static bool tsr__origin_checked(tsr__conn *c) {
    const tsr_server_config *cfg = &c->srv->cfg;
    tsr__http_policy pol = {cfg->host, cfg->port, cfg->allowed_origins, cfg->n_allowed_origins,
                            cfg->allowed_hosts, cfg->n_allowed_hosts};
    const tsr__http_in *in = &c->in;
    if (in->host_too_long || (in->has_host && !tsr__http_host_ok(&pol, in->host))) {
        c->in.keep_alive = false;
        tsr__error(c, 421, "invalid_request_error", NULL, "host_not_allowed",
                   "this server does not answer to that Host name (--allowed-hosts)");
        return false;
    }
    bool preflight = in->method == HTTP_OPTIONS;
    if (in->has_origin) {
        if (in->origin_too_long || !tsr__http_origin_ok(&pol, in->origin, in->has_host ? in->host : NULL)) {
            c->in.keep_alive = false;
            c->srv->metrics.origin_refused++;
            tsr__error(c, 403, "invalid_request_error", NULL, "origin_not_allowed",
                       "cross-origin requests from this Origin are not allowed (--allowed-origins)");
            return false;
        }
        /* header names only: letters, digits, '-', ',' and spaces (anything else is dropped) */
        char hdrs[256];
        size_t k = 0;
        for (size_t i = 0; i < in->acr_len && k < sizeof hdrs - 1; i++) {
            char ch = in->acr_headers[i];
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                ch == ',' || ch == ' ')
                hdrs[k++] = ch;
        }
        hdrs[k] = 0;
        snprintf(c->cors, sizeof c->cors,
                 "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s%s%s%s", in->origin,
                 preflight ? "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Max-Age: 600\r\n" : "",
                 preflight ? "Access-Control-Allow-Headers: " : "",
                 preflight ? (k ? hdrs : "Authorization, Content-Type") : "", preflight ? "\r\n" : "");
    }
    if (preflight) {
        tsr__respond(c, 200, "text/plain", "", 0, "Allow: GET, HEAD, POST, OPTIONS\r\n");
        return false;
    }
    return true;
}

static void tsr__handle(tsr__conn *c) {
    tsr__srv *s = c->srv;
    struct http_parser_url u;
    http_parser_url_init(&u);
    char path[2048];
    if (http_parser_parse_url(c->in.url, c->in.url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        tsr__error(c, 400, "invalid_request_error", NULL, "bad_url", "malformed request target");
        return;
    }
    snprintf(path, sizeof path, "%.*s", (int)u.field_data[UF_PATH].len, c->in.url + u.field_data[UF_PATH].off);
    int method = c->in.method;
    bool get = method == HTTP_GET || method == HTTP_HEAD, post = method == HTTP_POST;
    /* /health carries no data and load balancers probe it with their own Host: not checked */
    if (strcmp(path, "/health") && !tsr__origin_checked(c)) return;

    if (!strcmp(path, "/health")) {
        if (!get) return tsr__error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        char why[512];
        if (tsr_engine_health(s->engine, why, sizeof why) != TSR_OK) {   /* the rank group broke */
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "status", "unhealthy");
            cJSON_AddStringToObject(j, "message", why);
            char *b = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            if (!b) return tsr__respond(c, 503, "application/json", "{\"status\":\"unhealthy\"}", 22, NULL);
            tsr__respond(c, 503, "application/json", b, strlen(b), NULL);
            free(b);
            return;
        }
        if (s->draining) return tsr__respond(c, 503, "application/json", "{\"status\":\"draining\"}", 21, NULL);
        return tsr__respond(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    if (!tsr__authorized(c))
        return tsr__error(c, 401, "authentication_error", NULL, "invalid_api_key",
                          "missing or invalid API key: send 'Authorization: Bearer KEY'");
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        if (!get) return tsr__error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return tsr__respond(c, 200, "text/html; charset=utf-8", (const char *)tsr__web_index_html,
                            tsr__web_index_html_len, NULL);
    }
    if (!strcmp(path, "/metrics")) {
        if (!get) return tsr__error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        tsr_engine_stats st;
        tsr_engine_get_stats(s->engine, &st);
        s->metrics.held_bytes = s->held_bytes;
        char *text = tsr__fe_metrics_render(&s->metrics, &st, s->connections, s->draining);
        tsr__respond(c, 200, "text/plain; version=0.0.4", text ? text : "", text ? strlen(text) : 0, NULL);
        free(text);
        return;
    }
    if (!strcmp(path, "/v1/models")) {
        if (!get) return tsr__error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return tsr__respond_json(c, 200, tsr__models_json(s));
    }
    if (!strncmp(path, "/v1/models/", 11)) {
        if (strcmp(path + 11, s->model))
            return tsr__error(c, 404, "invalid_request_error", "model", "model_not_found", "no such model");
        cJSON *j = tsr__models_json(s), *m = cJSON_DetachItemFromArray(cJSON_GetObjectItem(j, "data"), 0);
        cJSON_Delete(j);
        return tsr__respond_json(c, 200, m);
    }
    int api = !strcmp(path, "/v1/chat/completions") ? 0
              : !strcmp(path, "/v1/completions")    ? 1
              : !strcmp(path, "/v1/chat/interactive") ? 2
                                                       : -1;
    if (api < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "no route for %.200s", path);
        return tsr__error(c, 404, "invalid_request_error", NULL, "unknown_url", msg);
    }
    if (!post) return tsr__error(c, 405, "invalid_request_error", NULL, "method_not_allowed", "use POST");
    if (s->draining)
        return tsr__error(c, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    if (!tsr__fe_utf8_valid(c->in.body, c->in.body_len))
        return tsr__error(c, 400, "invalid_request_error", NULL, "invalid_utf8", "the request body is not valid UTF-8");
    tsr__fe_params p;
    tsr__fe_error err;
    tsr__fe_kind kind = api == 0 ? TSR__FE_CHAT : api == 1 ? TSR__FE_COMPLETION : TSR__FE_INTERACTIVE;
    if (!tsr__fe_parse(kind, c->in.body ? c->in.body : "", c->in.body_len, &p, &err)) return tsr__respond_error(c, &err);
    if (p.model && p.model[0] && strcmp(p.model, s->model)) {
        tsr__fe_seterr(&err, 404, "invalid_request_error", "model", "model_not_found",
                       "the model '%.200s' does not exist; this server serves '%.200s'", p.model, s->model);
        tsr__fe_params_free(&p);
        return tsr__respond_error(c, &err);
    }
    if (api == 2 && !p.session_id && !p.prompt && !p.messages) {
        tsr__fe_params_free(&p);
        return tsr__error(c, 400, "invalid_request_error", "prompt", NULL, "'prompt' is required");
    }
    if (api == 2 && p.session_id && !p.interactive_mode && p.prompt && !p.prompt[0]) {
        /* TurboMind: an empty turn without interactive mode ends the session */
        tsr_engine_end_session(s->engine, p.session_id);
        tsr__fe_params_free(&p);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", "");
        cJSON_AddNumberToObject(j, "tokens", 0);
        cJSON_AddStringToObject(j, "finish_reason", "stop");
        return tsr__respond_json(c, 200, j);
    }
    tsr__call *call = tsr__call_new(s, api, &p, c, &tsr__http_ops);
    if (!call) return tsr__error(c, 500, "server_error", NULL, NULL, "out of memory");
    c->call = call;
    if (!tsr__call_submit(call, &err)) {
        c->call = NULL;
        tsr__call_detach(call);
        return tsr__respond_error(c, &err);
    }
    if (call->p.stream) tsr__stream_begin(c, api == 2 ? "application/x-ndjson" : "text/event-stream");
    /* the answer continues from the engine's events (tsr__http_ops) */
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
    size_t now = c->closing ? 0 : tsr__http_in_held(&c->in);
    c->srv->held_bytes += (int64_t)now - (int64_t)c->held;
    c->held = now;
}

static void tsr__alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void tsr__on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

/* Reading stops while a connection holds more unparsed bytes than one request may have (its
 * pipelined requests wait for the answer in progress) and resumes once they are parsed. */
static void tsr__conn_flow(tsr__conn *c) {
    if (c->closing) return;
    size_t limit = (size_t)c->srv->cfg.max_header_bytes + (size_t)c->srv->cfg.max_body_bytes;
    bool want = tsr__http_in_unparsed(&c->in) < limit;
    if (want && !c->reading) uv_read_start((uv_stream_t *)&c->tcp, tsr__alloc, tsr__on_read);
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
            tsr__error(c, c->in.reject, "invalid_request_error", NULL, code, msg);
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
            tsr__error(c, 503, "server_error", NULL, "too_many_connections", msg);
            break;
        }
        tsr__handle(c);   /* answers now, or later from the engine's events */
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
    if (c->refused) return tsr__conn_close(c);
    if (c->in.in_request) {
        c->in.keep_alive = false;
        c->in.reject = 408;
        tsr__error(c, 408, "invalid_request_error", NULL, "request_timeout",
                   "the request did not arrive in time (--read-timeout)");
    } else {
        tsr__conn_close(c);
    }
}

static void tsr__alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)h;
    b->base = malloc(suggested);
    b->len = b->base ? suggested : 0;
}

static void tsr__on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    tsr__conn *c = st->data;
    if (n < 0) {
        free(b->base);
        tsr__conn_close(c);   /* EOF or reset: a streaming answer's requests are cancelled */
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
        if (c->call || c->in.in_request) return tsr__conn_close(c);
        c->in.keep_alive = false;
        return tsr__error(c, 503, "server_error", NULL, "server_busy",
                          "the server holds too many request bytes; retry later");
    }
    bool ok = tsr__http_in_push(&c->in, b->base, (size_t)n);
    free(b->base);
    if (!ok) return tsr__conn_close(c);
    tsr__conn_account(c);
    tsr__conn_pump(c);
}

static void tsr__on_connection(uv_stream_t *server, int status) {
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
    tsr__http_in_init(&c->in, s->cfg.max_header_bytes, s->cfg.max_body_bytes);
    s->connections++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        tsr__conn_close(c);
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
    uv_read_start((uv_stream_t *)&c->tcp, tsr__alloc, tsr__on_read);
}

/* ---------------------------------------------------------------- life cycle */

static void tsr__stop_timer_cb(uv_timer_t *t) { uv_stop(t->loop); }

static void tsr__maybe_finish_drain(tsr__srv *s) {
    if (s->draining && s->live_calls == 0 && !uv_is_active((uv_handle_t *)&s->drain_timer))
        uv_timer_start(&s->drain_timer, tsr__stop_timer_cb, 200, 0);   /* lets the last writes flush */
}

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
    if (s->live_calls == 0) uv_timer_start(&s->drain_timer, tsr__stop_timer_cb, 200, 0);
}

static tsr_status tsr__listen(tsr__srv *s, uv_tcp_t *t, int port, uv_connection_cb cb) {
    struct sockaddr_storage addr;
    if (uv_ip4_addr(s->cfg.host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(s->cfg.host, port, (struct sockaddr_in6 *)&addr) != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "--server-name '%s' is not an IPv4 or IPv6 address", s->cfg.host);
    uv_tcp_init(s->loop, t);
    t->data = s;
    int r = uv_tcp_bind(t, (const struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)t, 511, cb);
    if (r != 0) return tsr_errorf(TSR_ERR_IO, "cannot listen on %s:%d: %s", s->cfg.host, port, uv_strerror(r));
    return TSR_OK;
}

static void tsr__walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);   /* at exit: connection structs are left to the OS */
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
    uv_async_init(s->loop, &s->async, tsr__on_async);
    s->async.data = s;
    uv_timer_init(s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    tsr_status st = tsr__listen(s, &s->http_listener, cfg->port, tsr__on_connection);
    if (st == TSR_OK && cfg->grpc_port > 0) {
        st = tsr__grpc_listen(s);
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
    uv_walk(s->loop, tsr__walk_close, NULL);
    uv_run(s->loop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&s->mu);
    tsr__evnode *n = s->q_head;
    s->q_head = s->q_tail = NULL;
    while (n) {
        tsr__evnode *next = n->next;
        free(n->text);
        free(n);
        n = next;
    }
    s->dead = true;
    pthread_mutex_unlock(&s->mu);
    uv_loop_close(s->loop);
    /* With calls still running (a second signal), the engine may still call back until it is
     * closed: s stays allocated (marked dead) rather than freed under it. */
    if (s->live_calls == 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return st;
}
