#include "gw_bodylimit.h"
#include "gw_http.h"

#include <string.h>

#include "cm_log.h"
#include "gw_error.h"
#include "gw_server.h"

typedef struct bl_filter {
    h2o_filter_t super;
    gw_server *srv;
} bl_filter;

typedef struct bl_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body; /* the JSON error, in the request's pool */
} bl_ostream;

/* Drops h2o's plain-text body and sends ours when the response ends. */
static void bl_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                       h2o_send_state_t state) {
    bl_ostream *o = (bl_ostream *)self;
    (void)bufs;
    (void)bufcnt;
    if (h2o_send_state_is_in_progress(state))
        h2o_ostream_send_next(self, req, NULL, 0, state);
    else
        h2o_ostream_send_next(self, req, &o->body, 1, state);
}

static void bl_on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
    bl_filter *f = (bl_filter *)self;
    char rid[CM_ID_EXTERNAL_MAX + 1], json[512];
    gw_error e;
    size_t len;
    bl_ostream *o;
    if (req->res.status != 413 || gw_http_res_is_json(req)) {
        h2o_setup_next_ostream(req, slot);
        return;
    }
    gw_server_request_id(f->srv, req, rid, sizeof rid);
    /* h2o 2.2 keeps no Content-Length for the request: the size is not known here. */
    gw_error_set(&e, 413, GW_ERRT_INVALID, "request_too_large", NULL,
                 "request body is larger than the limit of %zu bytes",
                 f->srv->cfg->limits.max_body_bytes);
    len = gw_error_json(&e, json, sizeof json);
    o = (bl_ostream *)h2o_add_ostream(req, sizeof *o, slot);
    o->super.do_send = bl_do_send;
    o->body = h2o_strdup(&req->pool, json, len);
    req->res.content_length = len;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   H2O_STRLIT("application/json"), 1);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          h2o_strdup(&req->pool, rid, strlen(rid)).base, strlen(rid));
    gw_metrics_request(&f->srv->metrics, "other", NULL, 413, -1, 0);
    cm_log(CM_LOG_INFO, rid, "request refused", "status", "413", "reason", e.message, NULL);
    slot = &o->super.next;
    h2o_setup_next_ostream(req, slot);
}

void gw_bodylimit_register(h2o_pathconf_t *pathconf, gw_server *s) {
    bl_filter *f = (bl_filter *)h2o_create_filter(pathconf, sizeof *f);
    f->srv = s;
    f->super.on_setup_ostream = bl_on_setup_ostream;
}
