/*
 * cm_trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) ids for one request.
 * The gateway accepts a client's `traceparent`/`tracestate` (or starts a trace), makes its own
 * span the parent of the worker's, sends both over the wire (Submit fields 20, 21) and returns
 * its `traceparent` to the client; both sides put the trace id in every log line about the
 * request. Pure functions on bounded strings: any thread, no allocation.
 */
#ifndef CM_TRACE_H
#define CM_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define CM_TRACE_ID_HEX 32    /* trace-id: 16 bytes */
#define CM_TRACE_SPAN_HEX 16  /* parent-id / span id: 8 bytes */
#define CM_TRACEPARENT_LEN 55 /* "00-" trace "-" span "-" flags */
#define CM_TRACESTATE_MAX 512 /* longest tracestate carried (W3C: at least 512 must pass) */
#define CM_TRACE_FLAG_SAMPLED 0x01

typedef struct cm_trace {
    char trace_id[CM_TRACE_ID_HEX + 1];     /* lower-case hex, never all zeros */
    char span_id[CM_TRACE_SPAN_HEX + 1];    /* the span this side runs the request in */
    char parent_id[CM_TRACE_SPAN_HEX + 1];  /* the caller's span; "" when the trace started here */
    uint8_t flags;                          /* trace-flags (bit 0: sampled) */
    char tracestate[CM_TRACESTATE_MAX + 1]; /* "" when absent or dropped */
} cm_trace;

/*
 * cm_trace_parse_parent reads a traceparent header value of len bytes (not NUL-terminated) into
 * t->trace_id, t->parent_id and t->flags, following the spec's rules: version 00 is exactly 55
 * characters; a higher version (not ff) may be longer when a '-' follows the first 55; hex is
 * lower-case; all-zero trace or parent ids are invalid. CM_OK, else CM_ERR_INVALID and t is
 * unchanged. Leading/trailing spaces and tabs (HTTP OWS) are ignored.
 */
cm_err cm_trace_parse_parent(const char *value, size_t len, cm_trace *t);

/*
 * cm_trace_accept_state stores a tracestate header value in t->tracestate when it is at most
 * CM_TRACESTATE_MAX bytes of printable ASCII with at most 32 list members, else clears it
 * (dropping is what the spec allows for a value that cannot be carried whole). Returns true when
 * stored.
 */
bool cm_trace_accept_state(const char *value, size_t len, cm_trace *t);

/*
 * cm_trace_begin gives t a new span id (random, non-zero); when t has no trace id yet (no valid
 * traceparent came in) it also starts a trace: a new random trace id, sampled flag set, no
 * parent and no tracestate. CM_ERR_IO when no randomness is available.
 */
cm_err cm_trace_begin(cm_trace *t);

/* cm_trace_format writes "00-<trace_id>-<span_id>-<flags>" (this side's span as the parent of
 * the next hop) into out; cap must be at least CM_TRACEPARENT_LEN + 1, else CM_ERR_LIMIT. */
cm_err cm_trace_format(const cm_trace *t, char *out, size_t cap);

/* cm_trace_log_id: the trace id for log lines ("-" when the request has none). */
static inline const char *cm_trace_log_id(const cm_trace *t) {
    return t->trace_id[0] ? t->trace_id : "-";
}

#endif /* CM_TRACE_H */
