/* The input side of one HTTP/1.1 connection, without sockets: bytes go in (tsr__http_in_push),
 * whole requests come out one at a time (tsr__http_in_next), each bounded (header and body
 * limits) and with the few headers the server acts on captured.  The server (http.c) owns the
 * socket and answers; tests/fuzz/fuzz_http.c feeds this directly.  Pipelined requests stay in
 * the held buffer until the previous one is answered, so holding is bounded by the caller's
 * push limit and parsing never recurses into answering. */
#ifndef TSR_HTTP_CONN_H
#define TSR_HTTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

enum {
    TSR__HTTP_NEED_MORE = 0,   /* every held byte parsed, no complete request yet */
    TSR__HTTP_REQUEST = 1,     /* a complete request is ready (fields below) */
    TSR__HTTP_ERROR = 2,       /* malformed or over a limit: answer h->reject and close */
};

typedef struct tsr__http_in {
    http_parser parser;
    int64_t max_header_bytes, max_body_bytes;
    /* the request being read */
    bool in_request;             /* its first byte has been seen */
    bool started;                /* set when a request begins; the caller clears it (arms its timer) */
    bool send_continue;          /* "Expect: 100-continue" seen; the caller sends 100 and clears it */
    int method;                  /* enum http_method */
    char url[2048];
    size_t url_len;
    size_t header_bytes;
    char field[48];
    size_t field_len;
    bool field_done;
    int capture;                 /* which header value is being read (TSR__HTTP_H_*) */
    char auth[512];
    size_t auth_len;
    char origin[256];            /* Origin ("" and has_origin false: none) */
    size_t origin_len;
    bool has_origin, origin_too_long;
    char host[256];
    size_t host_len;
    bool has_host, host_too_long;
    char acr_headers[256];       /* Access-Control-Request-Headers (preflight) */
    size_t acr_len;
    char *body;
    size_t body_len, body_cap;
    int reject;                  /* 0, or the HTTP status that ends the connection (400/413/414/431) */
    bool message_complete, keep_alive, head;
    /* bytes received and not parsed yet: buf[off, len) */
    char *buf;
    size_t off, len, cap;
} tsr__http_in;

void tsr__http_in_init(tsr__http_in *h, int64_t max_header_bytes, int64_t max_body_bytes);
void tsr__http_in_free(tsr__http_in *h);
/* Appends received bytes (false: out of memory). */
bool tsr__http_in_push(tsr__http_in *h, const char *data, size_t n);
/* Bytes held: unparsed input plus the current body. */
size_t tsr__http_in_held(const tsr__http_in *h);
static inline size_t tsr__http_in_unparsed(const tsr__http_in *h) { return h->len - h->off; }
/* Parses held bytes up to the end of one request (stops there until tsr__http_in_done). */
int tsr__http_in_next(tsr__http_in *h);
/* The request has been answered: the parser moves on to the next one. */
void tsr__http_in_done(tsr__http_in *h);
/* For TSR__HTTP_ERROR: the error code string and message for h->reject. */
const char *tsr__http_in_error(const tsr__http_in *h, char *msg, size_t cap);

/* Who may talk to the server from a browser (cross-origin requests and DNS rebinding). */
typedef struct tsr__http_policy {
    const char *bound_host;                /* the address the server is bound to */
    int port;                              /* its HTTP port */
    const char *const *allowed_origins;    /* --allowed-origins ("*": any) */
    int n_allowed_origins;
    const char *const *allowed_hosts;      /* --allowed-hosts ("*": any) */
    int n_allowed_hosts;
} tsr__http_policy;

/* The Host header's name (port ignored) is the bound address, a loopback name or an allowed
 * host; bound to a wildcard address (0.0.0.0, ::) any name is, unless --allowed-hosts is given. */
bool tsr__http_host_ok(const tsr__http_policy *p, const char *host);
/* An Origin is allowed when it is the server's own (http://HOST where HOST is the request's
 * already checked Host, or a loopback name with the server's port) or --allowed-origins names it. */
bool tsr__http_origin_ok(const tsr__http_policy *p, const char *origin, const char *host);

#endif
