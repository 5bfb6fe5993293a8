/* HTTP/1.1 request parsing for the server (http_conn.h): http-parser's callbacks build one
 * request at a time into tsr__http_in, with the limits that keep a client from growing memory
 * (431 for headers, 414 for the target, 413 for bodies).  No sockets, no engine: http.c feeds
 * it from its read callback and tests/fuzz/fuzz_http.c from libFuzzer. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "coordinator/frontend/http_conn.h"

enum { TSR__HTTP_H_NONE, TSR__HTTP_H_AUTH, TSR__HTTP_H_EXPECT, TSR__HTTP_H_ORIGIN, TSR__HTTP_H_HOST, TSR__HTTP_H_ACRH };

static int tsr__on_message_begin(http_parser *p) {
    tsr__http_in *h = p->data;
    h->in_request = true;
    h->started = true;
    h->url_len = 0;
    h->url[0] = 0;
    h->header_bytes = 0;
    h->field_len = 0;
    h->field_done = false;
    h->capture = TSR__HTTP_H_NONE;
    h->auth_len = 0;
    h->auth[0] = 0;
    h->origin_len = 0;
    h->origin[0] = 0;
    h->has_origin = h->origin_too_long = false;
    h->host_len = 0;
    h->host[0] = 0;
    h->has_host = h->host_too_long = false;
    h->acr_len = 0;
    h->acr_headers[0] = 0;
    h->body_len = 0;
    h->reject = 0;
    h->head = false;
    h->message_complete = false;
    return 0;
}

static int tsr__header_budget(tsr__http_in *h, size_t n) {
    h->header_bytes += n;
    if ((int64_t)h->header_bytes > h->max_header_bytes) {
        h->reject = 431;
        return 1;
    }
    return 0;
}

static int tsr__on_url(http_parser *p, const char *at, size_t n) {
    tsr__http_in *h = p->data;
    if (tsr__header_budget(h, n)) return 1;
    if (h->url_len + n >= sizeof h->url) {
        h->reject = 414;
        return 1;
    }
    memcpy(h->url + h->url_len, at, n);
    h->url_len += n;
    h->url[h->url_len] = 0;
    return 0;
}

static int tsr__on_header_field(http_parser *p, const char *at, size_t n) {
    tsr__http_in *h = p->data;
    if (tsr__header_budget(h, n)) return 1;
    if (h->field_done) {
        h->field_len = 0;
        h->field_done = false;
    }
    for (size_t i = 0; i < n && h->field_len < sizeof h->field - 1; i++) h->field[h->field_len++] = at[i];
    h->field[h->field_len] = 0;
    return 0;
}

/* Appends to a captured value; false once it no longer fits (the value is then unusable). */
static bool tsr__capture(char *dst, size_t cap, size_t *len, const char *at, size_t n) {
    if (*len + n >= cap) return false;
    memcpy(dst + *len, at, n);
    *len += n;
    dst[*len] = 0;
    return true;
}

static int tsr__on_header_value(http_parser *p, const char *at, size_t n) {
    tsr__http_in *h = p->data;
    if (tsr__header_budget(h, n)) return 1;
    if (!h->field_done) {
        h->field_done = true;
        const char *f = h->field;
        h->capture = !strcasecmp(f, "authorization") ? TSR__HTTP_H_AUTH
                     : !strcasecmp(f, "expect")      ? TSR__HTTP_H_EXPECT
                     : !strcasecmp(f, "origin")      ? TSR__HTTP_H_ORIGIN
                     : !strcasecmp(f, "host")        ? TSR__HTTP_H_HOST
                     : !strcasecmp(f, "access-control-request-headers") ? TSR__HTTP_H_ACRH
                                                                       : TSR__HTTP_H_NONE;
        /* a repeated Origin or Host makes the request ambiguous: treated as too long (refused) */
        if (h->capture == TSR__HTTP_H_AUTH) h->auth_len = 0;
        if (h->capture == TSR__HTTP_H_ORIGIN) h->origin_too_long |= h->has_origin, h->has_origin = true;
        if (h->capture == TSR__HTTP_H_HOST) h->host_too_long |= h->has_host, h->has_host = true;
        if (h->capture == TSR__HTTP_H_ACRH) h->acr_len = 0;
    }
    switch (h->capture) {
    case TSR__HTTP_H_AUTH:
        for (size_t i = 0; i < n && h->auth_len < sizeof h->auth - 1; i++) h->auth[h->auth_len++] = at[i];
        h->auth[h->auth_len] = 0;
        break;
    case TSR__HTTP_H_EXPECT:
        if (n >= 12 && !strncasecmp(at, "100-continue", 12)) h->send_continue = true;
        break;
    case TSR__HTTP_H_ORIGIN:
        if (!tsr__capture(h->origin, sizeof h->origin, &h->origin_len, at, n)) h->origin_too_long = true;
        break;
    case TSR__HTTP_H_HOST:
        if (!tsr__capture(h->host, sizeof h->host, &h->host_len, at, n)) h->host_too_long = true;
        break;
    case TSR__HTTP_H_ACRH:
        if (!tsr__capture(h->acr_headers, sizeof h->acr_headers, &h->acr_len, at, n)) h->acr_len = 0;
        break;
    default:
        break;
    }
    return 0;
}

static int tsr__on_headers_complete(http_parser *p) {
    tsr__http_in *h = p->data;
    h->head = p->method == HTTP_HEAD;
    h->method = (int)p->method;
    if (p->content_length != ULLONG_MAX && p->content_length > (uint64_t)h->max_body_bytes) {
        h->reject = 413;
        return -1;   /* not 1/2 ("skip body"): an error */
    }
    return 0;
}

static int tsr__on_body(http_parser *p, const char *at, size_t n) {
    tsr__http_in *h = p->data;
    if ((int64_t)(h->body_len + n) > h->max_body_bytes) {
        h->reject = 413;
        return 1;
    }
    if (h->body_len + n + 1 > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 4096;
        while (cap < h->body_len + n + 1) cap *= 2;
        char *b = realloc(h->body, cap);
        if (!b) {
            h->reject = 413;
            return 1;
        }
        h->body = b;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, n);
    h->body_len += n;
    h->body[h->body_len] = 0;
    return 0;
}

static int tsr__on_message_complete(http_parser *p) {
    tsr__http_in *h = p->data;
    h->message_complete = true;
    h->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);   /* one request at a time: the rest stays held */
    return 0;
}

static const http_parser_settings tsr__settings = {
    .on_message_begin = tsr__on_message_begin,
    .on_url = tsr__on_url,
    .on_header_field = tsr__on_header_field,
    .on_header_value = tsr__on_header_value,
    .on_headers_complete = tsr__on_headers_complete,
    .on_body = tsr__on_body,
    .on_message_complete = tsr__on_message_complete,
};

void tsr__http_in_init(tsr__http_in *h, int64_t max_header_bytes, int64_t max_body_bytes) {
    memset(h, 0, sizeof *h);
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->max_header_bytes = max_header_bytes;
    h->max_body_bytes = max_body_bytes;
    h->keep_alive = true;
}

void tsr__http_in_free(tsr__http_in *h) {
    free(h->body);
    free(h->buf);
    h->body = h->buf = NULL;
    h->body_cap = h->cap = h->len = h->off = 0;
}

bool tsr__http_in_push(tsr__http_in *h, const char *data, size_t n) {
    if (!n) return true;
    if (h->off && h->off == h->len) h->off = h->len = 0;
    if (h->len + n > h->cap) {
        if (h->off) {   /* slide the unparsed bytes down before growing */
            memmove(h->buf, h->buf + h->off, h->len - h->off);
            h->len -= h->off;
            h->off = 0;
        }
        if (h->len + n > h->cap) {
            size_t cap = h->cap ? h->cap : 4096;
            while (cap < h->len + n) cap *= 2;
            char *b = realloc(h->buf, cap);
            if (!b) return false;
            h->buf = b;
            h->cap = cap;
        }
    }
    memcpy(h->buf + h->len, data, n);
    h->len += n;
    return true;
}

size_t tsr__http_in_held(const tsr__http_in *h) { return (h->len - h->off) + h->body_len; }

int tsr__http_in_next(tsr__http_in *h) {
    if (h->message_complete) return TSR__HTTP_REQUEST;
    if (h->reject) return TSR__HTTP_ERROR;
    size_t n = h->len - h->off;
    if (n) {
        size_t done = http_parser_execute(&h->parser, &tsr__settings, h->buf + h->off, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            h->keep_alive = false;
            if (!h->reject) h->reject = e == HPE_HEADER_OVERFLOW ? 431 : 400;
            h->in_request = false;
            h->off = h->len = 0;   /* nothing after an error is read */
            return TSR__HTTP_ERROR;
        }
        h->off += done;
        if (h->off == h->len) h->off = h->len = 0;
    }
    if (h->message_complete) {
        h->in_request = false;
        return TSR__HTTP_REQUEST;
    }
    return TSR__HTTP_NEED_MORE;
}

void tsr__http_in_done(tsr__http_in *h) {
    h->message_complete = false;
    h->in_request = false;
    if (h->parser.http_errno == HPE_PAUSED) http_parser_pause(&h->parser, 0);
}

const char *tsr__http_in_error(const tsr__http_in *h, char *msg, size_t cap) {
    switch (h->reject) {
    case 413:
        snprintf(msg, cap, "the request body exceeds %lld bytes (--max-body-bytes)", (long long)h->max_body_bytes);
        return "request_too_large";
    case 431:
        snprintf(msg, cap, "the request headers exceed %lld bytes", (long long)h->max_header_bytes);
        return "headers_too_large";
    case 414:
        snprintf(msg, cap, "the request target is longer than %zu bytes", sizeof h->url - 1);
        return "uri_too_long";
    default:
        snprintf(msg, cap, "malformed HTTP request: %s",
                 http_errno_description(HTTP_PARSER_ERRNO(&h->parser)));
        return "bad_request";
    }
}

/* ---- Origin and Host checks ---- */

static bool tsr__loopback_name(const char *n, size_t len) {
    static const char *const names[] = {"localhost", "127.0.0.1", "::1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && !strncasecmp(n, names[i], len)) return true;
    return false;
}

static bool tsr__in_list(const char *const *list, int n, const char *s, size_t len) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], "*") || (strlen(list[i]) == len && !strncasecmp(list[i], s, len))) return true;
    return false;
}

/* The name part of "name[:port]" or "[v6][:port]": start and length; false if malformed. */
static bool tsr__host_name(const char *host, const char **name, size_t *len) {
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end || (end[1] && end[1] != ':')) return false;
        *name = host + 1;
        *len = (size_t)(end - host - 1);
    } else {
        const char *colon = strchr(host, ':');
        *name = host;
        *len = colon ? (size_t)(colon - host) : strlen(host);
    }
    for (size_t i = 0; i < *len; i++) {
        unsigned char ch = (unsigned char)(*name)[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '/' || ch == '@') return false;
    }
    return *len > 0;
}

bool tsr__http_host_ok(const tsr__http_policy *p, const char *host) {
    const char *name;
    size_t len;
    if (!tsr__host_name(host, &name, &len)) return false;
    if (p->n_allowed_hosts) {
        if (tsr__in_list(p->allowed_hosts, p->n_allowed_hosts, name, len)) return true;
    } else if (!strcmp(p->bound_host, "0.0.0.0") || !strcmp(p->bound_host, "::")) {
        return true;
    }
    if (tsr__loopback_name(name, len)) return true;
    return strlen(p->bound_host) == len && !strncasecmp(p->bound_host, name, len);
}

bool tsr__http_origin_ok(const tsr__http_policy *p, const char *origin, const char *host) {
    size_t ol = strlen(origin);
    if (tsr__in_list(p->allowed_origins, p->n_allowed_origins, origin, ol)) return true;
    if (strncasecmp(origin, "http://", 7)) return false;
    const char *o = origin + 7;
    if (host && host[0] && !strcasecmp(o, host)) return true;   /* same origin as this request */
    const char *name;
    size_t len;
    if (!tsr__host_name(o, &name, &len)) return false;
    const char *port = o[0] == '[' ? strchr(o, ']') + 1 : o + len;
    char want[16];
    snprintf(want, sizeof want, ":%d", p->port);
    if (strcmp(port, want)) return false;
    return tsr__loopback_name(name, len) || (strlen(p->bound_host) == len && !strncasecmp(p->bound_host, name, len));
}
