/*
 * cm_err: the one error type of Sluice, its message helper, and the invariant check.
 *
 * Every fallible function returns a cm_err (0 = CM_OK) and passes results through
 * out-parameters. Values are explicit and append-only: never renumber, never reuse.
 * cm_strerror() gives a short, stable English description of each value.
 *
 * Bad input is always an error value; CM_ASSERT is only for invariants that a bug in Sluice
 * itself breaks (a queue link, a reference count, a call's lifecycle flags).
 */
#ifndef CM_ERR_H
#define CM_ERR_H

#include <stddef.h>

typedef enum cm_err {
    CM_OK = 0,
    CM_ERR_NOMEM = 1,           /* allocation failed */
    CM_ERR_INVALID = 2,         /* bad argument or bad input from outside */
    CM_ERR_IO = 3,              /* read/write/open/mmap failed */
    CM_ERR_FORMAT = 4,          /* malformed file or message (GGUF, protobuf, JSON, YAML) */
    CM_ERR_UNSUPPORTED = 5,     /* valid but not supported (tensor type, architecture, param) */
    CM_ERR_NOT_FOUND = 6,       /* no such key, tensor, model, request id */
    CM_ERR_LIMIT = 7,           /* a configured bound was exceeded (size, count, length) */
    CM_ERR_OVERLOADED = 8,      /* a bounded queue is full; try again later */
    CM_ERR_TIMEOUT = 9,         /* a deadline passed */
    CM_ERR_CANCELLED = 10,      /* the caller or peer cancelled */
    CM_ERR_BACKEND = 11,        /* compute backend failure (CUDA error, device lost) */
    CM_ERR_CLOSED = 12,         /* the object is shutting down or draining */
    CM_ERR_STATE = 13,          /* operation not valid in the current state */
    CM_ERR_CONFIG = 14,         /* configuration is invalid */
    CM_ERR_PROTOCOL = 15,       /* peer spoke an incompatible protocol version */
    CM_ERR_UTF8 = 16,           /* text is not valid UTF-8 */
    CM_ERR_CONTEXT_LENGTH = 17, /* prompt + completion exceed the model's context */
    CM_ERR_NO_DEVICE = 18,      /* no GPU or driver present */
    CM_ERR_INTERNAL = 19,       /* broken invariant caught without aborting */
    CM_ERR_EXISTS = 20,         /* duplicate id or key */
    CM_ERR__COUNT               /* not an error: the number of values above */
} cm_err;

/* cm_strerror returns a static string for err; never NULL (unknown values give "unknown error"). */
const char *cm_strerror(cm_err err);

/* cm_errf formats a client-safe message into err (errlen bytes; err may be NULL or errlen 0)
 * and returns rv, so a failure reads `return cm_errf(CM_ERR_INVALID, err, errlen, ...)`. */
cm_err cm_errf(cm_err rv, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * CM_ASSERT(cond) checks an invariant: when cond is false it writes
 * "file:line: invariant failed: cond" to stderr and aborts. Always compiled in (NDEBUG does
 * not remove it), so cond must be cheap and free of side effects. Never use it on input from
 * outside the process (that is an error value, see above).
 */
#define CM_ASSERT(cond) ((cond) ? (void)0 : cm_assert_fail(#cond, __FILE__, __LINE__))

/* cm_assert_fail is CM_ASSERT's failure path: reports and aborts; never returns. */
void cm_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn, cold));

#endif /* CM_ERR_H */
