#include "lt_run.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cm_clock.h"
#include "lt_openai.h"
#include "lt_report.h"
#include "lt_rng.h"
#include "lt_sse.h"

/* One request slot: a reusable easy handle (its connection is kept by the multi handle). */
typedef struct slot {
    CURL *easy;
    struct run *run;
    int active;
    int measured; /* warm-up requests are not */
    char *body;
    lt_sse sse;
    int sse_ready;
    int64_t start_ns, first_ns, last_ns;
    uint32_t content_chunks;
    lt_openai_chunk last_usage; /* has_usage when the server reported usage */
    int saw_done, saw_finish, stream_error, bad_chunk;
    char message[LT_ERROR_EXAMPLE_BYTES];
    char *resp; /* non-streamed or error body, capped at LT_RUN_MAX_BODY_BYTES */
    size_t resp_len;
    int resp_truncated;
    int streaming; /* the response is read as SSE (2xx and stream requested) */
    int status_known;
    long status;
    double *itl;
    size_t n_itl, cap_itl;
    uint32_t prompt_tokens_est; /* generator's estimate, used when the server reports none */
    char curl_error[CURL_ERROR_SIZE];
} slot;

typedef struct run {
    const lt_run_config *cfg;
    lt_prompt_source *prompts;
    lt_stats *stats;
    CURLM *multi;
    struct curl_slist *headers;
    slot *slots;
    size_t n_slots;
    size_t active;
    /* counters of the current phase */
    uint64_t issued, done, ok, failed;
    uint32_t phase_requests; /* 0 = bounded by time */
    int64_t first_start_ns, last_end_ns;
} run;

static void slot_reset_response(slot *s) {
    s->first_ns = s->last_ns = 0;
    s->content_chunks = 0;
    memset(&s->last_usage, 0, sizeof(s->last_usage));
    s->saw_done = s->saw_finish = s->stream_error = s->bad_chunk = 0;
    s->message[0] = '\0';
    s->resp_len = 0;
    s->resp_truncated = 0;
    s->streaming = 0;
    s->status_known = 0;
    s->status = 0;
    s->n_itl = 0;
    s->curl_error[0] = '\0';
    if (s->sse_ready) {
        lt_sse_reset(&s->sse);
    }
}

static int on_sse_event(void *user, const char *data, size_t len) {
    slot *s = user;
    lt_openai_chunk chunk;
    if (lt_openai_parse_chunk(data, len, &chunk) != CM_OK) {
        s->bad_chunk = 1;
        snprintf(s->message, sizeof(s->message), "malformed stream chunk");
        return 1;
    }
    if (chunk.done) {
        s->saw_done = 1;
        return 0;
    }
    if (chunk.is_error) {
        s->stream_error = 1;
        snprintf(s->message, sizeof(s->message), "%s", chunk.message);
        return 1;
    }
    if (chunk.has_content) {
        int64_t now = cm_clock_mono_ns();
        if (s->first_ns == 0) {
            s->first_ns = now;
        } else if (s->n_itl < LT_RUN_MAX_ITL_PER_REQUEST) {
            if (s->n_itl == s->cap_itl) {
                size_t ncap = s->cap_itl ? s->cap_itl * 2 : 256;
                double *p = realloc(s->itl, ncap * sizeof(*p));
                if (p == NULL) {
                    snprintf(s->message, sizeof(s->message), "out of memory");
                    s->stream_error = 1;
                    return 1;
                }
                s->itl = p;
                s->cap_itl = ncap;
            }
            s->itl[s->n_itl++] = (double)(now - s->last_ns) / 1e6;
        }
        s->last_ns = now;
        s->content_chunks++;
    }
    if (chunk.has_finish_reason) {
        s->saw_finish = 1;
    }
    if (chunk.has_usage) {
        s->last_usage = chunk;
    }
    return 0;
}

static void append_resp(slot *s, const char *data, size_t n) {
    if (s->resp_len + n > LT_RUN_MAX_BODY_BYTES) {
        n = LT_RUN_MAX_BODY_BYTES - s->resp_len;
        s->resp_truncated = 1;
    }
    if (n > 0) {
        memcpy(s->resp + s->resp_len, data, n);
        s->resp_len += n;
    }
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *user) {
    slot *s = user;
    size_t n = size * nmemb;
    if (!s->status_known) {
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
        s->status_known = 1;
        /* a server may ignore "stream": true and answer with one JSON body; read it as such */
        char *ctype = NULL;
        curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ctype);
        int is_sse = ctype == NULL || strncasecmp(ctype, "text/event-stream", 17) == 0;
        s->streaming = s->run->cfg->args->stream && is_sse && s->status >= 200 && s->status < 300;
    }
    if (!s->streaming) {
        append_resp(s, data, n);
        return n;
    }
    cm_err rv = lt_sse_feed(&s->sse, data, n, on_sse_event, s);
    if (rv == CM_ERR_LIMIT) {
        snprintf(s->message, sizeof(s->message), "stream event larger than %u bytes",
                 LT_RUN_MAX_EVENT_BYTES);
        s->bad_chunk = 1;
        return 0; /* abort the transfer */
    }
    if (rv != CM_OK) {
        return 0; /* an error event or a malformed chunk: the request has failed */
    }
    return n;
}

static cm_err slot_start(run *r, slot *s, int measured) {
    const lt_args *a = r->cfg->args;
    cm_err rv = CM_OK;
    if (s->easy == NULL) {
        s->easy = curl_easy_init();
        s->resp = malloc(LT_RUN_MAX_BODY_BYTES);
        if (s->easy == NULL || s->resp == NULL) {
            return CM_ERR_NOMEM;
        }
        rv = lt_sse_init(&s->sse, LT_RUN_MAX_EVENT_BYTES);
        if (rv != CM_OK) {
            return rv;
        }
        s->sse_ready = 1;
        s->run = r;
        CURL *e = s->easy;
        curl_easy_setopt(e, CURLOPT_URL, a->endpoint_url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(e, CURLOPT_PRIVATE, s);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_error);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(a->timeout_s * 1000));
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
    }
    lt_prompt p;
    rv = lt_prompt_next(r->prompts, &p);
    if (rv != CM_OK) {
        return rv;
    }
    free(s->body);
    s->body = NULL;
    rv = lt_openai_request_body(a, &p, &s->body);
    s->prompt_tokens_est = p.input_tokens_est;
    lt_prompt_fini(&p);
    if (rv != CM_OK) {
        return rv;
    }
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body));
    slot_reset_response(s);
    s->measured = measured;
    s->start_ns = cm_clock_mono_ns();
    if (measured && r->first_start_ns == 0) {
        r->first_start_ns = s->start_ns;
    }
    if (curl_multi_add_handle(r->multi, s->easy) != CURLM_OK) {
        return CM_ERR_INTERNAL;
    }
    s->active = 1;
    r->active++;
    r->issued++;
    return CM_OK;
}

/* finish_slot turns a completed transfer into a sample. */
static cm_err finish_slot(run *r, slot *s, CURLcode result) {
    int64_t end_ns = cm_clock_mono_ns();
    curl_multi_remove_handle(r->multi, s->easy);
    s->active = 0;
    r->active--;
    r->done++;
    if (!s->status_known) {
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &s->status);
    }
    if (s->streaming && result == CURLE_OK) {
        if (lt_sse_finish(&s->sse, on_sse_event, s) == CM_ERR_LIMIT) {
            s->bad_chunk = 1;
        }
    }
    lt_sample x;
    memset(&x, 0, sizeof(x));
    x.http_status = (int)s->status;
    x.e2e_ms = (double)(end_ns - s->start_ns) / 1e6;
    x.ttft_ms = -1;
    x.tpot_ms = -1;
    int ok = result == CURLE_OK && s->status >= 200 && s->status < 300;
    if (result != CURLE_OK) {
        /* when the write callback aborted on purpose (bad chunk, error event) keep its message */
        if (!s->bad_chunk && !s->stream_error) {
            snprintf(s->message, sizeof(s->message), "%.150s",
                     s->curl_error[0] ? s->curl_error : curl_easy_strerror(result));
        }
    } else if (!ok) {
        lt_openai_error_message(s->resp, s->resp_len, s->message, sizeof(s->message));
    } else if (s->streaming) {
        if (s->stream_error || s->bad_chunk) {
            ok = 0;
        } else if (!s->saw_done && !s->saw_finish) {
            ok = 0;
            snprintf(s->message, sizeof(s->message), "stream ended before finish_reason/[DONE]");
        }
        if (s->first_ns != 0) {
            x.ttft_ms = (double)(s->first_ns - s->start_ns) / 1e6;
        }
        x.output_tokens =
            s->last_usage.has_usage ? s->last_usage.completion_tokens : s->content_chunks;
        x.prompt_tokens =
            s->last_usage.has_usage ? s->last_usage.prompt_tokens : s->prompt_tokens_est;
    } else {
        lt_openai_chunk resp;
        if (s->resp_truncated || lt_openai_parse_chunk(s->resp, s->resp_len, &resp) != CM_OK) {
            ok = 0;
            snprintf(s->message, sizeof(s->message), "malformed or oversized response body");
        } else if (resp.is_error) {
            ok = 0;
            snprintf(s->message, sizeof(s->message), "%s", resp.message);
        } else {
            /* non-streamed: the first token is only seen with the whole answer */
            x.ttft_ms = x.e2e_ms;
            x.output_tokens = resp.completion_tokens;
            x.prompt_tokens = resp.has_usage ? resp.prompt_tokens : s->prompt_tokens_est;
        }
    }
    if (ok && x.ttft_ms >= 0 && x.output_tokens > 1) {
        x.tpot_ms = (x.e2e_ms - x.ttft_ms) / (double)(x.output_tokens - 1);
    }
    if (ok && s->streaming && s->first_ns == 0) {
        /* a 200 stream with no text at all: the server produced nothing measurable */
        ok = 0;
        snprintf(s->message, sizeof(s->message), "stream carried no content");
    }
    x.ok = ok;
    if (ok) {
        r->ok++;
    } else {
        r->failed++;
    }
    if (!s->measured) {
        return CM_OK;
    }
    r->last_end_ns = end_ns;
    if (!ok) {
        lt_stats_add_error(r->stats, x.http_status, s->message);
    } else if (s->streaming) {
        for (size_t i = 0; i < s->n_itl; i++) {
            cm_err rv = lt_stats_add_itl(r->stats, s->itl[i]);
            if (rv != CM_OK) {
                return rv;
            }
        }
    }
    return lt_stats_add_sample(r->stats, &x);
}

static void progress(run *r, const char *phase, int64_t t0_ns, int final) {
    if (!r->cfg->progress) {
        return;
    }
    lt_report_progress(stderr, r->cfg->label, phase, r->done, r->phase_requests, r->ok, r->failed,
                       r->active, (double)(cm_clock_mono_ns() - t0_ns) / 1e9, final);
}

/*
 * run_phase issues requests until `requests` (if non-zero) or `duration_s` (if non-zero) is
 * reached, with closed-loop concurrency or open-loop arrivals, then drains.
 */
static cm_err run_phase(run *r, uint32_t requests, double duration_s, int measured, char *err,
                        size_t err_len) {
    const lt_run_config *cfg = r->cfg;
    r->issued = r->done = r->ok = r->failed = 0;
    r->phase_requests = requests;
    int open_loop = cfg->concurrency <= 0;
    size_t limit = open_loop ? cfg->max_inflight : (size_t)cfg->concurrency;
    if (limit > r->n_slots) {
        limit = r->n_slots;
    }
    lt_rng arrivals;
    lt_rng_seed(&arrivals, cfg->seed ^ 0xa771a1ULL);
    int64_t t0 = cm_clock_mono_ns();
    int64_t deadline = duration_s > 0 ? t0 + (int64_t)(duration_s * 1e9) : INT64_MAX;
    int64_t next_arrival = open_loop && measured
                               ? t0 + (int64_t)(lt_rng_exponential(&arrivals, cfg->rate_rps) * 1e9)
                               : t0;
    int64_t next_progress = t0;
    cm_err rv = CM_OK;
    const char *phase = measured ? "run" : "warmup";
    for (;;) {
        int64_t now = cm_clock_mono_ns();
        int stopping = cfg->stop != NULL && *cfg->stop;
        int may_issue = !stopping && now < deadline && (requests == 0 || r->issued < requests);
        /* start what may start */
        while (may_issue && r->active < limit && (requests == 0 || r->issued < requests)) {
            if (open_loop && measured && now < next_arrival) {
                break;
            }
            slot *s = NULL;
            for (size_t i = 0; i < limit; i++) {
                if (!r->slots[i].active) {
                    s = &r->slots[i];
                    break;
                }
            }
            rv = slot_start(r, s, measured);
            if (rv != CM_OK) {
                snprintf(err, err_len, "cannot start a request: %s", cm_strerror(rv));
                return rv;
            }
            if (open_loop && measured) {
                next_arrival += (int64_t)(lt_rng_exponential(&arrivals, cfg->rate_rps) * 1e9);
            }
        }
        if (r->active == 0 && (!may_issue || (requests != 0 && r->issued >= requests))) {
            break;
        }
        int running = 0;
        curl_multi_perform(r->multi, &running);
        CURLMsg *msg;
        int left = 0;
        int finished_any = 0;
        while ((msg = curl_multi_info_read(r->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }
            slot *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            finished_any = 1;
            rv = finish_slot(r, s, msg->data.result);
            if (rv != CM_OK) {
                snprintf(err, err_len, "cannot record a sample: %s", cm_strerror(rv));
                return rv;
            }
        }
        if (stopping && r->active > 0) {
            /* interrupted: abandon what is in flight, it is not measured */
            for (size_t i = 0; i < r->n_slots; i++) {
                if (r->slots[i].active) {
                    curl_multi_remove_handle(r->multi, r->slots[i].easy);
                    r->slots[i].active = 0;
                }
            }
            r->active = 0;
            break;
        }
        now = cm_clock_mono_ns();
        if (now >= next_progress) {
            progress(r, phase, t0, 0);
            next_progress = now + 500 * 1000000LL;
        }
        if (finished_any) {
            continue; /* a slot is free: start its next request before waiting on anything */
        }
        /* sleep until network activity, the next arrival or the next progress tick */
        int64_t wake = next_progress;
        if (open_loop && measured && next_arrival < wake) {
            wake = next_arrival;
        }
        int timeout_ms = (int)((wake - now) / 1000000);
        if (timeout_ms < 0) {
            timeout_ms = 0;
        }
        if (timeout_ms > 100) {
            timeout_ms = 100;
        }
        if (r->active > 0) {
            curl_multi_poll(r->multi, NULL, 0, timeout_ms, NULL);
        } else if (timeout_ms > 0) {
            usleep((useconds_t)timeout_ms * 1000);
        }
    }
    progress(r, phase, t0, 1);
    return CM_OK;
}

/* add_header appends line to *list; on failure *list is unchanged (still owned by the caller). */
static cm_err add_header(struct curl_slist **list, const char *line) {
    struct curl_slist *next = curl_slist_append(*list, line);
    if (next == NULL) {
        return CM_ERR_NOMEM;
    }
    *list = next;
    return CM_OK;
}

cm_err lt_run(const lt_run_config *cfg, lt_prompt_source *prompts, lt_stats *stats,
              double *duration_s_out, char *err, size_t err_len) {
    *duration_s_out = 0;
    err[0] = '\0';
    cm_err rv = CM_OK;
    run r;
    memset(&r, 0, sizeof(r));
    r.cfg = cfg;
    r.prompts = prompts;
    r.stats = stats;
    if ((cfg->concurrency <= 0 && !(cfg->rate_rps > 0)) ||
        (cfg->requests == 0 && !(cfg->duration_s > 0))) {
        snprintf(err, err_len, "a run needs concurrency or rate, and requests or duration");
        return CM_ERR_INVALID;
    }
    r.n_slots = cfg->concurrency > 0 ? (size_t)cfg->concurrency : cfg->max_inflight;
    r.slots = calloc(r.n_slots, sizeof(*r.slots));
    r.multi = curl_multi_init();
    /* No "Expect: 100-continue" round trip before large bodies. */
    if (add_header(&r.headers, "Content-Type: application/json") != CM_OK ||
        add_header(&r.headers, "Expect:") != CM_OK) {
        snprintf(err, err_len, "out of memory setting up the run");
        rv = CM_ERR_NOMEM;
        goto done;
    }
    if (cfg->args->api_key != NULL) {
        char auth[1024];
        if ((size_t)snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->args->api_key) >=
            sizeof(auth)) {
            snprintf(err, err_len, "API key too long");
            rv = CM_ERR_INVALID;
            goto done;
        }
        if (add_header(&r.headers, auth) != CM_OK) {
            snprintf(err, err_len, "out of memory setting up the run");
            rv = CM_ERR_NOMEM;
            goto done;
        }
    }
    if (r.slots == NULL || r.multi == NULL) {
        snprintf(err, err_len, "out of memory setting up the run");
        rv = CM_ERR_NOMEM;
        goto done;
    }
    curl_multi_setopt(r.multi, CURLMOPT_MAXCONNECTS, (long)r.n_slots);
    if (cfg->warmup > 0) {
        rv = run_phase(&r, cfg->warmup, 0, 0, err, err_len);
        if (rv != CM_OK) {
            goto done;
        }
    }
    r.first_start_ns = r.last_end_ns = 0;
    rv = run_phase(&r, cfg->requests, cfg->duration_s, 1, err, err_len);
    if (rv == CM_OK && r.first_start_ns != 0 && r.last_end_ns > r.first_start_ns) {
        *duration_s_out = (double)(r.last_end_ns - r.first_start_ns) / 1e9;
    }
done:
    for (size_t i = 0; r.slots != NULL && i < r.n_slots; i++) {
        slot *s = &r.slots[i];
        if (s->easy != NULL) {
            if (s->active) {
                curl_multi_remove_handle(r.multi, s->easy);
            }
            curl_easy_cleanup(s->easy);
        }
        if (s->sse_ready) {
            lt_sse_fini(&s->sse);
        }
        free(s->body);
        free(s->resp);
        free(s->itl);
    }
    free(r.slots);
    if (r.multi != NULL) {
        curl_multi_cleanup(r.multi);
    }
    curl_slist_free_all(r.headers);
    return rv;
}
