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
#include "coordinator/frontend/server_config.h"

void tsr_server_config_default(tsr_server_config *c);

/* Serves until SIGTERM/SIGINT: then new requests get 503, running ones finish, and it returns.
 * Binding errors are TSR_ERR_IO with the address in the message.  Prints "listening" lines on
 * stderr once both ports are bound. */
tsr_status tsr_server_run(tsr_engine *e, const tsr_server_config *c);

#endif
