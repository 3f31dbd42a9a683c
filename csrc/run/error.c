/* error.c — status names and the error-filling helper. */
#include "internal.h"

#include <errno.h>
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
        err->sys_errno = 0;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* A fixed English text for common errno values: strerror() is not
 * guaranteed thread-safe, and the library is reentrant. */
const char *ts__errno_text(int e) {
    switch (e) {
    case ENOENT: return "no such file or directory";
    case EACCES: return "permission denied";
    case EISDIR: return "is a directory";
    case ENOMEM: return "out of memory";
    case ENOTDIR: return "a path component is not a directory";
    case ELOOP: return "too many symbolic links";
    case ENAMETOOLONG: return "file name too long";
    case EMFILE:
    case ENFILE: return "too many open files";
    default: return "system error";
    }
}
