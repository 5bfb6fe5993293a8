/* The serving front end's settings (tsr_server_config), apart from server.h so that the
 * front end's internal files (srv.h) can hold them without depending on the loop that owns
 * them (server.c): the arrows in coordinator/frontend point from the loop down to the halves. */
#ifndef TSR_SERVER_CONFIG_H
#define TSR_SERVER_CONFIG_H

#include <stdint.h>

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
    const char *const *model_aliases; /* further ids accepted as "model" and listed (--model-name again) */
    int n_model_aliases;
    const char *version;           /* GET /version (NULL: "unknown") */
} tsr_server_config;

#endif
