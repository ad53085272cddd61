/*
 * gw_protoerror: OpenAI error JSON for the HTTP errors h2o answers itself, and the bound on
 * request header size.
 *
 * h2o 2.2.5 refuses some malformed HTTP/1 requests before any handler runs, in two ways:
 *  - through h2o_send_error_generic on the host's fallback path (400 "broken content-length
 *    header" for a negative or non-numeric Content-Length, 400 "unknown transfer-encoding",
 *    400 "broken chunked-encoding", 417 "unknown expectation"): this output filter on that path
 *    rewrites those plain-text bodies into the OpenAI error JSON (h2o's text becomes the
 *    message) with x-request-id, and counts them;
 *  - by writing a fixed "HTTP/1.1 400 Bad Request" (text/plain) straight to the socket, with
 *    no request object and no filter: an unparsable request line or header block, and a
 *    request line + headers above H2O_MAX_REQLEN (417,792 bytes, compiled into libh2o). These
 *    cannot be changed without patching h2o.
 * Below that hard limit the gateway enforces its own, max_header_bytes (request line + header
 * names and values): gw_protoerror_headers_too_large tells the handler to answer 431 JSON.
 * 413 (bodies) is gw_bodylimit's.
 *
 * Thread contract: the filter runs on the loop thread of the request; it keeps no state.
 */
#ifndef GW_PROTOERROR_H
#define GW_PROTOERROR_H

#include <stddef.h>

#include <h2o.h>

struct gw_server;

/* gw_protoerror_register adds the filter to pathconf (the host's fallback_path); s is borrowed
 * (must outlive the h2o configuration). Call before h2o_context_init. */
void gw_protoerror_register(h2o_pathconf_t *pathconf, struct gw_server *s);

/* gw_protoerror_header_bytes: bytes of req's method, path, authority and header names and
 * values (what max_header_bytes bounds). */
size_t gw_protoerror_header_bytes(const h2o_req_t *req);

#endif /* GW_PROTOERROR_H */
