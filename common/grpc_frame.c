/* gRPC's length-prefixed message framing (grpc_frame.h says who uses it). */
#include "common/grpc_frame.h"

int tsr_grpc_frame(const uint8_t *buf, size_t len, size_t max_msg, size_t *msg_len) {
    if (len < 5) return TSR_GRPC_FRAME_NEED_MORE;
    if (buf[0] > 1) return TSR_GRPC_FRAME_BAD_FLAG;
    /* assembled in 64 bits: a 0xFFFFFFFF length must not wrap a 32-bit size_t */
    uint64_t n = ((uint64_t)buf[1] << 24) | ((uint64_t)buf[2] << 16) | ((uint64_t)buf[3] << 8) | buf[4];
    if (n > (uint64_t)max_msg) return TSR_GRPC_FRAME_TOO_BIG;
    if (buf[0] == 1) return TSR_GRPC_FRAME_COMPRESSED;
    *msg_len = (size_t)n;
    if (len - 5 < (size_t)n) return TSR_GRPC_FRAME_NEED_MORE;
    return TSR_GRPC_FRAME_OK;
}

size_t tsr_grpc_frame_header(uint8_t out[5], size_t msg_len) {
    out[0] = 0;
    out[1] = (uint8_t)(msg_len >> 24);
    out[2] = (uint8_t)(msg_len >> 16);
    out[3] = (uint8_t)(msg_len >> 8);
    out[4] = (uint8_t)msg_len;
    return 5;
}
