/* The server's gRPC transport: HTTP/2 with nghttp2 (memory-buffer mode: bytes read from libuv go
 * to nghttp2_session_mem_recv, what it wants to send is drained with nghttp2_session_mem_send and
 * written with uv_write), gRPC's framing (common/grpc_frame.h) and status trailers.  What the
 * methods mean is grpc_service.c's, reached through srv->grpc_headers / grpc_handle.
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
 * - the method and API key are checked (by the service) when the HEADERS end, so an
 *   unauthenticated stream is answered (and reset) before any of its DATA is held;
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

/* concurrent streams a connection may open (SETTINGS_MAX_CONCURRENT_STREAMS) */
#define TSR__GRPC_MAX_STREAMS 128
/* request bytes held per connection when grpc_max_conn_buffer is 0 */
#define TSR__GRPC_CONN_BUFFER ((int64_t)16 << 20)

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

void tsr__grpc_start_response(tsr__gstream *s) {
    if (s->response_started) return;
    s->response_started = true;
    nghttp2_nv nv[2] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = tsr__read_cb};
    nghttp2_submit_response(s->conn->session, s->id, nv, 2, &dp);
}

/* Appends one framed message (packed from m). */
void tsr__grpc_send(tsr__gstream *s, const ProtobufCMessage *m) {
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
    tsr__grpc_start_response(s);
    nghttp2_session_resume_data(s->conn->session, s->id);
}

void tsr__grpc_finish(tsr__gstream *s, int status, const char *msg) {
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
void tsr__grpc_reject(tsr__gstream *s, int status, const char *msg) {
    bool open = !s->request_done;
    s->request_done = true;
    tsr__gstream_drop_in(s);
    tsr__grpc_finish(s, status, msg);
    s->reset_after = open;   /* once the answer is out (tsr__on_frame_sent): a RST_STREAM queued now would drop it */
}

/* A request that is not gRPC at all (its content-type is not application/grpc*): a plain HTTP
 * 415, as the gRPC over HTTP/2 spec asks, with no gRPC status; the rest as tsr__grpc_reject. */
static void tsr__grpc_reject_media_type(tsr__gstream *s) {
    bool open = !s->request_done;
    s->request_done = true;
    tsr__gstream_drop_in(s);
    nghttp2_nv nv[2] = {NV(":status", "415"), NV("content-type", "text/plain")};
    s->response_started = true;
    s->finished = true;
    s->status = TSR__GRPC_INTERNAL;
    snprintf(s->message, sizeof s->message, "content-type is not application/grpc");
    nghttp2_submit_response(s->conn->session, s->id, nv, 2, NULL);
    s->reset_after = open;
}

void tsr__grpc_stream_sent(tsr__gstream *s) {
    tsr__gconn *conn = s->conn;
    tsr__srv *srv = s->srv;
    int64_t unsent = tsr__gconn_unsent(conn);
    if (s->call && unsent > srv->cfg.max_unsent_bytes) {
        /* the client is not reading: stop generating for it rather than hold its answer */
        TSR_LOGW("gRPC %s (stream %d): client not reading, %lld bytes unsent over --max-unsent-bytes %lld; "
                 "call cancelled (RESOURCE_EXHAUSTED)",
                 s->path, (int)s->id, (long long)unsent, (long long)srv->cfg.max_unsent_bytes);
        srv->metrics.slow_client_drops++;
        tsr__call *c = s->call;
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

void tsr__grpc_flush(tsr__gstream *s) { tsr__gconn_flush(s->conn); }

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
    s->srv = c->srv;
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

/* A client-streaming method (in_stream): each whole message is handled as it arrives and its
 * bytes go back to the budgets at once, so a long-lived stream holds at most one message. */
static void tsr__gstream_take_messages(tsr__gstream *s) {
    size_t off = 0, n = 0;
    int fr;
    while (!s->finished &&
           (fr = tsr_grpc_frame(s->in + off, s->in_len - off, (size_t)s->srv->cfg.max_body_bytes, &n)) != TSR_GRPC_FRAME_NEED_MORE) {
        if (fr != TSR_GRPC_FRAME_OK) {
            tsr__grpc_reject(s, fr == TSR_GRPC_FRAME_COMPRESSED ? TSR__GRPC_UNIMPLEMENTED : TSR__GRPC_INVALID_ARGUMENT,
                             fr == TSR_GRPC_FRAME_COMPRESSED ? "compressed messages are not supported"
                                                             : "malformed request message");
            return;
        }
        s->srv->grpc_message(s, s->in + off + 5, n);
        off += 5 + n;
    }
    if (!off || !s->in) return;
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
    s->conn->in_bytes -= (int64_t)off;
    s->srv->held_bytes -= (int64_t)off;
}

static int tsr__on_data(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user) {
    (void)flags;
    tsr__gconn *c = user;
    tsr__srv *srv = c->srv;
    tsr__gstream *s = tsr__gstream_get(ses, id);
    if (!s || s->request_done) return 0;   /* answered early: its DATA is dropped unread */
    if ((int64_t)(s->in_len + len) > srv->cfg.max_body_bytes + 5) {
        tsr__grpc_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
        return 0;
    }
    int64_t conn_cap = srv->cfg.grpc_max_conn_buffer > 0 ? srv->cfg.grpc_max_conn_buffer : TSR__GRPC_CONN_BUFFER;
    if (c->in_bytes + (int64_t)len > conn_cap) {
        TSR_LOGW("gRPC stream %d: %lld request bytes held on its connection, over --grpc-max-conn-buffer %lld",
                 (int)id, (long long)(c->in_bytes + (int64_t)len), (long long)conn_cap);
        tsr__grpc_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED,
                      "too many request bytes in flight on this connection (--grpc-max-conn-buffer)");
        return 0;
    }
    if (srv->held_bytes + (int64_t)len > srv->cfg.max_held_bytes) {
        TSR_LOGW("gRPC stream %d: %lld request bytes held by the server, over --max-held-bytes %lld", (int)id,
                 (long long)(srv->held_bytes + (int64_t)len), (long long)srv->cfg.max_held_bytes);
        tsr__grpc_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "the server holds too many request bytes (--max-held-bytes)");
        return 0;
    }
    if (s->in_len + len > s->in_cap) {
        size_t cap = (s->in_cap ? s->in_cap * 2 : 1024) + len;
        uint8_t *x = realloc(s->in, cap);
        if (!x) {
            tsr__grpc_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "out of memory");
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
        tsr__grpc_reject(s, TSR__GRPC_RESOURCE_EXHAUSTED, "request message too large (--max-body-bytes)");
    else if (s->in_stream)
        tsr__gstream_take_messages(s);
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
        if (!s->grpc_ctype) {
            tsr__grpc_reject_media_type(s);
            return 0;
        }
        if (!s->srv->grpc_headers(s)) return 0;
    }
    if (end) {
        s->request_done = true;
        if (s->in_stream) {   /* the client is done asking: the answer ends */
            if (!s->finished) tsr__grpc_finish(s, TSR__GRPC_OK, NULL);
        } else if (!s->response_started && !s->call) {
            s->srv->grpc_handle(s);
        }
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
                tsr__grpc_reject(s, TSR__GRPC_DEADLINE_EXCEEDED, "the request message did not arrive in time (--read-timeout)");
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
