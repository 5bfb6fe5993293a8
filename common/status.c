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
    char prefix[512], old[sizeof tsr__errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tsr__errbuf, sizeof old);
    snprintf(tsr__errbuf, sizeof tsr__errbuf, "%s: %s", prefix, old[0] ? old : tsr_status_str(code));
    return code;
}

const char *tsr_last_error(void) { return tsr__errbuf[0] ? tsr__errbuf : "no error message"; }

void tsr_clear_error(void) { tsr__errbuf[0] = 0; }
