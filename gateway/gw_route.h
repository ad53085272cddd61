/*
 * gw_route: the gateway's one route table. Each row is one endpoint: its path (and an alias
 * spelling, e.g. vLLM's unprefixed /tokenize), whether it also takes "path/{id}", the methods
 * it accepts, the listeners that serve it (public API port, admin port), whether an API key
 * is required, whether its body is bounded by limits.max_body_bytes, the API kind its
 * requests are parsed, rate-limited and formatted as, and its handler. gw_server dispatches
 * with it: the 404 (no row), 405 (row, wrong method), 401 (key) and 413 (body) answers all
 * come from the row, and the row's path is the `route` label of metrics, logs and spans.
 * Adding an endpoint is one row plus its handler; route strings live nowhere else.
 *
 * The table is static and read-only: every function here is safe on any thread.
 */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stddef.h>

#include <h2o.h>

#include "gw_auth.h"
#include "gw_request.h"
#include "gw_server.h"

/* Listeners a route is served on (mask). */
#define GW_LISTENER_PUBLIC 1u
#define GW_LISTENER_ADMIN 2u

/* Methods a route accepts (mask); 0 = any method. */
#define GW_METHOD_GET 1u
#define GW_METHOD_POST 2u

/* The metrics label of requests that match no route (404, 431, h2o's own errors). */
#define GW_ROUTE_LABEL_OTHER "other"

typedef struct gw_route gw_route;

/* A route's handler (loop thread t): owns req's response from here on. tenant is NULL for
 * routes without needs_key, and the auth-disabled tenant when --no-auth. rid is the request
 * id (borrowed: copy it to keep it). */
typedef void (*gw_route_fn)(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                            const gw_tenant *tenant);

struct gw_route {
    const char *path;   /* exact path; also the metrics/log label */
    const char *alias;  /* another spelling served alike, or NULL */
    int takes_id;       /* also matches "path/{id}" (a non-empty tail after one '/') */
    unsigned methods;   /* GW_METHOD_* mask; 0 = any */
    unsigned listeners; /* GW_LISTENER_* mask */
    int needs_key;      /* API key required (401 without one) unless auth is disabled */
    int bounded_body;   /* 413 past limits.max_body_bytes before the handler runs */
    gw_api api;         /* the API kind of its requests; GW_API_NONE for the others */
    gw_route_fn handler;
};

/*
 * gw_route_find returns the row serving path (len bytes, normalized: no query) on listener
 * (one GW_LISTENER_* bit), or NULL (404). The method is not considered: see
 * gw_route_allows. The row is static.
 */
const gw_route *gw_route_find(const char *path, size_t len, unsigned listener);

/* gw_route_allows: 1 when method (len bytes, e.g. "GET") is accepted by r, else 0 (405). */
int gw_route_allows(const gw_route *r, const char *method, size_t len);

/* gw_route_label returns the label (the row's path) of the route whose requests are of kind
 * api, or GW_ROUTE_LABEL_OTHER for GW_API_NONE or an unknown value. Static string. */
const char *gw_route_label(gw_api api);

/* gw_route_id_of: the "{id}" tail of path for a takes_id row (*id_len > 0), or NULL when
 * path is the row's own path (or its alias). path must have matched r. */
const char *gw_route_id_of(const gw_route *r, const char *path, size_t len, size_t *id_len);

#endif /* GW_ROUTE_H */
