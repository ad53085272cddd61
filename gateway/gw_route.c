/*
 * gw_route: the table (see gw_route.h). Rows are few, so lookups scan it.
 */
#include "gw_route.h"

#include <string.h>

#include "gw_call.h"
#include "gw_tokenize.h"

/* Chat and completions go to gw_call with the row's API kind. */
static void start_call(gw_thread *t, h2o_req_t *req, const gw_route *route, const char *rid,
                       const gw_tenant *tenant) {
    gw_call_start(t, req, route->api, rid, tenant);
}

#define PUBLIC GW_LISTENER_PUBLIC
#define ADMIN GW_LISTENER_ADMIN
#define GET GW_METHOD_GET
#define POST GW_METHOD_POST

static const gw_route routes[] = {
    /* path, alias, takes_id, methods, listeners, needs_key, bounded_body, api, handler */
    /* Probes: any method, both listeners (probes may use either), no key. */
    {"/health", NULL, 0, 0, PUBLIC | ADMIN, 0, 0, GW_API_NONE, gw_server_on_health},
    {"/ready", NULL, 0, 0, PUBLIC | ADMIN, 0, 0, GW_API_NONE, gw_server_on_ready},
    /* Names tenants and worker addresses: the admin listener only. */
    {"/metrics", NULL, 0, GET, ADMIN, 0, 0, GW_API_NONE, gw_server_on_metrics},
    {"/v1/models", NULL, 1, GET, PUBLIC, 1, 0, GW_API_NONE, gw_server_on_models},
    {"/v1/chat/completions", NULL, 0, POST, PUBLIC, 1, 1, GW_API_CHAT, start_call},
    {"/v1/completions", NULL, 0, POST, PUBLIC, 1, 1, GW_API_COMPLETIONS, start_call},
    /* vLLM's tooling endpoints; vLLM serves them without the /v1 prefix. */
    {"/v1/tokenize", "/tokenize", 0, POST, PUBLIC, 1, 1, GW_API_TOKENIZE, gw_tokenize_start},
    {"/v1/detokenize", "/detokenize", 0, POST, PUBLIC, 1, 1, GW_API_DETOKENIZE, gw_tokenize_start},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

static int same(const char *a, const char *path, size_t len) {
    return a != NULL && strlen(a) == len && memcmp(a, path, len) == 0;
}

/* path is "<base>/<non-empty tail>". */
static int under(const char *base, const char *path, size_t len) {
    size_t n = base != NULL ? strlen(base) : 0;
    return n > 0 && len > n + 1 && memcmp(path, base, n) == 0 && path[n] == '/';
}

const gw_route *gw_route_find(const char *path, size_t len, unsigned listener) {
    for (size_t i = 0; i < N_ROUTES; i++) {
        const gw_route *r = &routes[i];
        if ((r->listeners & listener) == 0)
            continue;
        if (same(r->path, path, len) || same(r->alias, path, len))
            return r;
        if (r->takes_id && (under(r->path, path, len) || under(r->alias, path, len)))
            return r;
    }
    return NULL;
}

int gw_route_allows(const gw_route *r, const char *method, size_t len) {
    if (r->methods == 0)
        return 1;
    if ((r->methods & GW_METHOD_GET) && len == 3 && memcmp(method, "GET", 3) == 0)
        return 1;
    if ((r->methods & GW_METHOD_POST) && len == 4 && memcmp(method, "POST", 4) == 0)
        return 1;
    return 0;
}

const char *gw_route_label(gw_api api) {
    if (api == GW_API_NONE)
        return GW_ROUTE_LABEL_OTHER;
    for (size_t i = 0; i < N_ROUTES; i++)
        if (routes[i].api == api)
            return routes[i].path;
    return GW_ROUTE_LABEL_OTHER;
}

const char *gw_route_id_of(const gw_route *r, const char *path, size_t len, size_t *id_len) {
    const char *base = under(r->path, path, len)    ? r->path
                       : under(r->alias, path, len) ? r->alias
                                                    : NULL;
    size_t n = base != NULL ? strlen(base) + 1 : 0;
    *id_len = 0;
    if (!r->takes_id || base == NULL)
        return NULL;
    *id_len = len - n;
    return path + n;
}
