#include "gw_protoerror.h"
#include "gw_http.h"

#include <stdio.h>
#include <string.h>

#include "cm_log.h"
#include "gw_error.h"
#include "gw_server.h"

#define MESSAGE_MAX 200 /* bytes of h2o's own text kept as the message */

typedef struct pe_filter {
    h2o_filter_t super;
    gw_server *srv;
} pe_filter;

typedef struct pe_ostream {
    h2o_ostream_t super;
    int status;
    char rid[CM_ID_EXTERNAL_MAX + 1];
    h2o_iovec_t body; /* the JSON error, in the request's pool */
} pe_ostream;

static const char *code_of(int status) {
    switch (status) {
    case 400:
        return "invalid_request";
    case 417:
        return "expectation_failed";
    default:
        return "invalid_request";
    }
}

/* h2o sends its whole error body in one final send: turn it into the message then. */
static void pe_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                       h2o_send_state_t state) {
    pe_ostream *o = (pe_ostream *)self;
    char text[MESSAGE_MAX + 1], json[768];
    size_t n = 0, len;
    gw_error e;
    for (size_t i = 0; i < bufcnt && n < MESSAGE_MAX; i++) {
        size_t take = bufs[i].len < MESSAGE_MAX - n ? bufs[i].len : MESSAGE_MAX - n;
        memcpy(text + n, bufs[i].base, take);
        n += take;
    }
    text[n] = '\0';
    if (h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(self, req, NULL, 0, state);
        return;
    }
    gw_error_set(&e, o->status, GW_ERRT_INVALID, code_of(o->status), NULL, "%s",
                 n > 0 ? text : "the request is not valid HTTP");
    len = gw_error_json(&e, json, sizeof json);
    o->body = h2o_strdup(&req->pool, json, len);
    /* Headers are written by the final stream, after this: the length can still change. */
    req->res.content_length = len;
    cm_log(CM_LOG_INFO, o->rid, "request refused", "status", o->status == 417 ? "417" : "400",
           "reason", e.message, NULL);
    h2o_ostream_send_next(self, req, &o->body, 1, state);
}

static void pe_on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
    pe_filter *f = (pe_filter *)self;
    pe_ostream *o;
    /* Only h2o's own plain-text 4xx (413 is gw_bodylimit's; ours are JSON already). */
    if (req->res.status < 400 || req->res.status >= 500 || req->res.status == 413 ||
        gw_http_res_is_json(req)) {
        h2o_setup_next_ostream(req, slot);
        return;
    }
    o = (pe_ostream *)h2o_add_ostream(req, sizeof *o, slot);
    o->super.do_send = pe_do_send;
    o->status = req->res.status;
    gw_server_request_id(f->srv, req, o->rid, sizeof o->rid);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   H2O_STRLIT("application/json"), 1);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          h2o_strdup(&req->pool, o->rid, strlen(o->rid)).base, strlen(o->rid));
    gw_metrics_request(&f->srv->metrics, "other", NULL, req->res.status, -1, 0);
    slot = &o->super.next;
    h2o_setup_next_ostream(req, slot);
}

void gw_protoerror_register(h2o_pathconf_t *pathconf, gw_server *s) {
    pe_filter *f = (pe_filter *)h2o_create_filter(pathconf, sizeof *f);
    f->srv = s;
    f->super.on_setup_ostream = pe_on_setup_ostream;
}

size_t gw_protoerror_header_bytes(const h2o_req_t *req) {
    size_t n = req->input.method.len + req->input.path.len + req->input.authority.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
    return n;
}
