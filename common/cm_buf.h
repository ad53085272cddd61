/*
 * cm_buf: a growable byte buffer with a hard cap set when it is created.
 *
 * Every buffer that holds data from outside (request bodies, rendered metrics, log lines,
 * JSON being built) is a cm_buf with a max_bytes cap; an append that would pass the cap
 * fails with CM_ERR_LIMIT and leaves the buffer as it was, so callers can report "too large"
 * instead of growing without bound.
 *
 * The contents are always followed by a NUL byte (not counted in len, not counted against
 * the cap), so cm_buf_cstr() can be used as a C string when the data has no embedded NULs.
 *
 * Thread contract: a cm_buf is not locked; one thread at a time.
 */
#ifndef CM_BUF_H
#define CM_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "cm_err.h"

typedef struct cm_buf {
    char *data;       /* owned; NULL until the first append */
    size_t len;       /* bytes in use */
    size_t alloc;     /* bytes allocated (>= len + 1 when data != NULL) */
    size_t max_bytes; /* cap on len, fixed at init */
} cm_buf;

/* cm_buf_init makes an empty buffer that may hold up to max_bytes bytes. Allocates nothing. */
void cm_buf_init(cm_buf *b, size_t max_bytes);
/* cm_buf_fini frees the contents; b is empty (same cap) afterwards and may be reused. */
void cm_buf_fini(cm_buf *b);
/* cm_buf_reset empties the buffer but keeps its memory for reuse. */
void cm_buf_reset(cm_buf *b);

/* cm_buf_reserve makes room for extra more bytes: CM_ERR_LIMIT past the cap, CM_ERR_NOMEM. */
cm_err cm_buf_reserve(cm_buf *b, size_t extra);
/* Appends. On any error the buffer is unchanged (no partial append). */
cm_err cm_buf_append(cm_buf *b, const void *data, size_t n);
cm_err cm_buf_append_str(cm_buf *b, const char *s);
cm_err cm_buf_append_byte(cm_buf *b, char c);
cm_err cm_buf_printf(cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cm_err cm_buf_vprintf(cm_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* cm_buf_cstr returns the NUL-terminated contents ("" when empty); valid until the next
 * append/reset/fini. Never NULL. */
const char *cm_buf_cstr(const cm_buf *b);

/*
 * cm_buf_detach hands the contents to the caller (free() it; NUL-terminated; *len_out gets
 * the length when len_out != NULL) and leaves b empty (same cap). Returns NULL only when b
 * was never appended to and a 1-byte "" cannot be allocated.
 */
char *cm_buf_detach(cm_buf *b, size_t *len_out);

#endif /* CM_BUF_H */
