/*
 * gw_otlp: exports the gateway's spans to an OpenTelemetry collector with OTLP/HTTP and JSON
 * bodies (POST <endpoint>/v1/traces, plain http://), from one background thread.
 *
 * Why hand-written: Debian 12 packages no C or C++ OpenTelemetry/OTLP library (only the Go
 * SDK), and the JSON encoding of OTLP over HTTP/1.1 needs nothing the gateway does not link
 * already (jansson, sockets). Loop threads only copy a span into a bounded queue
 * (gw_otlp_emit never blocks and never allocates); the exporter thread batches (up to
 * GW_OTLP_BATCH spans or one second), posts with a 2 s timeout and drops a batch the
 * collector does not take (counted, and logged at most every 10 s): tracing never slows or
 * fails a request. TLS is not spoken: point it at a collector or agent next to the gateway.
 */
#ifndef GW_OTLP_H
#define GW_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "cm_trace.h"

#define GW_OTLP_QUEUE 4096 /* spans waiting for export; beyond: dropped */
#define GW_OTLP_BATCH 256  /* spans per POST */

typedef enum gw_span_kind {
    GW_SPAN_INTERNAL = 1,
    GW_SPAN_SERVER = 2,
    GW_SPAN_CLIENT = 3,
} gw_span_kind;

/* One finished span; plain data, copied by gw_otlp_emit. Strings are NUL-terminated and
 * truncated to fit. */
typedef struct gw_span {
    char trace_id[CM_TRACE_ID_HEX + 1];
    char span_id[CM_TRACE_SPAN_HEX + 1];
    char parent_id[CM_TRACE_SPAN_HEX + 1]; /* "" = root span */
    char name[48];
    gw_span_kind kind;
    int64_t start_unix_ns, end_unix_ns;
    int http_status;       /* 0 = none; >= 500 marks the span as an error */
    char route[32];        /* attribute http.route */
    char model[64];        /* attribute sluice.model */
    char request_id[72];   /* attribute sluice.request_id */
    char served_model[64]; /* attribute sluice.served_model (routing and worker spans) */
    char worker[96];       /* attribute sluice.worker.address (routing and worker spans) */
} gw_span;

typedef struct gw_otlp gw_otlp;

/*
 * gw_otlp_create checks endpoint ("http://HOST:PORT[/path]"; "/v1/traces" is appended unless
 * the path already ends with it) and starts the exporter thread. On CM_OK *out owns it (free
 * with gw_otlp_destroy); else err holds one line and *out is NULL.
 */
cm_err gw_otlp_create(const char *endpoint, const char *service_name, gw_otlp **out, char *err,
                      size_t errlen);

/* gw_otlp_emit queues a copy of span; any thread; never blocks (a full queue drops it). */
void gw_otlp_emit(gw_otlp *x, const gw_span *span);

/* gw_otlp_dropped: spans dropped so far (queue full or export failed). Any thread. */
uint64_t gw_otlp_dropped(gw_otlp *x);

/* gw_otlp_destroy exports what is queued (one last attempt), stops the thread and frees x.
 * NULL is fine. Not concurrently with gw_otlp_emit. */
void gw_otlp_destroy(gw_otlp *x);

/* gw_otlp_encode writes the OTLP/JSON ExportTraceServiceRequest of spans into a new string
 * (free with free()); NULL when out of memory. For the exporter and its tests. */
char *gw_otlp_encode(const char *service_name, const gw_span *spans, size_t n);

#endif /* GW_OTLP_H */
