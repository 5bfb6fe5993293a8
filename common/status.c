/* Thread-local error messages behind tsr_status codes (see status.h). */
#include "common/status.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char tsr__errbuf[1024];

const char *tsr_status_str(tsr_status s) {
    switch (s) {
    case TSR_OK: return "ok";
    case TSR_ERR_INVALID_ARG: return "invalid argument";
    case TSR_ERR_IO: return "i/o error";
    case TSR_ERR_FORMAT: return "bad file format";
    case TSR_ERR_UNSUPPORTED: return "unsupported";
    case TSR_ERR_OOM: return "out of memory";
    case TSR_ERR_NOT_FOUND: return "not found";
    case TSR_ERR_KV_FULL: return "out of KV cache blocks";
    case TSR_ERR_COMM: return "communication error";
    case TSR_ERR_CANCELLED: return "cancelled";
    case TSR_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

tsr_status tsr_errorf(tsr_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tsr__errbuf, sizeof tsr__errbuf, fmt, ap);
    va_end(ap);
    return code;
}

tsr_status tsr_error_wrap(tsr_status code, const char *fmt, ...) {
    char msg[sizeof tsr__errbuf];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    size_t len = (size_t)n < sizeof msg - 1 ? (size_t)n : sizeof msg - 1;
    const char *old = tsr__errbuf[0] ? tsr__errbuf : tsr_status_str(code);
    /* "prefix: old", truncated to the buffer; the old text is read before it is overwritten */
    if (len + 2 < sizeof msg) {
        msg[len++] = ':';
        msg[len++] = ' ';
        size_t ol = strlen(old), room = sizeof msg - 1 - len;
        if (ol > room) ol = room;
        memcpy(msg + len, old, ol);
        len += ol;
    }
    msg[len] = 0;
    memcpy(tsr__errbuf, msg, len + 1);
    return code;
}

const char *tsr_last_error(void) { return tsr__errbuf[0] ? tsr__errbuf : "no error message"; }

void tsr_clear_error(void) { tsr__errbuf[0] = 0; }
