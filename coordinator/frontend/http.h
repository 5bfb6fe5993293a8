/* The HTTP/1.1 half of the server, shared by its three files: http.c (connections: reading,
 * timers, writing whole answers and chunked streams), http_routes.c (what each request means)
 * and http_answer.c (calls answered in OpenAI's or TurboMind's shapes).  The loop (server.c)
 * accepts with tsr__http_on_connection and sets srv->http_route to tsr__http_route. */
#ifndef TSR_HTTP_H
#define TSR_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "coordinator/frontend/call.h"
#include "coordinator/frontend/http_conn.h"

typedef struct tsr__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_idle_t resume;            /* continues draining pipelined requests on the next loop turn */
    uv_shutdown_t shutdown;      /* lingering close: FIN after the last answer */
    tsr__srv *srv;
    struct tsr__conn *prev, *next;   /* srv->http_conns */
    tsr__http_in in;             /* the request being read and the bytes held after it */
    int handles_open;
    int writes_pending;
    size_t unsent;               /* bytes handed to uv_write and not yet written to the socket */
    size_t held;                 /* this connection's share of srv->held_bytes */
    bool closing, close_after_writes;
    bool lingering;              /* answered and half-closed: reading only to discard */
    bool pumping, reading;
    bool refused;                /* over --max-connections: its first request gets 503 */
    char cors[768];              /* CORS headers for the current request's answer ("" if none) */
    /* the answer */
    tsr__call *call;
    bool stream_started;
} tsr__conn;

/* ---- connections (http.c) ---- */
/* uv_connection_cb for the HTTP listener (its data is the tsr__srv). */
void tsr__http_on_connection(uv_stream_t *server, int status);
/* Closes the connection; a call it still owns is detached (its requests cancelled). */
void tsr__http_close(tsr__conn *c);
/* At exit: closes every open connection (their structs are freed by the close callbacks). */
void tsr__http_close_all(tsr__srv *s);
/* Bytes written and not yet taken by the client. */
size_t tsr__http_unsent(tsr__conn *c);

/* ---- answers (http.c): each ends the current request, except the stream's pieces ---- */
/* A whole response with a body (extra_headers: "Name: value\r\n" lines, or NULL). */
void tsr__http_respond(tsr__conn *c, int status, const char *ctype, const char *body, size_t len,
                       const char *extra_headers);
void tsr__http_respond_json(tsr__conn *c, int status, cJSON *j);   /* takes j */
void tsr__http_respond_error(tsr__conn *c, const tsr__fe_error *e);
void tsr__http_error(tsr__conn *c, int status, const char *type, const char *param, const char *code,
                     const char *msg);
/* A chunked 200 stream: begin, chunks (raw, an SSE event taking j, a JSON line taking j), end. */
void tsr__http_stream_begin(tsr__conn *c, const char *ctype);
void tsr__http_chunk(tsr__conn *c, const char *data, size_t len);
void tsr__http_sse(tsr__conn *c, cJSON *j);
void tsr__http_json_line(tsr__conn *c, cJSON *j);
void tsr__http_stream_end(tsr__conn *c);

/* ---- routes (http_routes.c) and answers to calls (http_answer.c) ---- */
/* Answers the request c->in holds, now or later from the engine's events. */
void tsr__http_route(tsr__conn *c);
/* http_tokenize.c: POST /tokenize, POST /detokenize, GET /version; false if path is none of them */
bool tsr__http_route_utility(tsr__conn *c, const char *path);
extern const tsr__call_ops tsr__http_ops;
/* http_tools.c: a streamed chat choice with tools.  token: true when the token's text is held
 * (a forced call, or "auto" while the reply may still start with <tool_call>) or was flushed;
 * done: true when it sent the held text (as tool_calls or content) and the finish chunk. */
bool tsr__http_tool_token(tsr__call *c, tsr__choice *ch, const tsr_engine_event *ev);
bool tsr__http_tool_done(tsr__call *c, tsr__choice *ch);

#endif
