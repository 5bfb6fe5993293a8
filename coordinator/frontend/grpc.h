/* The gRPC half of the server (grpc.c): what the loop (server.c) needs to hand it connections
 * and to close them at exit. */
#ifndef TSR_GRPC_H
#define TSR_GRPC_H

#include "coordinator/frontend/srv.h"

/* uv_connection_cb for the gRPC listener (its data is the tsr__srv). */
void tsr__grpc_on_connection(uv_stream_t *server, int status);
/* At exit: every connection's calls are detached and its memory freed by the close callbacks
 * that the server's final loop run delivers. */
void tsr__grpc_close(tsr__srv *s);

#endif
