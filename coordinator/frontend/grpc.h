/* The gRPC half of the server: grpc.c carries HTTP/2 streams (nghttp2) with their limits and
 * gRPC's framing and trailers; grpc_service.c answers tessera.v1.Tessera's methods on them.  The
 * loop (server.c) hands connections to tsr__grpc_on_connection and sets srv->grpc_headers and
 * srv->grpc_handle to the service's functions, so grpc.c does not depend on the service. */
#ifndef TSR_GRPC_H
#define TSR_GRPC_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "coordinator/frontend/call.h"

/* gRPC status codes */
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

typedef struct tsr__gconn tsr__gconn;   /* one HTTP/2 connection (grpc.c) */

typedef struct tsr__gstream {
    tsr__gconn *conn;
    tsr__srv *srv;
    int32_t id;
    char path[128];
    char auth[512];
    bool grpc_ctype;
    bool in_stream;                  /* a client-streaming method (reflection): each message is handled as it
                                        arrives (srv->grpc_message), END_STREAM ends the answer */
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

/* ---- connections (grpc.c) ---- */
/* uv_connection_cb for the gRPC listener (its data is the tsr__srv). */
void tsr__grpc_on_connection(uv_stream_t *server, int status);
/* At exit: every connection's calls are detached and its memory freed by the close callbacks
 * that the server's final loop run delivers. */
void tsr__grpc_close(tsr__srv *s);

/* ---- a stream's answer (grpc.c) ---- */
/* The response HEADERS (200, application/grpc), once; messages and trailers follow. */
void tsr__grpc_start_response(tsr__gstream *s);
/* Appends one framed message packed from m (starting the response if need be). */
void tsr__grpc_send(tsr__gstream *s, const ProtobufCMessage *m);
/* Ends the stream with grpc-status (and grpc-message when msg is not empty): trailers after
 * what was sent, or a trailers-only response. */
void tsr__grpc_finish(tsr__gstream *s, int status, const char *msg);
/* Answers a stream whose request is still arriving: its bytes are dropped, and RST_STREAM
 * NO_ERROR follows the answer. */
void tsr__grpc_reject(tsr__gstream *s, int status, const char *msg);
/* After a streamed message: a client that does not read (past max_unsent_bytes) has its call
 * cancelled and the stream reset (ENHANCE_YOUR_CALM); then what is queued is written. */
void tsr__grpc_stream_sent(tsr__gstream *s);
/* Writes what the stream's connection has queued. */
void tsr__grpc_flush(tsr__gstream *s);

/* ---- the service (grpc_service.c), reached through srv->grpc_headers / grpc_handle ---- */
/* When a request's HEADERS end: the method and API key; false if the stream was answered. */
bool tsr__grpc_service_headers(tsr__gstream *s);
/* The whole request is in (END_STREAM): decode it and answer or submit. */
void tsr__grpc_service_handle(tsr__gstream *s);
/* Server reflection (grpc_reflection.c): whether path is ServerReflectionInfo (v1 or v1alpha),
 * and one request message of such a stream answered with one response message. */
bool tsr__grpc_reflection_path(const char *path);
void tsr__grpc_reflection_message(tsr__gstream *s, const uint8_t *msg, size_t n);

#endif
