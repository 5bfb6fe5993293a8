/* gRPC's length-prefixed message framing (one flag byte, a 4-byte big-endian length, the
 * message): the wire format of proto/tessera.proto's service, shared by the server
 * (coordinator/frontend/grpc.c) and its client (`tessera client grpc://`, tools/cmd_client.c).
 * Pure: the length comes from the peer, so it is checked against a limit before anything is
 * sized from it. */
#ifndef TSR_GRPC_FRAME_H
#define TSR_GRPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    TSR_GRPC_FRAME_OK = 0,            /* a whole message: 5 + *msg_len bytes */
    TSR_GRPC_FRAME_NEED_MORE = 1,     /* not all of it yet (*msg_len set once the prefix is in) */
    TSR_GRPC_FRAME_TOO_BIG = -1,      /* the declared length is over max_msg */
    TSR_GRPC_FRAME_COMPRESSED = -2,   /* compressed flag: no compression is negotiated */
    TSR_GRPC_FRAME_BAD_FLAG = -3,     /* flag byte other than 0 or 1 */
};
/* Looks at the frame at the start of buf[0..len). */
int tsr_grpc_frame(const uint8_t *buf, size_t len, size_t max_msg, size_t *msg_len);
/* Writes the 5-byte prefix of an uncompressed message of msg_len bytes; returns 5. */
size_t tsr_grpc_frame_header(uint8_t out[5], size_t msg_len);

#endif
