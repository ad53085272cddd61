/*
 * sluice-fake-worker: a FAKE worker. It runs no model. It speaks the worker side of
 * proto/sluice.proto on the same transport as sluice-worker (worker/service/transport.c: the
 * SP pair1 wire over nng streams, which gateways dial with ordinary pair1 sockets), and
 * answers every Submit with N Tokens events and a Finished, so that a load test through the
 * gateway measures the gateway's own overhead (HTTP, auth, routing, nng, SSE) with the
 * model's cost taken out.
 *
 *   sluice-fake-worker [--listen ADDR] [--model NAME] [--tokens N] [--token-delay-us N]
 *                      [--max-context N] [--max-running N]
 *
 * N is the Submit's max_tokens when given (capped at LT_FAKE_MAX_TOKENS), else --tokens.
 * With --token-delay-us 0 (the default) a request is answered in full at once; with a delay
 * D, every running request gets one token every D microseconds, like a continuously
 * batched decode loop. Hello goes to each connection when it opens, Stats to all every
 * 250 ms. A peer whose Hello names another protocol version gets Error{PROTOCOL} for its
 * Submits; a Submit for another model gets Error{NOT_FOUND}; beyond --max-running
 * requests, Error{OVERLOADED}. Every Hello says role "fake-worker" and backend "fake", so it
 * cannot be mistaken for a real worker in a gateway's logs.
 *
 * Threads: transport callbacks (nng threads) only push into a bounded inbox; the main thread
 * decodes and answers; a stats thread broadcasts Stats.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_clock.h"
#include "cm_err.h"
#include "cm_log.h"
#include "sluice.pb-c.h"
#include "transport.h"

#define LT_FAKE_MAX_TOKENS 65536u
#define LT_FAKE_INBOX 4096u       /* messages waiting for the main thread */
#define LT_FAKE_MAX_REFUSED 1024u /* connections remembered as protocol-refused */
#define STATS_PERIOD_MS 250

/* An inbox entry: a message from a connection, or (data == NULL) its closing. */
typedef struct inbox_item {
    uint32_t conn_id;
    uint8_t *data; /* owned; NULL = connection closed */
    size_t len;
} inbox_item;

typedef struct fake_request {
    uint32_t conn_id;
    uint64_t request_id;
    uint32_t remaining, total, prompt_tokens;
    int by_length;
} fake_request;

typedef struct fake_worker {
    /* settings, read-only after start */
    const char *listen;
    const char *model;
    uint32_t tokens;
    uint32_t token_delay_us;
    uint32_t max_context;
    uint32_t max_running;
    char instance_id[128];
    wk_transport *transport;
    /* inbox: filled by transport callbacks, drained by the main thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    inbox_item inbox[LT_FAKE_INBOX];
    size_t inbox_head, inbox_len;
    uint64_t inbox_dropped;
    /* main thread only */
    fake_request *running; /* max_running entries */
    size_t n_running;
    uint32_t refused[LT_FAKE_MAX_REFUSED];
    size_t n_refused;
    uint64_t submits;
    /* read by the stats thread */
    atomic_uint running_count;
} fake_worker;

/* Set by SIGINT/SIGTERM and by main, read by the stats and main threads: a lock-free atomic
 * (safe in a signal handler; volatile sig_atomic_t is not a cross-thread synchronization). */
static atomic_int g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static cm_err send_env(fake_worker *w, uint32_t conn, const Sluice__Envelope *env,
                       wk_send_class cls) {
    uint8_t stack_buf[512];
    size_t len = sluice__envelope__get_packed_size(env);
    uint8_t *buf = len <= sizeof(stack_buf) ? stack_buf : malloc(len);
    if (buf == NULL) {
        return CM_ERR_NOMEM;
    }
    sluice__envelope__pack(env, buf);
    cm_err rv = wk_transport_send(w->transport, conn, buf, len, cls);
    if (buf != stack_buf) {
        free(buf);
    }
    return rv;
}

static void send_hello(fake_worker *w, uint32_t conn) {
    Sluice__Hello hello = SLUICE__HELLO__INIT;
    hello.protocol_version = SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION;
    hello.role = "fake-worker";
    hello.model = (char *)w->model;
    hello.has_max_context_tokens = 1;
    hello.max_context_tokens = w->max_context;
    hello.has_max_batch_tokens = 1;
    hello.max_batch_tokens = 8192;
    hello.has_max_waiting = 1;
    hello.max_waiting = LT_FAKE_INBOX;
    hello.backend = "fake";
    hello.instance_id = w->instance_id;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &hello;
    send_env(w, conn, &env, WK_SEND_NORMAL);
}

static void send_error(fake_worker *w, uint32_t conn, uint64_t request_id, cm_err code,
                       const char *message) {
    Sluice__Error e = SLUICE__ERROR__INIT;
    e.code = (uint32_t)code;
    e.message = (char *)message;
    Sluice__Event ev = SLUICE__EVENT__INIT;
    ev.request_id = request_id;
    ev.kind_case = SLUICE__EVENT__KIND_ERROR;
    ev.error = &e;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &ev;
    send_env(w, conn, &env, WK_SEND_FINAL);
}

static cm_err send_token(fake_worker *w, const fake_request *r) {
    int32_t id = (int32_t)(100 + (r->total - r->remaining) % 1000);
    Sluice__Tokens t = SLUICE__TOKENS__INIT;
    t.n_token_ids = 1;
    t.token_ids = &id;
    t.text = " fake";
    Sluice__Event ev = SLUICE__EVENT__INIT;
    ev.request_id = r->request_id;
    ev.kind_case = SLUICE__EVENT__KIND_TOKENS;
    ev.tokens = &t;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &ev;
    return send_env(w, r->conn_id, &env, WK_SEND_NORMAL);
}

static void send_finished(fake_worker *w, const fake_request *r, Sluice__FinishReason reason) {
    Sluice__Usage usage = SLUICE__USAGE__INIT;
    usage.prompt_tokens = r->prompt_tokens;
    usage.completion_tokens = r->total - r->remaining;
    Sluice__Finished fin = SLUICE__FINISHED__INIT;
    fin.reason = reason;
    fin.usage = &usage;
    Sluice__Event ev = SLUICE__EVENT__INIT;
    ev.request_id = r->request_id;
    ev.kind_case = SLUICE__EVENT__KIND_FINISHED;
    ev.finished = &fin;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &ev;
    send_env(w, r->conn_id, &env, WK_SEND_FINAL);
}

/* ---- transport callbacks (nng threads): never block, only queue ---- */

static void inbox_push(fake_worker *w, uint32_t conn, const uint8_t *data, size_t len) {
    uint8_t *copy = NULL;
    if (data != NULL) {
        copy = malloc(len ? len : 1);
        if (copy == NULL) {
            return;
        }
        memcpy(copy, data, len);
    }
    pthread_mutex_lock(&w->mu);
    /* a close must never be lost (it frees per-connection state); messages may be */
    if (w->inbox_len == LT_FAKE_INBOX && copy != NULL) {
        w->inbox_dropped++;
        pthread_mutex_unlock(&w->mu);
        free(copy);
        return;
    }
    if (w->inbox_len < LT_FAKE_INBOX) {
        inbox_item *it = &w->inbox[(w->inbox_head + w->inbox_len) % LT_FAKE_INBOX];
        it->conn_id = conn;
        it->data = copy;
        it->len = len;
        w->inbox_len++;
    }
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void on_open(void *arg, uint32_t conn) {
    send_hello(arg, conn); /* queues only: allowed in a callback */
}

static void on_message(void *arg, uint32_t conn, const uint8_t *data, size_t len) {
    inbox_push(arg, conn, data, len);
}

static void on_close(void *arg, uint32_t conn) {
    inbox_push(arg, conn, NULL, 0);
}

/* ---- main thread ---- */

static int is_refused(const fake_worker *w, uint32_t conn) {
    for (size_t i = 0; i < w->n_refused; i++) {
        if (w->refused[i] == conn) {
            return 1;
        }
    }
    return 0;
}

static void forget_conn(fake_worker *w, uint32_t conn) {
    for (size_t i = 0; i < w->n_refused; i++) {
        if (w->refused[i] == conn) {
            w->refused[i] = w->refused[--w->n_refused];
            break;
        }
    }
    /* the gateway is gone: its requests are cancelled, as a real worker does */
    for (size_t i = 0; i < w->n_running;) {
        if (w->running[i].conn_id == conn) {
            w->running[i] = w->running[--w->n_running];
        } else {
            i++;
        }
    }
}

static uint32_t prompt_tokens_estimate(const Sluice__Submit *s) {
    /* about 4 bytes per token, the usual rule of thumb for English */
    size_t bytes = 0;
    for (size_t i = 0; i < s->n_messages; i++) {
        bytes += s->messages[i]->content ? strlen(s->messages[i]->content) : 0;
    }
    if (s->prompt != NULL) {
        bytes += strlen(s->prompt);
    }
    size_t tokens = s->n_prompt_token_ids + (bytes + 3) / 4;
    return tokens > UINT32_MAX ? UINT32_MAX : (uint32_t)tokens;
}

static void start_request(fake_worker *w, uint32_t conn, const Sluice__Submit *s) {
    w->submits++;
    if (is_refused(w, conn)) {
        send_error(w, conn, s->request_id, CM_ERR_PROTOCOL, "protocol version mismatch");
        return;
    }
    if (s->model != NULL && s->model[0] != '\0' && strcmp(s->model, w->model) != 0) {
        send_error(w, conn, s->request_id, CM_ERR_NOT_FOUND,
                   "this fake worker serves another model");
        return;
    }
    for (size_t i = 0; i < w->n_running; i++) {
        if (w->running[i].conn_id == conn && w->running[i].request_id == s->request_id) {
            send_error(w, conn, s->request_id, CM_ERR_EXISTS, "duplicate request id");
            return;
        }
    }
    if (w->n_running == w->max_running) {
        send_error(w, conn, s->request_id, CM_ERR_OVERLOADED, "fake worker is full");
        return;
    }
    fake_request *r = &w->running[w->n_running++];
    r->conn_id = conn;
    r->request_id = s->request_id;
    r->total = s->has_max_tokens ? s->max_tokens : w->tokens;
    if (r->total > LT_FAKE_MAX_TOKENS) {
        r->total = LT_FAKE_MAX_TOKENS;
    }
    r->remaining = r->total;
    r->by_length = s->has_max_tokens;
    r->prompt_tokens = prompt_tokens_estimate(s);
}

static void cancel_request(fake_worker *w, uint32_t conn, uint64_t request_id) {
    for (size_t i = 0; i < w->n_running; i++) {
        if (w->running[i].conn_id == conn && w->running[i].request_id == request_id) {
            send_finished(w, &w->running[i], SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED);
            w->running[i] = w->running[--w->n_running];
            return;
        }
    }
}

static void handle(fake_worker *w, uint32_t conn, const uint8_t *data, size_t len) {
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, data);
    if (env == NULL) {
        cm_logf(CM_LOG_WARN, NULL, "fake worker: undecodable message (%zu bytes) on conn %u", len,
                conn);
        return;
    }
    /* garbage can unpack "successfully": trust only a known oneof case with its field set */
    switch (env->msg_case) {
    case SLUICE__ENVELOPE__MSG_HELLO:
        if (env->hello != NULL &&
            env->hello->protocol_version != SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION &&
            !is_refused(w, conn) && w->n_refused < LT_FAKE_MAX_REFUSED) {
            cm_logf(CM_LOG_ERROR, NULL,
                    "fake worker: peer speaks protocol version %u, this fake worker %u: refused",
                    env->hello->protocol_version, SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION);
            w->refused[w->n_refused++] = conn;
        }
        break;
    case SLUICE__ENVELOPE__MSG_SUBMIT:
        if (env->submit != NULL) {
            start_request(w, conn, env->submit);
        }
        break;
    case SLUICE__ENVELOPE__MSG_CANCEL:
        if (env->cancel != NULL) {
            cancel_request(w, conn, env->cancel->request_id);
        }
        break;
    default:
        cm_logf(CM_LOG_WARN, NULL, "fake worker: unexpected message case %d", env->msg_case);
        break;
    }
    sluice__envelope__free_unpacked(env, NULL);
}

/* step emits tokens: all of them at once without a delay, else one per running request. */
static void step(fake_worker *w) {
    for (size_t i = 0; i < w->n_running;) {
        fake_request *r = &w->running[i];
        uint32_t burst = w->token_delay_us == 0 ? r->remaining : 1;
        cm_err rv = CM_OK;
        for (uint32_t k = 0; k < burst && r->remaining > 0 && rv == CM_OK; k++) {
            rv = send_token(w, r);
            if (rv == CM_OK) {
                r->remaining--;
            }
        }
        if (rv == CM_ERR_OVERLOADED) {
            /* the gateway reads too slowly: fail this request as a real worker would */
            send_error(w, r->conn_id, r->request_id, CM_ERR_OVERLOADED, "send queue full");
        } else if (rv == CM_OK && r->remaining == 0) {
            send_finished(w, r,
                          r->by_length ? SLUICE__FINISH_REASON__FINISH_REASON_LENGTH
                                       : SLUICE__FINISH_REASON__FINISH_REASON_STOP);
        } else if (rv == CM_OK) {
            i++;
            continue;
        }
        *r = w->running[--w->n_running]; /* finished, failed, or its connection is gone */
    }
    atomic_store(&w->running_count, (unsigned)w->n_running);
}

static void *stats_thread(void *arg) {
    fake_worker *w = arg;
    while (!g_stop) {
        Sluice__Stats st = SLUICE__STATS__INIT;
        st.has_waiting = 1;
        st.waiting = 0;
        st.has_running = 1;
        st.running = atomic_load(&w->running_count);
        st.has_kv_blocks_free = 1;
        st.kv_blocks_free = 1024;
        st.has_kv_blocks_total = 1;
        st.kv_blocks_total = 1024;
        st.has_draining = 1;
        st.draining = 0;
        Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
        env.msg_case = SLUICE__ENVELOPE__MSG_STATS;
        env.stats = &st;
        uint8_t buf[128];
        size_t len = sluice__envelope__get_packed_size(&env);
        if (len <= sizeof(buf)) {
            sluice__envelope__pack(&env, buf);
            wk_transport_broadcast(w->transport, buf, len, WK_SEND_DROPPABLE);
        }
        cm_clock_sleep_ms(STATS_PERIOD_MS);
    }
    return NULL;
}

static void serve(fake_worker *w) {
    int64_t next_step_us = cm_clock_mono_ns() / 1000;
    while (!g_stop) {
        inbox_item item = {0};
        int have = 0;
        pthread_mutex_lock(&w->mu);
        if (w->inbox_len == 0) {
            /* sleep until a message, the next decode step, or 100 ms (to see g_stop) */
            int64_t wait_us = 100000;
            if (w->n_running > 0 && w->token_delay_us > 0) {
                wait_us = next_step_us - cm_clock_mono_ns() / 1000;
            } else if (w->n_running > 0) {
                wait_us = 0;
            }
            if (wait_us > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t ns = ts.tv_nsec + wait_us * 1000;
                ts.tv_sec += ns / 1000000000;
                ts.tv_nsec = ns % 1000000000;
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            }
        }
        if (w->inbox_len > 0) {
            item = w->inbox[w->inbox_head];
            w->inbox_head = (w->inbox_head + 1) % LT_FAKE_INBOX;
            w->inbox_len--;
            have = 1;
        }
        pthread_mutex_unlock(&w->mu);
        if (have) {
            if (item.data == NULL) {
                forget_conn(w, item.conn_id);
            } else {
                handle(w, item.conn_id, item.data, item.len);
                free(item.data);
            }
        }
        int64_t now_us = cm_clock_mono_ns() / 1000;
        if (w->n_running > 0 && (w->token_delay_us == 0 || now_us >= next_step_us)) {
            step(w);
            next_step_us = now_us + w->token_delay_us;
        }
    }
}

static const char usage_text[] =
    "usage: sluice-fake-worker [--listen ADDR] [--model NAME] [--tokens N]\n"
    "                          [--token-delay-us N] [--max-context N] [--max-running N]\n"
    "A FAKE worker (no model) that answers every Submit at once, to measure gateway overhead.\n"
    "  --listen ADDR        nng address (default tcp://127.0.0.1:5599)\n"
    "  --model NAME         model name it claims to serve (default smollm2-135m-instruct)\n"
    "  --tokens N           tokens per answer when the request sets no max_tokens (default 16)\n"
    "  --token-delay-us N   one token per running request every N us (default 0: instant)\n"
    "  --max-context N      context length announced in Hello (default 2048)\n"
    "  --max-running N      requests at once; more get Error OVERLOADED (default 1024)\n";

static int parse_u32_arg(const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || errno != 0 || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv) {
    static fake_worker w; /* large (the inbox); static storage, still passed explicitly */
    w.listen = "tcp://127.0.0.1:5599";
    w.model = "smollm2-135m-instruct";
    w.tokens = 16;
    w.max_context = 2048;
    w.max_running = 1024;
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"model", required_argument, NULL, 'm'},
        {"tokens", required_argument, NULL, 't'},
        {"token-delay-us", required_argument, NULL, 'd'},
        {"max-context", required_argument, NULL, 'c'},
        {"max-running", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'l':
            w.listen = optarg;
            break;
        case 'm':
            w.model = optarg;
            bad = optarg[0] == '\0' || strlen(optarg) > 256;
            break;
        case 't':
            bad = parse_u32_arg(optarg, 1, LT_FAKE_MAX_TOKENS, &w.tokens);
            break;
        case 'd':
            bad = parse_u32_arg(optarg, 0, 10000000, &w.token_delay_us);
            break;
        case 'c':
            bad = parse_u32_arg(optarg, 1, 10000000, &w.max_context);
            break;
        case 'r':
            bad = parse_u32_arg(optarg, 1, 65536, &w.max_running);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs(usage_text, stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "sluice-fake-worker: bad value '%s' (see --help)\n", optarg);
            return 2;
        }
    }
    if (optind < argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    cm_log_set_component("fake-worker");
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    snprintf(w.instance_id, sizeof(w.instance_id), "%s:%ld:%" PRId64 ":fake", host, (long)getpid(),
             cm_clock_unix_ms());
    w.running = calloc(w.max_running, sizeof(*w.running));
    if (w.running == NULL) {
        fprintf(stderr, "sluice-fake-worker: out of memory\n");
        return 1;
    }
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    wk_transport_config tcfg;
    wk_transport_config_defaults(&tcfg);
    wk_transport_callbacks cb = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    char err[256];
    if (wk_transport_create(w.listen, &tcfg, &cb, &w, &w.transport, err, sizeof(err)) != CM_OK) {
        fprintf(stderr, "sluice-fake-worker: cannot listen on %s: %s\n", w.listen, err);
        free(w.running);
        return 1;
    }
    pthread_t thr;
    if (pthread_create(&thr, NULL, stats_thread, &w) != 0) {
        fprintf(stderr, "sluice-fake-worker: cannot start a thread\n");
        wk_transport_destroy(w.transport);
        free(w.running);
        return 1;
    }
    cm_log(CM_LOG_INFO, NULL, "FAKE worker listening (no model: instant answers)", "listen",
           w.listen, "model", w.model, NULL);
    serve(&w);
    g_stop = 1;
    pthread_join(thr, NULL);
    wk_transport_destroy(w.transport);
    /* callbacks are over: whatever is still in the inbox is ours to free */
    for (size_t i = 0; i < w.inbox_len; i++) {
        free(w.inbox[(w.inbox_head + i) % LT_FAKE_INBOX].data);
    }
    cm_logf(CM_LOG_INFO, NULL,
            "fake worker stopped after %" PRIu64 " submits (%" PRIu64
            " messages dropped at a full inbox)",
            w.submits, w.inbox_dropped);
    free(w.running);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return 0;
}
