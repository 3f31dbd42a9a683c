/* error.c — status names and the error-filling helper. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *ts_status_name(ts_status code) {
    switch (code) {
    case TS_OK: return "ok";
    case TS_ERR_IO: return "I/O error";
    case TS_ERR_NOT_FOUND: return "not found";
    case TS_ERR_FORMAT: return "format error";
    case TS_ERR_NOMEM: return "out of memory";
    case TS_ERR_ARG: return "invalid argument";
    case TS_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

ts_status ts__fail(ts_error *err, ts_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}
