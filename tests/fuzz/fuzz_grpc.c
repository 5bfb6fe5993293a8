/* libFuzzer harness for what the gRPC port reads (run by ci/fuzz.sh): the length-prefixed
 * message framing (common/grpc_frame.c) and protobuf-c's unpack of every
 * tessera.proto message (the server's requests and the responses `tessera client grpc://`
 * reads).  The first byte picks the message type and the frame limit, the rest is a stream of
 * frames.  A frame must be refused or be whole inside the input; a decoded message must pass
 * protobuf_c_message_check and pack to as many bytes as it says, and those decode again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/grpc_frame.h"
#include "tessera.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const tsr__msgs[] = {
    &tessera__v1__sampling_params__descriptor,   &tessera__v1__generate_request__descriptor,
    &tessera__v1__token_logprob__descriptor,     &tessera__v1__generate_response__descriptor,
    &tessera__v1__chat_message__descriptor,      &tessera__v1__chat_request__descriptor,
    &tessera__v1__chat_response__descriptor,     &tessera__v1__tokenize_request__descriptor,
    &tessera__v1__tokenize_response__descriptor, &tessera__v1__health_request__descriptor,
    &tessera__v1__health_response__descriptor,   &tessera__v1__list_models_request__descriptor,
    &tessera__v1__model_info__descriptor,        &tessera__v1__list_models_response__descriptor,
};
enum { TSR__N_MSGS = sizeof tsr__msgs / sizeof tsr__msgs[0] };

static void tsr__roundtrip(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t n) {
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, msg);
    if (!m) return;   /* malformed: the server answers INVALID_ARGUMENT */
    if (!protobuf_c_message_check(m)) abort();
    size_t sz = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(sz ? sz : 1);
    if (!a) abort();
    if (protobuf_c_message_pack(m, a) != sz) abort();
    /* Re-encoded, it decodes again.  Not compared byte for byte: protobuf-c keeps fields it does
     * not know (field number 0 included) and may re-encode them differently. */
    ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, sz, a);
    if (m2) {
        size_t sz2 = protobuf_c_message_get_packed_size(m2);
        uint8_t *c = malloc(sz2 ? sz2 : 1);
        if (!c || protobuf_c_message_pack(m2, c) != sz2) abort();
        free(c);
        protobuf_c_message_free_unpacked(m2, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d = tsr__msgs[(data[0] & 0x0f) % TSR__N_MSGS];
    const size_t max_msg = (data[0] & 0x10) ? 64 : (size_t)8 << 20;
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    for (;;) {
        size_t n = (size_t)-1;
        int r = tsr_grpc_frame(p, left, max_msg, &n);
        if (r != TSR_GRPC_FRAME_OK) {
            if (r == TSR_GRPC_FRAME_NEED_MORE && left >= 5 && (n > max_msg || left - 5 >= n)) abort();
            break;
        }
        if (n > max_msg || n > left - 5) abort();
        uint8_t hdr[5];
        if (tsr_grpc_frame_header(hdr, n) != 5 || (p[0] == 0 && memcmp(hdr, p, 5) != 0)) abort();
        /* an exact-size copy, so protobuf-c reading past the message is caught */
        uint8_t *msg = malloc(n ? n : 1);
        if (!msg) abort();
        memcpy(msg, p + 5, n);
        tsr__roundtrip(d, msg, n);
        free(msg);
        p += 5 + n;
        left -= 5 + n;
    }
    return 0;
}
