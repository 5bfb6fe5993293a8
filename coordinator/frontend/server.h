/* The serving front end (rank 0): one libuv loop thread that speaks HTTP/1.1 (the OpenAI API,
 * server-sent events, TurboMind's /v1/chat/interactive, /health, /metrics and the built-in web
 * chat page) and gRPC over HTTP/2 (proto/tessera.proto), and feeds the engine.  The engine's
 * callbacks arrive on its step thread; they are copied into a mutex-protected queue and handed
 * to the loop with uv_async_t, so the loop never blocks and never shares request state. */
#ifndef TSR_SERVER_H
#define TSR_SERVER_H

#include <stdint.h>

#include "common/status.h"
#include "coordinator/engine.h"

typedef struct tsr_server_config {
    const char *host;              /* default 127.0.0.1 */
    int port;                      /* HTTP (default 23333) */
    int grpc_port;                 /* gRPC (default 23334; < 0: off) */
    const char *const *api_keys;   /* NULL/0: no authentication */
    int n_api_keys;
    int64_t max_body_bytes;        /* request bodies (default 8 MiB) */
    int64_t max_header_bytes;      /* request line + headers (default 16 KiB) */
    double read_timeout_s;         /* a started request must arrive within this (default 30) */
    double idle_timeout_s;         /* keep-alive connections idle this long are closed (default 60) */
    int64_t max_connections;       /* open HTTP + gRPC connections; past it: 503 / refused (default 1024) */
    int64_t max_unsent_bytes;      /* a streaming client this far behind is dropped (default 4 MiB) */
    int64_t max_held_bytes;        /* request bytes held over all connections (default 256 MiB) */
    int64_t grpc_max_conn_buffer;  /* gRPC request bytes held per connection (0: default 16 MiB) */
    int64_t max_running;           /* engine requests run at once (the engine's max batch; default 64) */
    int64_t max_queue;             /* engine requests waiting beyond max_running; past it: 429 (default 1024) */
    const char *const *allowed_origins; /* browser origins besides the server's own ("*": any) */
    int n_allowed_origins;
    const char *const *allowed_hosts;   /* Host names besides the bound address and loopback ("*": any) */
    int n_allowed_hosts;
    const char *model_name;        /* served model id (default: the engine's) */
} tsr_server_config;

void tsr_server_config_default(tsr_server_config *c);

/* Serves until SIGTERM/SIGINT: then new requests get 503, running ones finish, and it returns.
 * Binding errors are TSR_ERR_IO with the address in the message.  Prints "listening" lines on
 * stderr once both ports are bound. */
tsr_status tsr_server_run(tsr_engine *e, const tsr_server_config *c);

#endif
