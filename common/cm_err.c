#include "cm_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const messages[CM_ERR__COUNT] = {
    [CM_OK] = "ok",
    [CM_ERR_NOMEM] = "out of memory",
    [CM_ERR_INVALID] = "invalid argument",
    [CM_ERR_IO] = "input/output error",
    [CM_ERR_FORMAT] = "malformed data",
    [CM_ERR_UNSUPPORTED] = "not supported",
    [CM_ERR_NOT_FOUND] = "not found",
    [CM_ERR_LIMIT] = "limit exceeded",
    [CM_ERR_OVERLOADED] = "overloaded",
    [CM_ERR_TIMEOUT] = "timed out",
    [CM_ERR_CANCELLED] = "cancelled",
    [CM_ERR_BACKEND] = "compute backend error",
    [CM_ERR_CLOSED] = "closed",
    [CM_ERR_STATE] = "invalid state",
    [CM_ERR_CONFIG] = "invalid configuration",
    [CM_ERR_PROTOCOL] = "protocol mismatch",
    [CM_ERR_UTF8] = "invalid UTF-8",
    [CM_ERR_CONTEXT_LENGTH] = "context length exceeded",
    [CM_ERR_NO_DEVICE] = "no GPU device",
    [CM_ERR_INTERNAL] = "internal error",
    [CM_ERR_EXISTS] = "already exists",
};

const char *cm_strerror(cm_err err) {
    if ((int)err < 0 || err >= CM_ERR__COUNT || messages[err] == 0) {
        return "unknown error";
    }
    return messages[err];
}

cm_err cm_errf(cm_err rv, char *err, size_t errlen, const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rv;
}

void cm_assert_fail(const char *cond, const char *file, int line) {
    /* stderr is unbuffered: the line is out before abort() raises SIGABRT. */
    fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, cond);
    abort();
}
