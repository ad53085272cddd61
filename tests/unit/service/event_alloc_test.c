/*
 * The per-token path allocates nothing in steady state: wk_wire_enc building a Tokens event
 * (plain, with logprobs, with tool-call deltas) and wk_transport_send_payload packing it into
 * a real connection's send buffer, written out to a real nng pair1 peer.
 *
 * How it counts: this executable is linked with -Wl,--wrap=malloc,--wrap=calloc,
 * --wrap=realloc (tests/CMakeLists.txt), so every allocation made by code linked in statically
 * (wk_service, wk_core, cm_core, the generated protobuf code, this file) goes through the
 * __wrap_ functions below and is counted; shared libraries (nng, libprotobuf-c, cmocka) are
 * not wrapped. Positive controls check the counter sees the allocations it must see.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>

#include "transport.h"
#include "wire.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

/* Every thread's allocations (the transport's writer runs on nng's threads). */
static atomic_ulong g_allocs;

void *__wrap_malloc(size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
    atomic_fetch_add(&g_allocs, 1);
    return __real_realloc(p, n);
}

static unsigned long allocs(void) {
    return atomic_load(&g_allocs);
}

/* Token event i of a stream: one token, a short piece of text, optionally logprobs with
 * top alternatives and tool-call deltas. */
typedef struct event_src {
    int32_t id;
    char text[16];
    wk_sample_result lp;
    wk_wire_tool_delta delta;
    wk_event ev;
} event_src;

static void make_event(event_src *e, uint32_t i, bool logprobs, bool tools) {
    memset(e, 0, sizeof *e);
    e->id = (int32_t)(100 + i);
    int n = snprintf(e->text, sizeof e->text, "tok%u", i);
    e->ev = (wk_event){.kind = WK_EVENT_TOKENS,
                       .token_ids = &e->id,
                       .n_tokens = 1,
                       .text = e->text,
                       .text_len = (size_t)n};
    if (logprobs) {
        e->lp.token_id = e->id;
        e->lp.logprob = -0.5f;
        e->lp.n_top = 5;
        for (uint32_t k = 0; k < 5; k++)
            e->lp.top[k] = (wk_logprob_entry){(int32_t)(i + k), -1.0f - (float)k};
        e->ev.logprobs = &e->lp;
    }
    if (tools) {
        e->delta =
            (wk_wire_tool_delta){.index = 0, .arguments = "{\"x\": 1", .arguments_len = i % 7 + 1};
    }
}

static cm_err build(wk_wire_enc *enc, const event_src *e, uint64_t request_id) {
    bool tools = e->delta.arguments != NULL;
    return wk_wire_enc_event(enc, &e->ev, request_id, NULL, tools ? &e->delta : NULL, tools ? 1 : 0,
                             false);
}

/* Unpacks a Tokens event and checks it is event i of the stream. */
static void check_event(const uint8_t *data, size_t len, uint32_t i, uint64_t request_id,
                        bool logprobs, bool tools) {
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, data);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
    assert_int_equal(env->event->request_id, request_id);
    assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_TOKENS);
    const Sluice__Tokens *t = env->event->tokens;
    char want[16];
    snprintf(want, sizeof want, "tok%u", i);
    assert_string_equal(t->text, want);
    assert_int_equal(t->n_token_ids, 1);
    assert_int_equal(t->token_ids[0], 100 + (int32_t)i);
    if (logprobs) {
        assert_int_equal(t->n_logprobs, 1);
        assert_int_equal(t->logprobs[0]->n_top, 5);
        assert_int_equal(t->logprobs[0]->top[4]->token_id, (int32_t)i + 4);
    } else {
        assert_int_equal(t->n_logprobs, 0);
    }
    if (tools) {
        assert_int_equal(t->n_tool_calls, 1);
        assert_int_equal(strlen(t->tool_calls[0]->arguments), i % 7 + 1);
    } else {
        assert_int_equal(t->n_tool_calls, 0);
    }
    sluice__envelope__free_unpacked(env, NULL);
}

/* The encoder alone: after the first event grew its scratch, none allocates. */
static void encoder_steady(bool logprobs, bool tools) {
    enum { N = 1000 };
    static uint8_t out[N][1024];
    static size_t out_len[N];
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    event_src e;
    /* Warm-up, and the positive control: the first event grows the scratch. */
    make_event(&e, 0, logprobs, tools);
    unsigned long before = allocs();
    assert_int_equal(build(&enc, &e, 7), CM_OK);
    assert_true(allocs() > before);

    before = allocs();
    for (uint32_t i = 0; i < N; i++) {
        make_event(&e, i, logprobs, tools);
        assert_int_equal(build(&enc, &e, 7), CM_OK);
        out_len[i] = wk_wire_enc_len(&enc);
        assert_true(out_len[i] <= sizeof out[i]);
        wk_wire_enc_write(&enc, out[i]);
    }
    unsigned long during = allocs() - before;
    assert_int_equal(during, 0);
    for (uint32_t i = 0; i < N; i++)
        check_event(out[i], out_len[i], i, 7, logprobs, tools);
    wk_wire_enc_fini(&enc);
}

static void test_encoder_plain(void **state) {
    (void)state;
    encoder_steady(false, false);
}

static void test_encoder_logprobs(void **state) {
    (void)state;
    encoder_steady(true, false);
}

static void test_encoder_tools(void **state) {
    (void)state;
    encoder_steady(false, true);
}

/* Finished and Error events need no more than a Tokens event did: none allocates either. */
static void test_encoder_final_events(void **state) {
    (void)state;
    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    event_src e;
    make_event(&e, 1, false, false);
    assert_int_equal(build(&enc, &e, 1), CM_OK);
    wk_event fin = {.kind = WK_EVENT_FINISHED,
                    .finish_reason = WK_FINISH_STOP,
                    .usage = {.prompt_tokens = 3, .completion_tokens = 2},
                    .text = "end",
                    .text_len = 3};
    wk_event er = {.kind = WK_EVENT_ERROR, .err = CM_ERR_TIMEOUT, .message = "late"};
    uint8_t buf[256];
    unsigned long before = allocs();
    assert_int_equal(wk_wire_enc_event(&enc, &fin, 1, NULL, NULL, 0, false), CM_OK);
    assert_true(wk_wire_enc_len(&enc) <= sizeof buf);
    wk_wire_enc_write(&enc, buf);
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, wk_wire_enc_len(&enc), buf);
    unsigned long during = allocs() - before;
    assert_non_null(env);
    assert_string_equal(env->event->finished->text, "end");
    sluice__envelope__free_unpacked(env, NULL);
    before = allocs();
    assert_int_equal(wk_wire_enc_event(&enc, &er, 1, NULL, NULL, 0, false), CM_OK);
    wk_wire_enc_write(&enc, buf);
    during += allocs() - before;
    /* libprotobuf-c's unpack allocates in the shared library: not counted. */
    assert_int_equal(during, 0);
    env = sluice__envelope__unpack(NULL, wk_wire_enc_len(&enc), buf);
    assert_non_null(env);
    assert_string_equal(env->event->error->message, "late");
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_enc_fini(&enc);

    /* Positive control: the one-shot encoder allocates its bytes (and its scratch). */
    wk_wire_buf b;
    before = allocs();
    assert_int_equal(wk_wire_encode_event(&e.ev, 1, NULL, &b), CM_OK);
    assert_true(allocs() - before >= 1);
    wk_wire_buf_free(&b);
}

/* ---- through the transport to a real peer ---- */

static void on_open(void *arg, uint32_t id) {
    atomic_store((atomic_uint *)arg, id);
}

static void on_message(void *arg, uint32_t id, const uint8_t *data, size_t len) {
    (void)arg;
    (void)id;
    (void)data;
    (void)len;
}

static void on_close(void *arg, uint32_t id) {
    (void)arg;
    (void)id;
}

enum { WARM = 200, COUNTED = 2000 };

/* The peer's reader: takes messages off the socket as they come (nng allocates them inside
 * libnng, not counted) and keeps them for checking after the counted window. */
typedef struct reader {
    nng_socket s;
    nng_msg *msgs[WARM + COUNTED];
    int n;
    int err;
} reader;

static void *read_main(void *arg) {
    reader *r = arg;
    while (r->n < WARM + COUNTED) {
        int rv = nng_recvmsg(r->s, &r->msgs[r->n], 0);
        if (rv != 0) {
            r->err = rv;
            return NULL;
        }
        r->n++;
    }
    return NULL;
}

static void through_transport(bool logprobs) {
    atomic_uint conn_id = 0;
    wk_transport_callbacks cb = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close};
    wk_transport *t = NULL;
    char err[256];
    assert_int_equal(
        wk_transport_create("tcp://127.0.0.1:0", NULL, &cb, &conn_id, &t, err, sizeof err), CM_OK);
    static reader r;
    memset(&r, 0, sizeof r);
    assert_int_equal(nng_pair1_open(&r.s), 0);
    nng_setopt_ms(r.s, NNG_OPT_RECVTIMEO, 10000);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", wk_transport_bound_port(t));
    assert_int_equal(nng_dial(r.s, url, NULL, 0), 0);
    for (int waited = 0; atomic_load(&conn_id) == 0 && waited < 5000; waited += 5)
        nng_msleep(5);
    uint32_t id = atomic_load(&conn_id);
    assert_true(id != 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, read_main, &r), 0);

    wk_wire_enc enc;
    wk_wire_enc_init(&enc);
    event_src e;
    /* Warm-up: the encoder's scratch grows to the event, the connection's second send
     * buffer is allocated (at the first swap after the handshake). Bursts of 50 events, a
     * batch step's worth, stay within the buffers' first size. */
    for (uint32_t i = 0; i < WARM; i++) {
        make_event(&e, i, logprobs, false);
        assert_int_equal(build(&enc, &e, 42), CM_OK);
        wk_transport_payload p = {
            .len = wk_wire_enc_len(&enc), .write = wk_wire_enc_write, .arg = &enc};
        assert_int_equal(wk_transport_send_payload(t, id, &p, WK_SEND_NORMAL), CM_OK);
        if (i % 50 == 49)
            assert_true(wk_transport_flush(t, 5000));
    }
    assert_true(wk_transport_flush(t, 5000));

    unsigned long before = allocs();
    for (uint32_t i = WARM; i < WARM + COUNTED; i++) {
        make_event(&e, i, logprobs, false);
        assert_int_equal(build(&enc, &e, 42), CM_OK);
        wk_transport_payload p = {
            .len = wk_wire_enc_len(&enc), .write = wk_wire_enc_write, .arg = &enc};
        assert_int_equal(wk_transport_send_payload(t, id, &p, WK_SEND_NORMAL), CM_OK);
        if (i % 50 == 49)
            assert_true(wk_transport_flush(t, 5000));
    }
    assert_true(wk_transport_flush(t, 5000));
    unsigned long during = allocs() - before;
    fprintf(stderr, "%d events%s through the transport: %lu allocations (counted code)\n", COUNTED,
            logprobs ? " with logprobs" : "", during);
    assert_int_equal(during, 0);

    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, WARM + COUNTED);
    for (int i = 0; i < r.n; i++) {
        check_event(nng_msg_body(r.msgs[i]), nng_msg_len(r.msgs[i]), (uint32_t)i, 42, logprobs,
                    false);
        nng_msg_free(r.msgs[i]);
    }
    wk_transport_stats st;
    wk_transport_get_stats(t, &st);
    assert_int_equal(st.messages_out_total, 1 + WARM + COUNTED); /* + the SP handshake */
    assert_int_equal(st.queued_messages, 0);
    wk_wire_enc_fini(&enc);
    nng_close(r.s);
    wk_transport_destroy(t);
}

static void test_transport_plain(void **state) {
    (void)state;
    through_transport(false);
}

static void test_transport_logprobs(void **state) {
    (void)state;
    through_transport(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_plain),   cmocka_unit_test(test_encoder_logprobs),
        cmocka_unit_test(test_encoder_tools),   cmocka_unit_test(test_encoder_final_events),
        cmocka_unit_test(test_transport_plain), cmocka_unit_test(test_transport_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
