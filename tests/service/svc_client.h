/*
 * Test-side helpers for talking to sluice-worker as a gateway would: an nng pair1 dialer,
 * Envelope encode/decode, bounded waits. Header-only (static functions) so the process test
 * and the sluice-svc-client tool share it. Not part of the product.
 */
#ifndef SVC_CLIENT_H
#define SVC_CLIENT_H

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.pb-c.h"

typedef struct svc_client {
    nng_socket sock;
    bool open;
} svc_client;

/* Dials addr (retrying for up to timeout_ms while the worker comes up) and sends Hello
 * with the given protocol version. 0 on success. */
static inline int svc_client_open(svc_client *c, const char *addr, uint32_t version,
                                  int timeout_ms) {
    memset(c, 0, sizeof *c);
    if (nng_pair1_open(&c->sock) != 0)
        return -1;
    c->open = true;
    /* pair1 sends wait for a peer; a test must never wait forever for a worker that left. */
    nng_setopt_ms(c->sock, NNG_OPT_SENDTIMEO, 5000);
    int waited = 0;
    int rv;
    while ((rv = nng_dial(c->sock, addr, NULL, 0)) != 0) {
        if (waited >= timeout_ms)
            return -1;
        nng_msleep(50);
        waited += 50;
    }
    Sluice__Hello h = SLUICE__HELLO__INIT;
    h.protocol_version = version;
    h.role = (char *)"gateway";
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    size_t n = sluice__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(n + 1);
    sluice__envelope__pack(&env, buf);
    rv = nng_send(c->sock, buf, n, 0);
    free(buf);
    return rv;
}

/* nng 1.5.2's nng_close on a pair1 socket was seen to block forever (under ASan, in a
 * condition variable inside nng's socket shutdown) after the peer had answered everything.
 * A test must never hang on its own client's teardown, so the close runs on a detached
 * thread: if it blocks, only that thread waits, and the process exit ends it. */
static inline void *svc_client_close_thread(void *arg) {
    nng_socket sock = {.id = (uint32_t)(uintptr_t)arg};
    nng_close(sock);
    return NULL;
}

static inline void svc_client_close(svc_client *c) {
    if (c->open) {
        pthread_t t;
        void *arg = (void *)(uintptr_t)c->sock.id;
        if (pthread_create(&t, NULL, svc_client_close_thread, arg) == 0)
            pthread_detach(t);
        else
            nng_close(c->sock);
    }
    c->open = false;
}

static inline int svc_client_send_env(svc_client *c, const Sluice__Envelope *env) {
    size_t n = sluice__envelope__get_packed_size(env);
    uint8_t *buf = malloc(n + 1);
    if (buf == NULL)
        return -1;
    sluice__envelope__pack(env, buf);
    int rv = nng_send(c->sock, buf, n, 0);
    free(buf);
    return rv;
}

static inline int svc_client_send_raw(svc_client *c, const void *data, size_t len) {
    return nng_send(c->sock, (void *)data, len, 0);
}

typedef struct svc_submit_opts {
    uint64_t id;
    const char *prompt;    /* raw prompt, or */
    const char *chat_user; /* one user message */
    const int32_t *ids;    /* or token ids */
    size_t n_ids;
    uint32_t max_tokens; /* 0 = absent */
    bool greedy;
    const char *model; /* NULL = absent */
    bool no_eos;       /* logit_bias -100 on ids 0..2 (SmolLM2's end tokens) */
} svc_submit_opts;

static inline int svc_client_submit(svc_client *c, const svc_submit_opts *o) {
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.request_id = o->id;
    s.model = (char *)o->model;
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT;
    Sluice__ChatMessage *mp = &m;
    if (o->chat_user != NULL) {
        m.role = (char *)"user";
        m.content = (char *)o->chat_user;
        s.n_messages = 1;
        s.messages = &mp;
    } else if (o->prompt != NULL) {
        s.prompt = (char *)o->prompt;
    } else {
        s.n_prompt_token_ids = o->n_ids;
        s.prompt_token_ids = (int32_t *)o->ids;
    }
    Sluice__SamplingParams sp = SLUICE__SAMPLING_PARAMS__INIT;
    if (o->greedy) {
        sp.has_temperature = true;
        sp.temperature = 0;
        s.sampling = &sp;
    }
    Sluice__LogitBias lb[3];
    Sluice__LogitBias *lbp[3];
    if (o->no_eos) {
        for (int i = 0; i < 3; i++) {
            Sluice__LogitBias init = SLUICE__LOGIT_BIAS__INIT;
            lb[i] = init;
            lb[i].token_id = i;
            lb[i].bias = -100.0f;
            lbp[i] = &lb[i];
        }
        sp.n_logit_bias = 3;
        sp.logit_bias = lbp;
        s.sampling = &sp;
    }
    if (o->max_tokens > 0) {
        s.has_max_tokens = true;
        s.max_tokens = o->max_tokens;
    }
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &s;
    return svc_client_send_env(c, &env);
}

static inline int svc_client_cancel(svc_client *c, uint64_t id) {
    Sluice__Cancel x = SLUICE__CANCEL__INIT;
    x.request_id = id;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_CANCEL;
    env.cancel = &x;
    return svc_client_send_env(c, &env);
}

/* Receives one envelope within timeout_ms; NULL on timeout/garbage. Free with
 * sluice__envelope__free_unpacked. */
static inline Sluice__Envelope *svc_client_recv(svc_client *c, int timeout_ms) {
    nng_setopt_ms(c->sock, NNG_OPT_RECVTIMEO, timeout_ms);
    void *buf = NULL;
    size_t len = 0;
    if (nng_recv(c->sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
        return NULL;
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, buf);
    nng_free(buf, len);
    return env;
}

/* Receives until an Event arrives (skipping Hello/Stats/Drain); NULL when none came within
 * timeout_ms in total. */
static inline Sluice__Envelope *svc_client_next_event(svc_client *c, int timeout_ms) {
    nng_time deadline = nng_clock() + (nng_time)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        nng_time now = nng_clock();
        if (now >= deadline)
            return NULL;
        Sluice__Envelope *env = svc_client_recv(c, (int)(deadline - now));
        if (env == NULL)
            return NULL;
        if (env->msg_case == SLUICE__ENVELOPE__MSG_EVENT)
            return env;
        sluice__envelope__free_unpacked(env, NULL);
    }
}

#endif /* SVC_CLIENT_H */
