#include "cm_trace.h"

#include <stdio.h>
#include <string.h>

#include "cm_id.h"

static int is_lower_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* hex_field: n lower-case hex digits, not all zero (when nonzero is set). */
static int hex_field(const char *s, size_t n, int nonzero) {
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_lower_hex(s[i]))
            return 0;
        any |= s[i] != '0';
    }
    return any || !nonzero;
}

static int hex_val(char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

cm_err cm_trace_parse_parent(const char *v, size_t len, cm_trace *t) {
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len < CM_TRACEPARENT_LEN || !hex_field(v, 2, 0))
        return CM_ERR_INVALID;
    /* Version ff is forbidden; 00 has exactly this shape; later versions may append fields. */
    if (memcmp(v, "ff", 2) == 0)
        return CM_ERR_INVALID;
    if (memcmp(v, "00", 2) == 0 ? len != CM_TRACEPARENT_LEN
                                : len > CM_TRACEPARENT_LEN && v[CM_TRACEPARENT_LEN] != '-')
        return CM_ERR_INVALID;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-' || !hex_field(v + 3, CM_TRACE_ID_HEX, 1) ||
        !hex_field(v + 36, CM_TRACE_SPAN_HEX, 1) || !hex_field(v + 53, 2, 0))
        return CM_ERR_INVALID;
    memcpy(t->trace_id, v + 3, CM_TRACE_ID_HEX);
    t->trace_id[CM_TRACE_ID_HEX] = '\0';
    memcpy(t->parent_id, v + 36, CM_TRACE_SPAN_HEX);
    t->parent_id[CM_TRACE_SPAN_HEX] = '\0';
    t->flags = (uint8_t)(hex_val(v[53]) << 4 | hex_val(v[54]));
    return CM_OK;
}

bool cm_trace_accept_state(const char *v, size_t len, cm_trace *t) {
    unsigned members = 1;
    t->tracestate[0] = '\0';
    if (len == 0 || len > CM_TRACESTATE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < 0x20 || v[i] > 0x7e)
            return false;
        members += v[i] == ',';
    }
    if (members > 32)
        return false;
    memcpy(t->tracestate, v, len);
    t->tracestate[len] = '\0';
    return true;
}

cm_err cm_trace_begin(cm_trace *t) {
    cm_err rv;
    if (t->trace_id[0] == '\0') {
        do {
            rv = cm_id_random_hex(CM_TRACE_ID_HEX / 2, t->trace_id, sizeof t->trace_id);
            if (rv != CM_OK)
                return rv;
        } while (!hex_field(t->trace_id, CM_TRACE_ID_HEX, 1));
        t->parent_id[0] = '\0';
        t->tracestate[0] = '\0';
        t->flags = CM_TRACE_FLAG_SAMPLED;
    }
    do {
        rv = cm_id_random_hex(CM_TRACE_SPAN_HEX / 2, t->span_id, sizeof t->span_id);
        if (rv != CM_OK)
            return rv;
    } while (!hex_field(t->span_id, CM_TRACE_SPAN_HEX, 1));
    return CM_OK;
}

cm_err cm_trace_format(const cm_trace *t, char *out, size_t cap) {
    if (cap < CM_TRACEPARENT_LEN + 1)
        return CM_ERR_LIMIT;
    snprintf(out, cap, "00-%.32s-%.16s-%02x", t->trace_id, t->span_id, t->flags);
    return CM_OK;
}
