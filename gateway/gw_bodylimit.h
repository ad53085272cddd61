/*
 * gw_bodylimit: the OpenAI JSON 413 for bodies that h2o refuses before our handler runs.
 *
 * h2o 2.2.5 reads the whole request body before calling a handler and enforces
 * max_request_entity_size itself: HTTP/1 with Content-Length > limit, HTTP/1 chunked once the
 * decoded body reaches the limit, HTTP/2 likewise; it then answers a plain-text 413 through
 * h2o_send_error_generic on the host's fallback path, without calling any handler. The gateway
 * sets h2o's limit to 2 * max_body_bytes + 64 KiB, so the handler sees (and answers with the
 * OpenAI 413) every body moderately over the limit, on a connection that stays usable; this
 * output filter on the fallback path rewrites h2o's own plain 413 for anything larger into the
 * same OpenAI error JSON with x-request-id (and counts it).
 *
 * Known h2o 2.2.5 limit: for those larger bodies h2o answers as soon as it sees the
 * Content-Length (or the decoded chunked size reaches its limit) and closes the connection
 * without draining the rest (no lingering close). A client that is still sending then gets a
 * TCP reset, which may discard the 413 before the client reads it; clients that wait for the
 * answer (Expect: 100-continue) or that had sent everything always read it.
 *
 * Thread contract: the filter runs on the loop thread of the request; it keeps no state.
 */
#ifndef GW_BODYLIMIT_H
#define GW_BODYLIMIT_H

#include <stddef.h>

#include <h2o.h>

struct gw_server;

/* gw_bodylimit_register adds the filter to pathconf (the host's fallback_path); s is borrowed
 * (must outlive the h2o configuration). Call before h2o_context_init. */
void gw_bodylimit_register(h2o_pathconf_t *pathconf, struct gw_server *s);

#endif /* GW_BODYLIMIT_H */
