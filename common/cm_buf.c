#include "cm_buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cm_buf_init(cm_buf *b, size_t max_bytes) {
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max_bytes = max_bytes;
}

void cm_buf_fini(cm_buf *b) {
    free(b->data);
    cm_buf_init(b, b->max_bytes);
}

void cm_buf_reset(cm_buf *b) {
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

cm_err cm_buf_reserve(cm_buf *b, size_t extra) {
    /* Compare against what is left rather than adding, so a huge extra cannot wrap; the
     * second test keeps room for the NUL even when the cap is SIZE_MAX. */
    if (extra > b->max_bytes - b->len || extra >= SIZE_MAX - b->len) {
        return CM_ERR_LIMIT;
    }
    size_t need = b->len + extra + 1; /* + the NUL terminator */
    if (need <= b->alloc) {
        return CM_OK;
    }
    /* Grow geometrically so n appends cost O(n) copies, but never allocate far past the
     * cap: a small cap must mean small memory. */
    size_t want = b->alloc < 64 ? 64 : b->alloc;
    while (want < need) {
        want = want > SIZE_MAX / 2 ? need : want * 2;
    }
    size_t most = b->max_bytes < SIZE_MAX ? b->max_bytes + 1 : SIZE_MAX;
    if (want > most) {
        want = most;
    }
    char *p = realloc(b->data, want);
    if (p == NULL) {
        return CM_ERR_NOMEM;
    }
    b->data = p;
    b->alloc = want;
    b->data[b->len] = '\0';
    return CM_OK;
}

cm_err cm_buf_append(cm_buf *b, const void *data, size_t n) {
    cm_err rv = cm_buf_reserve(b, n);
    if (rv != CM_OK) {
        return rv;
    }
    if (n > 0) {
        memcpy(b->data + b->len, data, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return CM_OK;
}

cm_err cm_buf_append_str(cm_buf *b, const char *s) {
    return cm_buf_append(b, s, strlen(s));
}

cm_err cm_buf_append_byte(cm_buf *b, char c) {
    return cm_buf_append(b, &c, 1);
}

cm_err cm_buf_vprintf(cm_buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    char small[256];

    /* Format into a stack buffer first: most pieces are short, and this gives the exact
     * length so the cap is checked before the buffer changes. */
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return CM_ERR_INVALID;
    }
    if ((size_t)n < sizeof small) {
        return cm_buf_append(b, small, (size_t)n);
    }
    cm_err rv = cm_buf_reserve(b, (size_t)n);
    if (rv != CM_OK) {
        return rv;
    }
    va_copy(ap2, ap);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
    return CM_OK;
}

cm_err cm_buf_printf(cm_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cm_err rv = cm_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rv;
}

const char *cm_buf_cstr(const cm_buf *b) {
    return b->data != NULL ? b->data : "";
}

char *cm_buf_detach(cm_buf *b, size_t *len_out) {
    char *p = b->data;
    size_t len = b->len;
    if (p == NULL) {
        p = calloc(1, 1);
        if (p == NULL) {
            return NULL;
        }
    }
    if (len_out != NULL) {
        *len_out = len;
    }
    cm_buf_init(b, b->max_bytes);
    return p;
}
