/* gw_worker: dialing, Hello handshake, routing choice, event and loss callbacks, against an
 * in-process pair1 (polyamorous) listener that plays the worker's side of the protocol. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "cm_clock.h"
#include "gw_worker.h"
#include "sluice.pb-c.h" /* the test plays the worker: it speaks the wire format itself */

typedef struct seen {
    _Atomic int events;
    _Atomic uint64_t last_id;
    _Atomic int lost;
} seen;

static void on_event(void *arg, gw_worker *w, Sluice__Envelope *env) {
    seen *s = arg;
    (void)w;
    atomic_store(&s->last_id, env->event->request_id);
    atomic_fetch_add(&s->events, 1);
    sluice__envelope__free_unpacked(env, NULL);
}

static void on_lost(void *arg, gw_worker *w, uint32_t epoch) {
    seen *s = arg;
    (void)w;
    (void)epoch;
    atomic_fetch_add(&s->lost, 1);
}

static void send_env(nng_socket sock, Sluice__Envelope *env) {
    size_t len = sluice__envelope__get_packed_size(env);
    nng_msg *m;
    assert_int_equal(nng_msg_alloc(&m, len), 0);
    sluice__envelope__pack(env, nng_msg_body(m));
    assert_int_equal(nng_sendmsg(sock, m, 0), 0);
}

/* Receives one envelope from the fake worker socket (2 s timeout). */
static Sluice__Envelope *recv_env(nng_socket sock) {
    nng_msg *m;
    Sluice__Envelope *env;
    if (nng_recvmsg(sock, &m, 0) != 0)
        return NULL;
    env = sluice__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    return env;
}

static void send_hello(nng_socket sock, const char *model, uint32_t version) {
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    Sluice__Hello h = SLUICE__HELLO__INIT;
    h.protocol_version = version;
    h.model = (char *)model;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    send_env(sock, &env);
}

static int wait_until(_Atomic int *flag, int want, int ms) {
    for (int i = 0; i < ms / 5; i++) {
        if (atomic_load(flag) == want)
            return 1;
        cm_clock_sleep_ms(5);
    }
    return atomic_load(flag) == want;
}

static nng_socket listen_at(const char *addr) {
    nng_socket s;
    assert_int_equal(nng_pair1_open_poly(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
    assert_int_equal(nng_listen(s, addr, NULL, 0), 0);
    return s;
}

static void test_handshake_route_events_loss(void **state) {
    gw_pool pool;
    seen s = {0};
    gw_worker *w = NULL;
    gw_worker *picked = NULL;
    char served[GW_NAME_MAX];
    char addr[64];
    nng_socket fake;
    Sluice__Envelope *env;
    (void)state;
    snprintf(addr, sizeof addr, "inproc://gw-worker-test-%d", 1);
    fake = listen_at(addr);
    assert_int_equal(gw_pool_init(&pool, "gw-test", on_event, on_lost, &s), CM_OK);
    assert_int_equal(gw_pool_add(&pool, "m", addr, 1, &w), CM_OK);
    assert_non_null(w);
    /* The gateway greets first; until the worker's Hello arrives it is not routable. */
    env = recv_env(fake);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_HELLO);
    assert_int_equal(env->hello->protocol_version, 1);
    sluice__envelope__free_unpacked(env, NULL);
    assert_int_equal(gw_pool_pick(&pool, "m", 0, NULL, &picked, served), CM_ERR_CLOSED);
    assert_int_equal(gw_pool_pick(&pool, "other", 0, NULL, &picked, served), CM_ERR_NOT_FOUND);

    /* An incompatible Hello keeps it out of routing. */
    send_hello(fake, "served-name", 2);
    cm_clock_sleep_ms(50);
    assert_false(gw_worker_usable(w));
    send_hello(fake, "served-name", 1);
    assert_true(wait_until(&w->hello_ok, 1, 2000));
    assert_int_equal(gw_pool_pick(&pool, "m", 0, NULL, &picked, served), CM_OK);
    assert_ptr_equal(picked, w);
    assert_string_equal(served, "served-name");
    /* Its only worker just refused the request (full): busy, not "no worker". */
    assert_int_equal(gw_pool_pick(&pool, "m", 0, w, &picked, served), CM_ERR_OVERLOADED);
    assert_int_equal(gw_pool_has_model(&pool, "m"), 1);
    {
        char names[4][GW_NAME_MAX];
        assert_int_equal(gw_pool_models(&pool, names, 4), 1);
        assert_string_equal(names[0], "m");
    }

    /* Cancel goes out as an Envelope{cancel}; events come back through on_event. */
    gw_worker_cancel(w, 77);
    env = recv_env(fake);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_CANCEL);
    assert_int_equal(env->cancel->request_id, 77);
    sluice__envelope__free_unpacked(env, NULL);
    {
        Sluice__Envelope e = SLUICE__ENVELOPE__INIT;
        Sluice__Event ev = SLUICE__EVENT__INIT;
        Sluice__Tokens t = SLUICE__TOKENS__INIT;
        ev.request_id = 99;
        ev.kind_case = SLUICE__EVENT__KIND_TOKENS;
        ev.tokens = &t;
        e.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
        e.event = &ev;
        send_env(fake, &e);
    }
    assert_true(wait_until(&s.events, 1, 2000));
    assert_int_equal(atomic_load(&s.last_id), 99);

    /* Draining (Stats) takes it out of routing. */
    {
        Sluice__Envelope e = SLUICE__ENVELOPE__INIT;
        Sluice__Stats st = SLUICE__STATS__INIT;
        st.has_draining = 1;
        st.draining = 1;
        st.has_waiting = 1;
        st.waiting = 3;
        e.msg_case = SLUICE__ENVELOPE__MSG_STATS;
        e.stats = &st;
        send_env(fake, &e);
    }
    assert_true(wait_until(&w->draining, 1, 2000));
    assert_int_equal(atomic_load(&w->waiting), 3);
    assert_int_equal(gw_pool_pick(&pool, "m", 0, NULL, &picked, served), CM_ERR_CLOSED);

    /* The worker goes away: loss reported, not usable. */
    nng_close(fake);
    assert_true(wait_until(&s.lost, 1, 2000));
    assert_false(gw_worker_usable(w));
    gw_pool_fini(&pool);
}

static void test_least_loaded_and_affinity(void **state) {
    gw_pool pool;
    seen s = {0};
    gw_worker *w[3];
    gw_worker *picked;
    char served[GW_NAME_MAX], addr[3][64];
    nng_socket fake[3];
    int hits[3] = {0};
    (void)state;
    assert_int_equal(gw_pool_init(&pool, "gw-test", on_event, on_lost, &s), CM_OK);
    for (int i = 0; i < 3; i++) {
        snprintf(addr[i], sizeof addr[i], "inproc://gw-affinity-%d", i);
        fake[i] = listen_at(addr[i]);
        assert_int_equal(gw_pool_add(&pool, "m", addr[i], 1, &w[i]), CM_OK);
        send_hello(fake[i], "m", 1);
        assert_true(wait_until(&w[i]->hello_ok, 1, 2000));
    }
    /* Equal load: the same affinity key always lands on the same worker, different keys
     * spread. */
    for (uint64_t key = 1; key <= 60; key++) {
        gw_worker *first;
        assert_int_equal(
            gw_pool_pick(&pool, "m", key * 0x9E3779B97F4A7C15ULL, NULL, &first, served), CM_OK);
        assert_int_equal(
            gw_pool_pick(&pool, "m", key * 0x9E3779B97F4A7C15ULL, NULL, &picked, served), CM_OK);
        assert_ptr_equal(first, picked);
        hits[picked->index]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(hits[i] > 5);
    /* Uneven load: the loaded workers are avoided whatever the key. */
    atomic_store(&w[0]->inflight, 7);
    atomic_store(&w[1]->inflight, 4);
    for (uint64_t key = 1; key <= 20; key++) {
        assert_int_equal(gw_pool_pick(&pool, "m", key, NULL, &picked, served), CM_OK);
        assert_ptr_equal(picked, w[2]);
    }
    /* exclude (retry elsewhere) is honoured. */
    assert_int_equal(gw_pool_pick(&pool, "m", 1, w[2], &picked, served), CM_OK);
    assert_ptr_equal(picked, w[1]);
    for (int i = 0; i < 3; i++)
        nng_close(fake[i]);
    gw_pool_fini(&pool);
}

static void test_known_models(void **state) {
    gw_pool pool;
    gw_worker *w;
    gw_worker *picked;
    char served[GW_NAME_MAX], names[8][GW_NAME_MAX];
    char long_name[GW_NAME_MAX + 1];
    (void)state;
    assert_int_equal(gw_pool_init(&pool, "gw-test", NULL, NULL, NULL), CM_OK);
    /* Declared models are known with no worker at all; pick says nobody serves them. */
    assert_int_equal(gw_pool_add_known(&pool, "cold"), CM_OK);
    assert_int_equal(gw_pool_add_known(&pool, "cold"), CM_OK); /* once */
    memset(long_name, 'x', GW_NAME_MAX);
    long_name[GW_NAME_MAX] = '\0';
    assert_int_equal(gw_pool_add_known(&pool, long_name), CM_ERR_INVALID);
    assert_int_equal(gw_pool_add_known(&pool, ""), CM_ERR_INVALID);
    assert_int_equal(gw_pool_has_model(&pool, "cold"), 1);
    assert_int_equal(gw_pool_has_model(&pool, "other"), 0);
    assert_int_equal(gw_pool_pick(&pool, "cold", 0, NULL, &picked, served), CM_ERR_NOT_FOUND);
    /* A registry worker (not static) that is never reached: known while it is listed and for
     * model_memory_ms after it left, then forgotten. */
    pool.model_memory_ms = 60000;
    assert_int_equal(gw_pool_add(&pool, "reg", "tcp://127.0.0.1:1", 0, &w), CM_OK);
    assert_int_equal(gw_pool_has_model(&pool, "reg"), 1);
    assert_int_equal(gw_pool_pick(&pool, "reg", 0, NULL, &picked, served), CM_ERR_CLOSED);
    gw_pool_mark_gone(&pool, w);
    assert_int_equal(gw_pool_has_model(&pool, "reg"), 1);
    assert_int_equal(gw_pool_known_models(&pool, names, 8), 2);
    assert_string_equal(names[0], "cold");
    assert_string_equal(names[1], "reg");
    /* Left 61 s ago: forgotten (set directly: no sleeping in tests). */
    atomic_store(&w->gone_ms, cm_clock_mono_ms() - 61000);
    assert_int_equal(gw_pool_has_model(&pool, "reg"), 0);
    assert_int_equal(gw_pool_known_models(&pool, names, 8), 1);
    assert_int_equal(gw_pool_has_model(&pool, "cold"), 1);
    gw_pool_fini(&pool);
}

/* An alias over two greeted workers: picks follow the weights, a busy pick falls back to the
 * other target, a target that left the registry takes nothing, and /v1/models lists the alias
 * while one target is live. */
static void test_alias_route_and_fallback(void **state) {
    gw_pool pool;
    gw_worker *w1 = NULL, *w2 = NULL, *got = NULL;
    char served[GW_NAME_MAX], target[GW_NAME_MAX], names[8][GW_NAME_MAX];
    gw_alias_cfg cfg;
    char err[128];
    nng_socket f1 = listen_at("inproc://gw-alias-test-1"),
               f2 = listen_at("inproc://gw-alias-test-2");
    int n1 = 0, n2 = 0;
    (void)state;
    assert_int_equal(gw_pool_init(&pool, "gw-test", NULL, NULL, NULL), CM_OK);
    assert_int_equal(gw_alias_parse_flag("chat=m1:3,m2:1", &cfg, err, sizeof err), CM_OK);
    assert_int_equal(gw_pool_set_aliases(&pool, &cfg, 1), CM_OK);
    gw_alias_cfg_fini(&cfg);
    assert_int_equal(gw_pool_add(&pool, "m1", "inproc://gw-alias-test-1", 1, &w1), CM_OK);
    assert_int_equal(gw_pool_add(&pool, "m2", "inproc://gw-alias-test-2", 0, &w2), CM_OK);
    send_hello(f1, "served-1", 1);
    send_hello(f2, "served-2", 1);
    assert_true(wait_until(&w1->hello_ok, 1, 2000));
    assert_true(wait_until(&w2->hello_ok, 1, 2000));
    for (int i = 0; i < 40; i++) {
        assert_int_equal(gw_pool_route(&pool, "chat", 0, NULL, &got, served, target), CM_OK);
        assert_true((got == w1 && strcmp(served, "served-1") == 0 && strcmp(target, "m1") == 0) ||
                    (got == w2 && strcmp(served, "served-2") == 0 && strcmp(target, "m2") == 0));
        n1 += got == w1;
        n2 += got == w2;
    }
    assert_int_equal(n1, 30);
    assert_int_equal(n2, 10);
    assert_int_equal(gw_pool_models(&pool, names, 8), 3);
    assert_string_equal(names[2], "chat");
    /* w1 just refused the request: every pick lands on m2, whatever the weights say. */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(gw_pool_route(&pool, "chat", 0, w1, &got, served, target), CM_OK);
        assert_ptr_equal(got, w2);
    }
    /* m2 left the registry: everything goes to m1; with m1 busy too, the alias is busy. */
    gw_pool_mark_gone(&pool, w2);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(gw_pool_route(&pool, "chat", 0, NULL, &got, served, target), CM_OK);
        assert_ptr_equal(got, w1);
    }
    assert_int_equal(gw_pool_route(&pool, "chat", 0, w1, &got, served, target), CM_ERR_OVERLOADED);
    gw_pool_fini(&pool);
    nng_close(f1);
    nng_close(f2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_models),
        cmocka_unit_test(test_handshake_route_events_loss),
        cmocka_unit_test(test_least_loaded_and_affinity),
        cmocka_unit_test(test_alias_route_and_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
