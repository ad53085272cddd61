#include "lt_sse.h"

#include <stdlib.h>
#include <string.h>

cm_err lt_sse_init(lt_sse *p, size_t max_event_bytes) {
    memset(p, 0, sizeof(*p));
    if (max_event_bytes < 16) {
        return CM_ERR_INVALID;
    }
    p->max_event_bytes = max_event_bytes;
    p->line = malloc(max_event_bytes + 1);
    p->data = malloc(max_event_bytes + 1);
    if (p->line == NULL || p->data == NULL) {
        lt_sse_fini(p);
        return CM_ERR_NOMEM;
    }
    return CM_OK;
}

void lt_sse_reset(lt_sse *p) {
    p->line_len = 0;
    p->data_len = 0;
    p->have_data = 0;
    p->last_was_cr = 0;
}

void lt_sse_fini(lt_sse *p) {
    free(p->line);
    free(p->data);
    p->line = NULL;
    p->data = NULL;
}

static cm_err dispatch(lt_sse *p, lt_sse_on_event on_event, void *user) {
    if (!p->have_data) {
        return CM_OK;
    }
    p->data[p->data_len] = '\0';
    size_t len = p->data_len;
    p->data_len = 0;
    p->have_data = 0;
    if (on_event(user, p->data, len) != 0) {
        return CM_ERR_CANCELLED;
    }
    return CM_OK;
}

/* One complete line (without its terminator) in p->line. */
static cm_err process_line(lt_sse *p, lt_sse_on_event on_event, void *user) {
    const char *line = p->line;
    size_t len = p->line_len;
    p->line_len = 0;
    if (len == 0) {
        return dispatch(p, on_event, user);
    }
    if (line[0] == ':') {
        return CM_OK; /* comment, e.g. a keep-alive */
    }
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon != NULL ? (size_t)(colon - line) : len;
    if (name_len != 4 || memcmp(line, "data", 4) != 0) {
        return CM_OK; /* event:, id:, retry: and unknown fields carry nothing we measure */
    }
    const char *value = "";
    size_t value_len = 0;
    if (colon != NULL) {
        value = colon + 1;
        value_len = len - name_len - 1;
        if (value_len > 0 && value[0] == ' ') {
            value++;
            value_len--;
        }
    }
    size_t need = value_len + (p->have_data ? 1 : 0);
    if (p->data_len + need > p->max_event_bytes) {
        return CM_ERR_LIMIT;
    }
    if (p->have_data) {
        p->data[p->data_len++] = '\n';
    }
    memcpy(p->data + p->data_len, value, value_len);
    p->data_len += value_len;
    p->have_data = 1;
    return CM_OK;
}

cm_err lt_sse_feed(lt_sse *p, const char *bytes, size_t n, lt_sse_on_event on_event, void *user) {
    for (size_t i = 0; i < n; i++) {
        char c = bytes[i];
        if (c == '\n' && p->last_was_cr) {
            /* second half of a CRLF: the line already ended at the CR */
            p->last_was_cr = 0;
            continue;
        }
        p->last_was_cr = 0;
        if (c == '\r' || c == '\n') {
            p->last_was_cr = c == '\r';
            cm_err rv = process_line(p, on_event, user);
            if (rv != CM_OK) {
                return rv;
            }
            continue;
        }
        if (p->line_len >= p->max_event_bytes) {
            return CM_ERR_LIMIT;
        }
        p->line[p->line_len++] = c;
    }
    return CM_OK;
}

cm_err lt_sse_finish(lt_sse *p, lt_sse_on_event on_event, void *user) {
    if (p->line_len > 0) {
        cm_err rv = process_line(p, on_event, user);
        if (rv != CM_OK) {
            return rv;
        }
    }
    return dispatch(p, on_event, user);
}
