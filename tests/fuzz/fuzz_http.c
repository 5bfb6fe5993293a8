/* libFuzzer harness for the server's HTTP/1.1 input side (coordinator/frontend/http_conn.c; run
 * by ci/fuzz.sh): the input arrives in pieces whose sizes the first bytes pick, as a socket
 * would deliver it, with requests pipelined; every complete request is taken through what the
 * server does before routing (its target parsed, Host and Origin checked) and let go.  Any
 * input must end in requests, a clean error status or a wait for more, within the limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/frontend/http_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void tsr__fuzz_request(const tsr__http_in *h, const tsr__http_policy *pol) {
    if (h->url_len >= sizeof h->url || h->body_len > (size_t)h->max_body_bytes) abort();
    if ((int64_t)h->header_bytes > h->max_header_bytes) abort();
    struct http_parser_url u;
    http_parser_url_init(&u);
    (void)http_parser_parse_url(h->url, h->url_len, 0, &u);
    if (h->has_host && !h->host_too_long) (void)tsr__http_host_ok(pol, h->host);
    if (h->has_origin && !h->origin_too_long) (void)tsr__http_origin_ok(pol, h->origin, h->has_host ? h->host : NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    /* byte 0: piece size (1..256); byte 1: the policy's shape */
    size_t piece = (size_t)data[0] + 1;
    const char *origins[] = {"http://good.example", "*"};
    const char *hosts[] = {"api.example"};
    tsr__http_policy pol = {(data[1] & 1) ? "0.0.0.0" : "127.0.0.1", 23333, origins, (data[1] >> 1) & 1 ? 2 : 1,
                            hosts, (data[1] >> 2) & 1};
    data += 2;
    size -= 2;
    tsr__http_in h;
    tsr__http_in_init(&h, 1024, 4096);
    size_t off = 0;
    int requests = 0;
    while (off < size) {
        size_t n = size - off < piece ? size - off : piece;
        if (!tsr__http_in_push(&h, (const char *)data + off, n)) break;
        off += n;
        int r;
        while ((r = tsr__http_in_next(&h)) == TSR__HTTP_REQUEST) {
            tsr__fuzz_request(&h, &pol);
            tsr__http_in_done(&h);
            if (++requests > (int)size) abort();   /* each request takes at least a byte */
        }
        if (r == TSR__HTTP_ERROR) {
            char msg[200];
            const char *code = tsr__http_in_error(&h, msg, sizeof msg);
            if (!code || !msg[0] || (h.reject != 400 && h.reject != 413 && h.reject != 414 && h.reject != 431)) abort();
            if (tsr__http_in_unparsed(&h)) abort();   /* nothing after an error is kept */
            break;
        }
        if (tsr__http_in_unparsed(&h) > size) abort();
    }
    tsr__http_in_free(&h);
    return 0;
}
