/* The running server's state, owned by the loop thread (server.c creates it) and shared by the
 * files below the loop: the call bridge (call.c), the HTTP half (http.c, http_routes.c,
 * http_answer.c) and the gRPC half (grpc.c).  Only data: the arrows go from those files to this
 * header, never back, and the loop reaches the halves through their own headers. */
#ifndef TSR_SRV_H
#define TSR_SRV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "coordinator/engine.h"
#include "coordinator/frontend/fe.h"
#include "coordinator/frontend/server_config.h"

typedef struct tsr__evnode tsr__evnode;
struct tsr__conn;      /* an HTTP connection (http.h) */
struct tsr__gstream;   /* a gRPC stream (grpc.h) */

typedef struct tsr__srv {
    uv_loop_t *loop;
    tsr_engine *engine;
    tsr_server_config cfg;
    const char *model;
    uv_tcp_t http_listener, grpc_listener;
    bool grpc_on;
    /* what a request means, set by the loop so that the connection code does not depend on it */
    void (*http_route)(struct tsr__conn *c);          /* http_routes.c's (http.c calls it) */
    bool (*grpc_headers)(struct tsr__gstream *s);     /* grpc_service.c's (grpc.c calls them) */
    void (*grpc_handle)(struct tsr__gstream *s);
    void (*grpc_message)(struct tsr__gstream *s, const uint8_t *msg, size_t n);   /* in_stream streams */
    struct tsr__gconn *grpc_conns;  /* open gRPC connections (grpc.c), closed at exit */
    struct tsr__conn *http_conns;   /* open HTTP connections (http.c), closed at exit */
    uv_async_t async;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    pthread_mutex_t mu;              /* guards the event queue (engine step thread -> loop) */
    tsr__evnode *q_head, *q_tail;
    tsr__fe_metrics metrics;
    int64_t connections;
    int64_t live_calls;              /* calls with engine requests outstanding */
    int64_t inflight;                /* engine requests submitted without their DONE yet */
    int64_t held_bytes;              /* request bytes held by every connection (HTTP and gRPC) */
    bool draining;
    bool dead;                       /* guarded by mu: the loop has exited */
} tsr__srv;

/* uv_alloc_cb for both halves' sockets: a fresh buffer per read, freed by the read callback. */
static inline void tsr__srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)h;
    b->base = malloc(suggested);
    b->len = b->base ? suggested : 0;
}

#endif
