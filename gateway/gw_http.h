/*
 * gw_http: response helpers shared by the handlers (loop thread only). Every response gets
 * the x-request-id header; errors use the OpenAI error JSON.
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <h2o.h>

#include "gw_error.h"

/* gw_http_send_json sends a complete JSON response (body copied into the request's pool). */
void gw_http_send_json(h2o_req_t *req, int status, const char *request_id, const char *body,
                       size_t len);
/* gw_http_send_error sends e as OpenAI error JSON with its status (+ Retry-After). */
void gw_http_send_error(h2o_req_t *req, const char *request_id, const gw_error *e);
/* gw_http_add_header adds name: value (both copied into the pool). */
void gw_http_add_header(h2o_req_t *req, const char *name, const char *value);
/* gw_http_res_is_json: the response already says Content-Type application/json (the output
 * filters that turn h2o's plain-text errors into JSON leave those alone). */
int gw_http_res_is_json(h2o_req_t *req);

#endif /* GW_HTTP_H */
