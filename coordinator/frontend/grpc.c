/* The server's gRPC half: HTTP/2 with nghttp2 (memory-buffer mode: bytes read from libuv go to
 * nghttp2_session_mem_recv, what it wants to send is drained with nghttp2_session_mem_send and
 * written with uv_write), messages with protobuf-c (proto/tessera.proto), and gRPC's framing
 * (1-byte compressed flag + 4-byte big-endian length per message) and status trailers.
 *
 * A server-streaming Generate is an HTTP/2 response whose DATA is fed from a per-stream buffer
 * as engine events arrive (the data provider defers while the buffer is empty), ended by
 * trailers carrying grpc-status.  Errors before any message are "trailers-only" responses.  A
 * client that resets its stream (cancels the RPC) or drops the connection cancels the engine
 * requests through tsr__call_detach, exactly as an HTTP client that goes away.
 *
 * Limits that keep one client from starving the rest (the HTTP half has the same ones):
 * - a connection that opens no stream within read_timeout_s, or has none open for
 *   idle_timeout_s after its last, is closed with GOAWAY;
 * - a stream's request message must arrive within read_timeout_s of its HEADERS, else it is
 *   answered DEADLINE_EXCEEDED;
 * - the method and API key are checked when the HEADERS end, so an unauthenticated stream is
 *   answered (and reset) before any of its DATA is held;
 * - request bytes held are capped per stream (max_body_bytes), per connection
 *   (grpc_max_conn_buffer) and over all connections (max_held_bytes, shared with HTTP):
 *   RESOURCE_EXHAUSTED past them; at most 128 concurrent streams per connection;
 * - past max_connections (HTTP and gRPC together) a connection's first stream is refused
 *   (RST_STREAM REFUSED_STREAM) and the connection closed with GOAWAY;
 * - a streaming answer whose connection has more than max_unsent_bytes not yet taken by the
 *   client is cancelled (RST_STREAM ENHANCE_YOUR_CALM, which gRPC clients report as
 *   RESOURCE_EXHAUSTED) and its engine requests with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "common/grpc_frame.h"
#include "common/log.h"
#include "coordinator/frontend/call.h"
#include "coordinator/frontend/grpc.h"
#include "tessera.pb-c.h"

enum {
    TSR__GRPC_OK = 0,
    TSR__GRPC_CANCELLED = 1,
    TSR__GRPC_INVALID_ARGUMENT = 3,
    TSR__GRPC_DEADLINE_EXCEEDED = 4,
    TSR__GRPC_NOT_FOUND = 5,
    TSR__GRPC_RESOURCE_EXHAUSTED = 8,
    TSR__GRPC_UNIMPLEMENTED = 12,
    TSR__GRPC_INTERNAL = 13,
    TSR__GRPC_UNAVAILABLE = 14,
    TSR__GRPC_UNAUTHENTICATED = 16,
};

/* concurrent streams a connection may open (SETTINGS_MAX_CONCURRENT_STREAMS) */
#define TSR__GRPC_MAX_STREAMS 128
/* request bytes held per connection when grpc_max_conn_buffer is 0 */
#define TSR__GRPC_CONN_BUFFER ((int64_t)16 << 20)

typedef struct tsr__gconn tsr__gconn;

typedef struct tsr__gstream {
    tsr__gconn *conn;
    int32_t id;
    char path[128];
    char auth[512];
    bool grpc_ctype;
    uint8_t *in;                     /* request body (framed message) */
    size_t in_len, in_cap;
    uint64_t started_ms;             /* loop time of its HEADERS: the request is due read_timeout later */
    bool request_done;               /* END_STREAM seen, or answered early: no deadline, no more DATA kept */
    bool reset_after;                /* answered early: RST_STREAM NO_ERROR once the answer is sent */
    uint8_t *out;                    /* framed response messages not yet taken by nghttp2 */
    size_t out_len, out_off, out_cap;
    bool response_started, finished; /* finished: trailers are due once out drains */
    int status;
    char message[256];
    tsr__call *call;
    struct tsr__gstream *next;
} tsr__gstream;

struct tsr__gconn {
    uv_tcp_t tcp;
    uv_timer_t timer;                /* stream deadlines, idle timeout, and the closing grace */
    tsr__srv *srv;
    nghttp2_session *session;
    tsr__gstream *streams;
    struct tsr__gconn *prev, *next;  /* srv->grpc_conns */
    int64_t in_bytes;                /* request bytes held by its streams */
    uint64_t idle_since_ms;          /* when its last stream closed (or it was accepted) */
    int handles_open;
    int writes_pending;
    bool had_stream;                 /* a stream was opened: idle_timeout applies, not read_timeout */
    bool refused;                    /* over --max-connections: its first stream is refused */
    bool shutdown;                   /* GOAWAY submitted: close once it is written */
    bool closing, released;
};

static void tsr__gconn_flush(tsr__gconn *c);

/* ---------------------------------------------------------------- writes */

typedef struct {
    uv_write_t req;
    char data[];
} tsr__gw;

static void tsr__gconn_closed(uv_handle_t *h) {
    tsr__gconn *c = h->data;
    if (--c->handles_open == 0) {
        c->srv->connections--;
        if (c->prev) c->prev->next = c->next;
        else c->srv->grpc_conns = c->next;
        if (c->next) c->next->prev = c->prev;
        free(c);
    }
}

/* Request bytes a stream holds go back to the connection's and the server's budgets. */
static void tsr__gstream_drop_in(tsr__gstream *s) {
    s->conn->in_bytes -= (int64_t)s->in_len;
    s->conn->srv->held_bytes -= (int64_t)s->in_len;
    free(s->in);
    s->in = NULL;
    s->in_len = s->in_cap = 0;
}

static void tsr__gstream_free(tsr__gstream *s) {
    tsr__gstream_drop_in(s);
    free(s->out);
    free(s);
}

/* Closes the socket now (pending writes are cancelled). */
static void tsr__gconn_release(tsr__gconn *c) {
    if (c->released) return;
    c->released = true;
    uv_timer_stop(&c->timer);
    /* at exit the server's final walk may have closed them already (its writes then come back
     * cancelled, and here) */
    if (!uv_is_closing((uv_handle_t *)&c->timer)) uv_close((uv_handle_t *)&c->timer, tsr__gconn_closed);
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, tsr__gconn_closed);
}

static void tsr__on_gtimer(uv_timer_t *t);
static void tsr__gconn_arm(tsr__gconn *c);

/* Ends the connection: its calls are cancelled at once; the socket closes once what was queued
 * (a GOAWAY) is written, or after a short grace if the peer does not take it. */
static void tsr__gconn_close(tsr__gconn *c) {
    if (c->closing) return;
    c->closing = true;
    /* streams: detach their calls (cancels the engine requests) */
    for (tsr__gstream *s = c->streams; s; s = s->next)
        if (s->call) {
            tsr__call_detach(s->call);
            s->call = NULL;
        }
    nghttp2_session_del(c->session);   /* calls no stream-close callbacks: free them here */
    c->session = NULL;
    while (c->streams) {
        tsr__gstream *s = c->streams;
        c->streams = s->next;
        tsr__gstream_free(s);
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->writes_pending == 0) {
        tsr__gconn_release(c);
    } else {
        uv_timer_stop(&c->timer);
        uv_timer_start(&c->timer, tsr__on_gtimer, 1000, 0);
    }
}

static void tsr__gon_write(uv_write_t *w, int status) {
    tsr__gconn *c = w->data;
    free(w);
    c->writes_pending--;
    if (status < 0) {
        tsr__gconn_close(c);
        tsr__gconn_release(c);
    } else if (c->closing && c->writes_pending == 0) {
        tsr__gconn_release(c);
    }
}

static void tsr__gconn_flush(tsr__gconn *c) {
    if (c->closing || !c->session) return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            tsr__gconn_close(c);
            return;
        }
        if (n == 0) break;
        tsr__gw *w = malloc(sizeof *w + (size_t)n);
        if (!w) {
            tsr__gconn_close(c);
            return;
        }
        memcpy(w->data, data, (size_t)n);
        w->req.data = c;
        uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tsr__gon_write) < 0) {
            free(w);
            tsr__gconn_close(c);
            return;
        }
        c->writes_pending++;
    }
    if (c->shutdown || (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session)))
        tsr__gconn_close(c);
    else
        tsr__gconn_arm(c);   /* a stream may have closed: the idle clock starts */
}

/* Bytes of this connection's answers that the client has not taken yet: framed messages
 * waiting for flow-control window, and what libuv could not hand to the kernel. */
static int64_t tsr__gconn_unsent(const tsr__gconn *c) {
    int64_t n = (int64_t)c->tcp.write_queue_size;
    for (const tsr__gstream *s = c->streams; s; s = s->next) n += (int64_t)(s->out_len - s->out_off);
    return n;
}

/* GOAWAY (no error; the last stream id it has seen), then close. */
static void tsr__gconn_goaway(tsr__gconn *c, const char *why) {
    if (c->closing || c->shutdown) return;
    c->shutdown = true;
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->session),
                          NGHTTP2_NO_ERROR, (const uint8_t *)why, strlen(why));
}

/* ---------------------------------------------------------------- responses */

/* grpc-message is percent-encoded (gRPC over HTTP/2 spec) */
static void tsr__pct(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') out[o++] = (char)*p;
        else o += (size_t)snprintf(out + o, cap - o, "%%%02X", *p);
    }
    out[o] = 0;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static void tsr__trailers(tsr__gstream *s) {
    char code[16], msg[800];
    snprintf(code, sizeof code, "%d", s->status);
    tsr__pct(s->message, msg, sizeof msg);
    nghttp2_nv nv[2] = {NV("grpc-status", code), NV("grpc-message", msg)};
    nghttp2_submit_trailer(s->conn->session, s->id, nv, s->message[0] ? 2 : 1);
}

static ssize_t tsr__read_cb(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                            nghttp2_data_source *src, void *user) {
    (void)ses;
    (void)id;
    (void)user;
    tsr__gstream *s = src->ptr;
    size_t avail = s->out_len - s->out_off;
    if (avail) {
        size_t n = avail < len ? avail : len;
        memcpy(buf, s->out + s->out_off, n);
        s->out_off += n;
        if (s->out_off == s->out_len) s->out_off = s->out_len = 0;
        return (ssize_t)n;
    }
    if (!s->finished) return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    tsr__trailers(s);
    return 0;
}

static void tsr__start_response(tsr__gstream *s) {
    if (s->response_started) return;
    s->response_started = true;
    nghttp2_nv nv[2] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = tsr__read_cb};
    nghttp2_submit_response(s->conn->session, s->id, nv, 2, &dp);
}

/* Appends one framed message (packed from m). */
static void tsr__send_msg(tsr__gstream *s, const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    if (s->out_len + n + 5 > s->out_cap) {
        size_t cap = (s->out_cap ? s->out_cap * 2 : 1024) + n + 5;
        uint8_t *x = realloc(s->out, cap);
        if (!x) return;
        s->out = x;
        s->out_cap = cap;
    }
    uint8_t *p = s->out + s->out_len;
    tsr_grpc_frame_header(p, n);
    protobuf_c_message_pack(m, p + 5);
    s->out_len += n + 5;
    tsr__start_response(s);
    nghttp2_session_resume_data(s->conn->session, s->id);
}

static void tsr__finish(tsr__gstream *s, int status, const char *msg) {
    s->status = status;
    snprintf(s->message, sizeof s->message, "%s", msg ? msg : "");
    if (!s->response_started) {
        /* trailers-only */
        char code[16], m[800];
        snprintf(code, sizeof code, "%d", status);
        tsr__pct(s->message, m, sizeof m);
        nghttp2_nv nv[4] = {NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", code),
                            NV("grpc-message", m)};
        s->response_started = true;
        s->finished = true;
        nghttp2_submit_response(s->conn->session, s->id, nv, s->message[0] ? 4 : 3, NULL);
        return;
    }
    s->finished = true;
    nghttp2_session_resume_data(s->conn->session, s->id);
}

/* Answers a stream whose request is still arriving (or will not be read): the status goes out
 * now, what it holds is dropped, further DATA is ignored, and RST_STREAM NO_ERROR asks the
 * client to stop sending (RFC 9113 8.1) once the answer is written. */
static void tsr__g_reject(tsr__gstream *s, int status, const char *msg) {
    bool open = !s->request_done;
    s->request_done = true;
    tsr__gstream_drop_in(s);
    tsr__finish(s, status, msg);
    s->reset_after = open;   /* once the answer is out (tsr__on_frame_sent): a RST_STREAM queued now would drop it */
}

/* ---------------------------------------------------------------- calls */

/* Generate and ChatStream answer with a stream of GenerateResponse messages. */
static bool tsr__g_streams(const tsr__gstream *s) {
    return !strcmp(s->path, "/tessera.v1.Tessera/Generate") || !strcmp(s->path, "/tessera.v1.Tessera/ChatStream");
}

static void tsr__g_on_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    tsr__gstream *s = c->owner;
    if (!tsr__g_streams(s)) {
        tsr__choice_text_append(ch, ev->text, ev->text_len);   /* Chat: accumulate */
        return;
    }
    Tessera__V1__GenerateResponse r = TESSERA__V1__GENERATE_RESPONSE__INIT;
    int32_t id = ev->token;
    if (id >= 0) {
        r.n_ids = 1;
        r.ids = &id;
    }
    r.text = (char *)(ev->text ? ev->text : "");
    Tessera__V1__TokenLogprob lp[1 + TSR_SAMPLING_MAX_LOGPROBS], *lpp[1 + TSR_SAMPLING_MAX_LOGPROBS];
    char *texts[1 + TSR_SAMPLING_MAX_LOGPROBS] = {0};
    if (ev->sample && c->p.logprobs >= 0) {
        int n = 1 + ev->sample->n_top;
        for (int i = 0; i < n; i++) {
            tessera__v1__token_logprob__init(&lp[i]);
            lp[i].id = i == 0 ? ev->sample->token : ev->sample->top[i - 1].id;
            lp[i].logprob = i == 0 ? ev->sample->logprob : ev->sample->top[i - 1].logprob;
            texts[i] = tsr__srv_token_text(c->srv, lp[i].id);
            lp[i].text = texts[i] ? texts[i] : (char *)"";
            lpp[i] = &lp[i];
        }
        r.n_logprobs = (size_t)n;
        r.logprobs = lpp;
    }
    r.completion_tokens = (uint32_t)ch->completion_tokens;
    tsr__send_msg(s, &r.base);
    for (int i = 0; i < 1 + TSR_SAMPLING_MAX_LOGPROBS; i++) free(texts[i]);
    tsr__gconn *conn = s->conn;
    int64_t unsent = tsr__gconn_unsent(conn);
    if (unsent > c->srv->cfg.max_unsent_bytes) {
        /* the client is not reading: stop generating for it rather than hold its answer */
        TSR_LOGW("gRPC %s (stream %d): client not reading, %lld bytes unsent over --max-unsent-bytes %lld; "
                 "call cancelled (RESOURCE_EXHAUSTED)",
                 s->path, (int)s->id, (long long)unsent, (long long)c->srv->cfg.max_unsent_bytes);
        c->srv->metrics.slow_client_drops++;
        s->call = NULL;
        tsr__call_detach(c);   /* owner cleared: no more events reach s */
        free(s->out);
        s->out = NULL;
        s->out_len = s->out_off = s->out_cap = 0;
        s->finished = true;
        nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    tsr__gconn_flush(conn);
}

static void tsr__g_on_done(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev) {
    (void)c;
    (void)ch;
    (void)ev;
}

static void tsr__g_on_complete(tsr__call *c) {
    tsr__gstream *s = c->owner;
    tsr__choice *ch = &c->ch[0];
    s->call = NULL;
    c->owner = NULL;
    if (ch->finish == TSR_FINISH_ERROR) {
        tsr__finish(s, ch->error == TSR_ERR_INVALID_ARG ? TSR__GRPC_INVALID_ARGUMENT : TSR__GRPC_INTERNAL,
                    ch->error_message[0] ? ch->error_message : "generation failed");
    } else if (tsr__g_streams(s)) {
        Tessera__V1__GenerateResponse r = TESSERA__V1__GENERATE_RESPONSE__INIT;
        r.finish_reason = (char *)tsr_finish_reason_str(ch->finish);
        r.prompt_tokens = (uint32_t)ch->prompt_tokens;
        r.completion_tokens = (uint32_t)ch->completion_tokens;
        tsr__send_msg(s, &r.base);
        tsr__finish(s, TSR__GRPC_OK, NULL);
    } else {
        Tessera__V1__ChatResponse r = TESSERA__V1__CHAT_RESPONSE__INIT;
        Tessera__V1__ChatMessage m = TESSERA__V1__CHAT_MESSAGE__INIT;
        m.role = (char *)"assistant";
        m.content = ch->text ? ch->text : (char *)"";
        r.message = &m;
        r.finish_reason = (char *)tsr_finish_reason_str(ch->finish);
        r.prompt_tokens = (uint32_t)ch->prompt_tokens;
        r.completion_tokens = (uint32_t)ch->completion_tokens;
        tsr__send_msg(s, &r.base);
        tsr__finish(s, TSR__GRPC_OK, NULL);
    }
    tsr__gconn_flush(s->conn);
}

static const tsr__call_ops tsr__grpc_ops = {tsr__g_on_token, tsr__g_on_done, tsr__g_on_complete};

/* SamplingParams -> params, by the rules HTTP's requests follow (openai.c); proto3's zero means
 * "not set" for the knobs whose zero is invalid. */
static bool tsr__g_params(const Tessera__V1__SamplingParams *sp, tsr__fe_params *p, tsr__fe_error *err) {
    tsr_sampling_params_default(&p->sampling);
    p->max_tokens = 128;
    p->logprobs = -1;
    p->n = 1;
    p->sampling.seed = sp && sp->has_seed ? sp->seed : tsr_sampling_random_seed();
    if (sp) {
        if ((sp->max_tokens && !tsr__fe_check("max_tokens", sp->max_tokens, err)) ||
            !tsr__fe_check("temperature", sp->temperature, err) ||
            (sp->top_p > 0 && !tsr__fe_check("top_p", sp->top_p, err)) || !tsr__fe_check("top_k", sp->top_k, err) ||
            !tsr__fe_check("min_p", sp->min_p, err) ||
            (sp->repetition_penalty > 0 && !tsr__fe_check("repetition_penalty", sp->repetition_penalty, err)) ||
            !tsr__fe_check("presence_penalty", sp->presence_penalty, err) ||
            !tsr__fe_check("frequency_penalty", sp->frequency_penalty, err) ||
            !tsr__fe_check("top_logprobs", sp->top_logprobs, err))
            return false;
        if (sp->max_tokens) p->max_tokens = sp->max_tokens;
        p->sampling.temperature = sp->temperature;
        if (sp->top_p > 0) p->sampling.top_p = sp->top_p;
        p->sampling.top_k = (int32_t)sp->top_k;
        p->sampling.min_p = sp->min_p;
        if (sp->repetition_penalty > 0) p->sampling.repetition_penalty = sp->repetition_penalty;
        p->sampling.presence_penalty = sp->presence_penalty;
        p->sampling.frequency_penalty = sp->frequency_penalty;
        for (size_t i = 0; i < sp->n_stop; i++)
            if (!tsr__fe_add_stop(p, sp->stop[i], err)) return false;
        p->ignore_eos = sp->ignore_eos;
        if (sp->logprobs) p->logprobs = (int)sp->top_logprobs;
    }
    return tsr__fe_check_sampling(p, err);
}

/* The gRPC code for a refused call, from the HTTP status the front end chose for it. */
static int tsr__g_code(int http_status) {
    switch (http_status) {
    case 400: return TSR__GRPC_INVALID_ARGUMENT;
    case 404: return TSR__GRPC_NOT_FOUND;
    case 429: return TSR__GRPC_RESOURCE_EXHAUSTED;   /* past --max-queue: come back later */
    default: return TSR__GRPC_UNAVAILABLE;
    }
}

static void tsr__g_submit(tsr__gstream *s, tsr__fe_params *p) {
    tsr__call *call = tsr__call_new(s->conn->srv, 3, p, s, &tsr__grpc_ops);
    if (!call) return tsr__finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
    s->call = call;
    tsr__fe_error err;
    if (!tsr__call_submit(call, &err)) {
        s->call = NULL;
        tsr__call_detach(call);
        return tsr__finish(s, tsr__g_code(err.status), err.message);
    }
    if (tsr__g_streams(s)) tsr__start_response(s);   /* headers now */
}

static bool tsr__g_model_ok(tsr__gstream *s, const char *model) {
    tsr__fe_error err;
    if (tsr__fe_check_model(model, s->conn->srv->model, &err)) return true;
    tsr__finish(s, tsr__g_code(err.status), err.message);
    return false;
}

/* When a request's HEADERS end: unknown methods and missing or wrong API keys are answered
 * here, before any DATA is held.  Returns false if the stream was answered. */
static bool tsr__g_headers(tsr__gstream *s) {
    tsr__srv *srv = s->conn->srv;
    const char *m = s->path;
    if (strncmp(m, "/tessera.v1.Tessera/", 20)) {
        tsr__g_reject(s, TSR__GRPC_UNIMPLEMENTED, "unknown service");
        return false;
    }
    m += 20;
    bool known = !strcmp(m, "Generate") || !strcmp(m, "Chat") || !strcmp(m, "ChatStream") || !strcmp(m, "Tokenize") ||
                 !strcmp(m, "Health") || !strcmp(m, "ListModels");
    if (!known) {
        tsr__g_reject(s, TSR__GRPC_UNIMPLEMENTED, "unknown method");
        return false;
    }
    if (strcmp(m, "Health") && srv->cfg.n_api_keys) {
        bool ok = false;
        if (!strncasecmp(s->auth, "Bearer ", 7))
            for (int i = 0; i < srv->cfg.n_api_keys; i++)
                ok |= tsr__fe_key_equal(s->auth + 7, strlen(s->auth + 7), srv->cfg.api_keys[i]);
        if (!ok) {
            tsr__g_reject(s, TSR__GRPC_UNAUTHENTICATED, "missing or invalid API key (authorization: Bearer KEY)");
            return false;
        }
    }
    return true;
}

/* The whole request is in (END_STREAM): decode it and answer or submit. */
static void tsr__g_handle(tsr__gstream *s) {
    tsr__srv *srv = s->conn->srv;
    const char *m = s->path + 20;
    size_t n = 0;
    int fr = tsr_grpc_frame(s->in, s->in_len, (size_t)srv->cfg.max_body_bytes, &n);
    if (fr == TSR_GRPC_FRAME_TOO_BIG)
        return tsr__finish(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
    if (fr == TSR_GRPC_FRAME_COMPRESSED) return tsr__finish(s, TSR__GRPC_UNIMPLEMENTED, "compressed messages are not supported");
    if (fr != TSR_GRPC_FRAME_OK) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "missing or malformed request message");
    if (n != s->in_len - 5) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "exactly one request message expected");
    const uint8_t *msg = s->in + 5;
    tsr__fe_error err;

    if (!strcmp(m, "Health")) {
        Tessera__V1__HealthRequest *q = tessera__v1__health_request__unpack(NULL, n, msg);
        if (!q) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed HealthRequest");
        tessera__v1__health_request__free_unpacked(q, NULL);
        Tessera__V1__HealthResponse r = TESSERA__V1__HEALTH_RESPONSE__INIT;
        r.status = srv->draining ? TESSERA__V1__HEALTH_RESPONSE__STATUS__NOT_SERVING
                                 : TESSERA__V1__HEALTH_RESPONSE__STATUS__SERVING;
        tsr__send_msg(s, &r.base);
        return tsr__finish(s, TSR__GRPC_OK, NULL);
    }
    if (!strcmp(m, "ListModels")) {
        Tessera__V1__ListModelsRequest *q = tessera__v1__list_models_request__unpack(NULL, n, msg);
        if (!q) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed ListModelsRequest");
        tessera__v1__list_models_request__free_unpacked(q, NULL);
        Tessera__V1__ListModelsResponse r = TESSERA__V1__LIST_MODELS_RESPONSE__INIT;
        Tessera__V1__ModelInfo mi = TESSERA__V1__MODEL_INFO__INIT, *mip = &mi;
        mi.id = (char *)srv->model;
        mi.max_context = (uint32_t)tsr_engine_session_len(srv->engine);
        r.n_models = 1;
        r.models = &mip;
        tsr__send_msg(s, &r.base);
        return tsr__finish(s, TSR__GRPC_OK, NULL);
    }
    if (!strcmp(m, "Tokenize")) {
        Tessera__V1__TokenizeRequest *q = tessera__v1__tokenize_request__unpack(NULL, n, msg);
        if (!q) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed TokenizeRequest");
        if (!tsr__g_model_ok(s, q->model)) {
            tessera__v1__tokenize_request__free_unpacked(q, NULL);
            return;
        }
        const tsr_tokenizer *tok = tsr_engine_tokenizer(srv->engine);
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        if (!tok || tsr_tokenizer_encode(tok, q->text, strlen(q->text), q->add_special_tokens, true, &ids, &n_ids) != TSR_OK) {
            tessera__v1__tokenize_request__free_unpacked(q, NULL);
            return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, tok ? tsr_last_error() : "the model has no tokenizer");
        }
        tessera__v1__tokenize_request__free_unpacked(q, NULL);
        Tessera__V1__TokenizeResponse r = TESSERA__V1__TOKENIZE_RESPONSE__INIT;
        r.n_ids = (size_t)n_ids;
        r.ids = ids;
        tsr__send_msg(s, &r.base);
        free(ids);
        return tsr__finish(s, TSR__GRPC_OK, NULL);
    }
    if (srv->draining) return tsr__finish(s, TSR__GRPC_UNAVAILABLE, "the server is shutting down");
    tsr__fe_params p;
    memset(&p, 0, sizeof p);
    if (!strcmp(m, "Generate")) {
        Tessera__V1__GenerateRequest *q = tessera__v1__generate_request__unpack(NULL, n, msg);
        if (!q) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed GenerateRequest");
        p.kind = TSR__FE_COMPLETION;
        bool ok = tsr__g_model_ok(s, q->model);
        if (ok && !tsr__g_params(q->params, &p, &err)) {
            tsr__finish(s, tsr__g_code(err.status), err.message);
            ok = false;
        }
        if (ok && q->n_prompt_ids) {
            p.prompt_ids = malloc(sizeof(int32_t) * q->n_prompt_ids);
            if (p.prompt_ids) memcpy(p.prompt_ids, q->prompt_ids, sizeof(int32_t) * q->n_prompt_ids);
            p.n_prompt_ids = p.prompt_ids ? (int64_t)q->n_prompt_ids : 0;
        } else if (ok && !q->prompt[0]) {
            tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "prompt or prompt_ids is required");
            ok = false;
        }
        p.prompt = q->prompt;
        p.session_id = q->session_id;
        if (ok) tsr__g_submit(s, &p);   /* the engine copies what it keeps at submit */
        else tsr__fe_params_free(&p);
        if (s->call) s->call->p.prompt = NULL;
        tessera__v1__generate_request__free_unpacked(q, NULL);
        return;
    }
    Tessera__V1__ChatRequest *q = tessera__v1__chat_request__unpack(NULL, n, msg);
    if (!q) return tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "malformed ChatRequest");
    p.kind = TSR__FE_CHAT;
    bool ok = tsr__g_model_ok(s, q->model);
    if (ok && !tsr__g_params(q->params, &p, &err)) {
        tsr__finish(s, tsr__g_code(err.status), err.message);
        ok = false;
    }
    if (ok && !q->n_messages) {
        tsr__finish(s, TSR__GRPC_INVALID_ARGUMENT, "messages must not be empty");
        ok = false;
    }
    if (ok) {
        p.messages = calloc(q->n_messages, sizeof *p.messages);
        for (size_t i = 0; p.messages && i < q->n_messages; i++) {
            const char *r = tsr__fe_role(q->messages[i]->role, &err);
            if (!r) {
                tsr__finish(s, tsr__g_code(err.status), err.message);
                ok = false;
                break;
            }
            p.messages[i].role = r;
            p.messages[i].content = q->messages[i]->content;
        }
        p.n_messages = (int64_t)q->n_messages;
        p.session_id = q->session_id;
    }
    if (ok) tsr__g_submit(s, &p);
    else tsr__fe_params_free(&p);
    tessera__v1__chat_request__free_unpacked(q, NULL);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static tsr__gstream *tsr__gstream_get(nghttp2_session *ses, int32_t id) {
    return nghttp2_session_get_stream_user_data(ses, id);
}

static int tsr__on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *user) {
    tsr__gconn *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (c->refused) {
        /* over --max-connections: nothing of this stream was processed, the client may retry */
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        tsr__gconn_goaway(c, "too many connections (--max-connections)");
        return 0;
    }
    tsr__gstream *s = calloc(1, sizeof *s);
    if (!s) return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->conn = c;
    s->id = f->hd.stream_id;
    s->started_ms = uv_now(c->srv->loop);
    s->next = c->streams;
    c->streams = s;
    c->had_stream = true;
    nghttp2_session_set_stream_user_data(ses, s->id, s);
    return 0;
}

static int tsr__on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                          const uint8_t *value, size_t vl, uint8_t flags, void *user) {
    (void)flags;
    (void)user;
    tsr__gstream *s = tsr__gstream_get(ses, f->hd.stream_id);
    if (!s || f->hd.type != NGHTTP2_HEADERS) return 0;
    if (nl == 5 && !memcmp(name, ":path", 5)) snprintf(s->path, sizeof s->path, "%.*s", (int)vl, value);
    else if (nl == 13 && !memcmp(name, "authorization", 13)) snprintf(s->auth, sizeof s->auth, "%.*s", (int)vl, value);
    else if (nl == 12 && !memcmp(name, "content-type", 12)) s->grpc_ctype = vl >= 16 && !memcmp(value, "application/grpc", 16);
    return 0;
}

static int tsr__on_data(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user) {
    (void)flags;
    tsr__gconn *c = user;
    tsr__srv *srv = c->srv;
    tsr__gstream *s = tsr__gstream_get(ses, id);
    if (!s || s->request_done) return 0;   /* answered early: its DATA is dropped unread */
    if ((int64_t)(s->in_len + len) > srv->cfg.max_body_bytes + 5) {
        tsr__g_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
        return 0;
    }
    int64_t conn_cap = srv->cfg.grpc_max_conn_buffer > 0 ? srv->cfg.grpc_max_conn_buffer : TSR__GRPC_CONN_BUFFER;
    if (c->in_bytes + (int64_t)len > conn_cap) {
        TSR_LOGW("gRPC stream %d: %lld request bytes held on its connection, over --grpc-max-conn-buffer %lld",
                 (int)id, (long long)(c->in_bytes + (int64_t)len), (long long)conn_cap);
        tsr__g_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED,
                      "too many request bytes in flight on this connection (--grpc-max-conn-buffer)");
        return 0;
    }
    if (srv->held_bytes + (int64_t)len > srv->cfg.max_held_bytes) {
        TSR_LOGW("gRPC stream %d: %lld request bytes held by the server, over --max-held-bytes %lld", (int)id,
                 (long long)(srv->held_bytes + (int64_t)len), (long long)srv->cfg.max_held_bytes);
        tsr__g_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "the server holds too many request bytes (--max-held-bytes)");
        return 0;
    }
    if (s->in_len + len > s->in_cap) {
        size_t cap = (s->in_cap ? s->in_cap * 2 : 1024) + len;
        uint8_t *x = realloc(s->in, cap);
        if (!x) {
            tsr__g_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return 0;
        }
        s->in = x;
        s->in_cap = cap;
    }
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
    c->in_bytes += (int64_t)len;
    srv->held_bytes += (int64_t)len;
    /* the declared length is known from the first 5 bytes: no need to wait for the rest */
    size_t n = 0;
    if (tsr_grpc_frame(s->in, s->in_len, (size_t)srv->cfg.max_body_bytes, &n) == TSR_GRPC_FRAME_TOO_BIG)
        tsr__g_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
    return 0;
}

static int tsr__on_frame(nghttp2_session *ses, const nghttp2_frame *f, void *user) {
    (void)user;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
    tsr__gstream *s = tsr__gstream_get(ses, f->hd.stream_id);
    if (!s || s->request_done) return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->request_done = end;   /* nothing more comes: an early answer needs no RST_STREAM */
        if (!tsr__g_headers(s)) return 0;
    }
    if (end) {
        s->request_done = true;
        if (!s->response_started && !s->call) tsr__g_handle(s);
        tsr__gstream_drop_in(s);   /* decoded (the engine copied what it keeps) */
    }
    return 0;
}

static int tsr__on_frame_sent(nghttp2_session *ses, const nghttp2_frame *f, void *user) {
    (void)user;
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    tsr__gstream *s = tsr__gstream_get(ses, f->hd.stream_id);
    if (s && s->reset_after && !nghttp2_session_get_stream_remote_close(ses, s->id)) {
        s->reset_after = false;
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int tsr__on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *user) {
    (void)code;
    tsr__gconn *c = user;
    tsr__gstream *s = tsr__gstream_get(ses, id);
    if (!s) return 0;
    if (s->call) {   /* RST_STREAM from a client that cancelled the RPC */
        tsr__call_detach(s->call);
        s->call = NULL;
    }
    for (tsr__gstream **pp = &c->streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    tsr__gstream_free(s);
    if (!c->streams) c->idle_since_ms = uv_now(c->srv->loop);
    return 0;
}

/* ---------------------------------------------------------------- connections */

/* The next deadline: the earliest incomplete request, or (no stream open) the idle limit --
 * read_timeout before the first stream, idle_timeout after one. */
static void tsr__gconn_arm(tsr__gconn *c) {
    if (c->closing) return;
    const tsr_server_config *cfg = &c->srv->cfg;
    uint64_t due = UINT64_MAX;
    if (cfg->read_timeout_s > 0)
        for (const tsr__gstream *s = c->streams; s; s = s->next)
            if (!s->request_done) {
                uint64_t d = s->started_ms + (uint64_t)(cfg->read_timeout_s * 1000);
                if (d < due) due = d;
            }
    double idle = c->had_stream && !c->refused ? cfg->idle_timeout_s : cfg->read_timeout_s;
    if (!c->streams && idle > 0) {
        uint64_t d = c->idle_since_ms + (uint64_t)(idle * 1000);
        if (d < due) due = d;
    }
    uv_timer_stop(&c->timer);
    if (due == UINT64_MAX) return;
    uint64_t now = uv_now(c->srv->loop);
    uv_timer_start(&c->timer, tsr__on_gtimer, due > now ? due - now : 0, 0);
}

static void tsr__on_gtimer(uv_timer_t *t) {
    tsr__gconn *c = t->data;
    if (c->closing) {   /* the peer did not take the last writes in time */
        tsr__gconn_release(c);
        return;
    }
    const tsr_server_config *cfg = &c->srv->cfg;
    uint64_t now = uv_now(c->srv->loop);
    if (cfg->read_timeout_s > 0)
        for (tsr__gstream *s = c->streams; s; s = s->next)
            if (!s->request_done && s->started_ms + (uint64_t)(cfg->read_timeout_s * 1000) <= now)
                tsr__g_reject(s, TSR__GRPC_DEADLINE_EXCEEDED, "the request message did not arrive in time (--read-timeout)");
    double idle = c->had_stream && !c->refused ? cfg->idle_timeout_s : cfg->read_timeout_s;
    if (!c->streams && idle > 0 && c->idle_since_ms + (uint64_t)(idle * 1000) <= now)
        tsr__gconn_goaway(c, c->had_stream ? "idle (--idle-timeout)" : "no request in time (--read-timeout)");
    tsr__gconn_flush(c);
}

static void tsr__gon_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    tsr__gconn *c = st->data;
    if (n < 0 || c->closing) {
        free(b->base);
        tsr__gconn_close(c);
        tsr__gconn_release(c);   /* the peer is gone: nothing more to write to it */
        return;
    }
    if (n > 0) {
        ssize_t r = nghttp2_session_mem_recv(c->session, (const uint8_t *)b->base, (size_t)n);
        free(b->base);
        if (r < 0) {
            tsr__gconn_close(c);
            return;
        }
        tsr__gconn_flush(c);
        if (!c->closing && (int64_t)c->tcp.write_queue_size > c->srv->cfg.max_unsent_bytes) {
            /* it keeps sending and does not read what its requests produce */
            TSR_LOGW("gRPC connection: %lld bytes unsent to a client that does not read (--max-unsent-bytes); closed",
                     (long long)c->tcp.write_queue_size);
            tsr__gconn_close(c);
            tsr__gconn_release(c);
        }
        return;
    }
    free(b->base);
}

void tsr__grpc_on_connection(uv_stream_t *server, int status) {
    tsr__srv *s = server->data;
    if (status < 0) return;
    tsr__gconn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    s->connections++;
    c->next = s->grpc_conns;
    if (c->next) c->next->prev = c;
    s->grpc_conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        c->closing = true;
        tsr__gconn_release(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->idle_since_ms = uv_now(s->loop);
    if (s->connections > s->cfg.max_connections) {
        /* over the cap (HTTP and gRPC together): its first stream is refused, then GOAWAY */
        s->metrics.connections_refused++;
        c->refused = true;
    }
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, tsr__on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, tsr__on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, tsr__on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, tsr__on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, tsr__on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, tsr__on_frame_sent);
    nghttp2_session_server_new(&c->session, cb, c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[2] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, TSR__GRPC_MAX_STREAMS},
                                    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->cfg.max_header_bytes}};
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
    tsr__gconn_flush(c);
    if (!c->closing) uv_read_start((uv_stream_t *)&c->tcp, tsr__srv_alloc, tsr__gon_read);
}

void tsr__grpc_close(tsr__srv *s) {
    for (tsr__gconn *c = s->grpc_conns; c; c = c->next) {
        tsr__gconn_close(c);
        tsr__gconn_release(c);
    }
}
