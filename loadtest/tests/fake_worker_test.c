/*
 * sluice-fake-worker, driven over the real wire: Hello on connect, N Tokens then Finished per
 * Submit (long bursts included), Stats every 250 ms, model and protocol checks, garbage
 * survived.
 * argv[1] is the path of the sluice-fake-worker binary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_err.h"
#include "sluice.pb-c.h"

static const char *g_binary; /* argv[1], read-only after main starts */

typedef struct fixture {
    pid_t pid;
    char addr[128];
    char path[96];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "/tmp/lt-fake-%d.sock", (int)getpid());
    snprintf(f->addr, sizeof(f->addr), "ipc://%s", f->path);
    unlink(f->path);
    f->pid = fork();
    if (f->pid == 0) {
        execl(g_binary, g_binary, "--listen", f->addr, "--model", "m", "--tokens", "3",
              (char *)NULL);
        _exit(127);
    }
    *state = f;
    return f->pid > 0 ? 0 : -1;
}

static int teardown(void **state) {
    fixture *f = *state;
    kill(f->pid, SIGTERM);
    int status = 0;
    waitpid(f->pid, &status, 0);
    unlink(f->path);
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    free(f);
    return clean ? 0 : -1;
}

static nng_socket dial(const char *addr) {
    nng_socket s;
    assert_int_equal(nng_pair1_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 3000);
    int rv = -1;
    for (int i = 0; i < 100 && rv != 0; i++) {
        rv = nng_dial(s, addr, NULL, 0);
        if (rv != 0) {
            usleep(50000);
        }
    }
    assert_int_equal(rv, 0);
    return s;
}

static void send_env(nng_socket s, const Sluice__Envelope *env) {
    size_t len = sluice__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len + 1);
    sluice__envelope__pack(env, buf);
    assert_int_equal(nng_send(s, buf, len, 0), 0);
    free(buf);
}

/* recv_env returns the next envelope that is not Stats; *stats_seen counts skipped Stats. */
static Sluice__Envelope *recv_env(nng_socket s, int *stats_seen) {
    /* bounded: 40 Stats (about 10 s) without the awaited message is a failure, not a hang */
    for (int skipped = 0; skipped < 40; skipped++) {
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(nng_recv(s, &buf, &len, NNG_FLAG_ALLOC), 0);
        Sluice__Envelope *env = sluice__envelope__unpack(NULL, len, buf);
        nng_free(buf, len);
        assert_non_null(env);
        if (env->msg_case == SLUICE__ENVELOPE__MSG_STATS) {
            if (stats_seen != NULL) {
                (*stats_seen)++;
            }
            sluice__envelope__free_unpacked(env, NULL);
            continue;
        }
        return env;
    }
    fail_msg("only Stats for 10 s");
    return NULL;
}

static void send_hello(nng_socket s, uint32_t version) {
    Sluice__Hello h = SLUICE__HELLO__INIT;
    h.protocol_version = version;
    h.role = "gateway";
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    send_env(s, &env);
}

static void send_submit(nng_socket s, uint64_t id, const char *model, int max_tokens) {
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT;
    m.role = "user";
    m.content = "hello fake worker";
    Sluice__ChatMessage *msgs[1] = {&m};
    Sluice__Submit sub = SLUICE__SUBMIT__INIT;
    sub.request_id = id;
    sub.model = (char *)model;
    sub.n_messages = 1;
    sub.messages = msgs;
    if (max_tokens >= 0) {
        sub.has_max_tokens = 1;
        sub.max_tokens = (uint32_t)max_tokens;
    }
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &sub;
    send_env(s, &env);
}

static void expect_answer(nng_socket s, uint64_t id, uint32_t tokens, int reason) {
    for (uint32_t i = 0; i < tokens; i++) {
        Sluice__Envelope *env = recv_env(s, NULL);
        assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
        assert_int_equal(env->event->request_id, id);
        assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_TOKENS);
        assert_int_equal(env->event->tokens->n_token_ids, 1);
        sluice__envelope__free_unpacked(env, NULL);
    }
    Sluice__Envelope *env = recv_env(s, NULL);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
    assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_FINISHED);
    assert_int_equal(env->event->finished->reason, reason);
    assert_int_equal(env->event->finished->usage->completion_tokens, tokens);
    assert_true(env->event->finished->usage->prompt_tokens > 0);
    sluice__envelope__free_unpacked(env, NULL);
}

static void expect_error(nng_socket s, uint64_t id, cm_err code) {
    Sluice__Envelope *env = recv_env(s, NULL);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
    assert_int_equal(env->event->request_id, id);
    assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_ERROR);
    assert_int_equal(env->event->error->code, code);
    sluice__envelope__free_unpacked(env, NULL);
}

static void test_protocol(void **state) {
    fixture *f = *state;
    nng_socket s = dial(f->addr);
    Sluice__Envelope *env = recv_env(s, NULL);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_HELLO);
    assert_int_equal(env->hello->protocol_version, SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION);
    assert_string_equal(env->hello->role, "fake-worker");
    assert_string_equal(env->hello->backend, "fake");
    assert_string_equal(env->hello->model, "m");
    sluice__envelope__free_unpacked(env, NULL);
    send_hello(s, SLUICE__PROTOCOL_VERSION__PROTOCOL_VERSION);

    send_submit(s, 7, "m", 5);
    expect_answer(s, 7, 5, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    send_submit(s, 8, NULL, -1); /* no max_tokens: --tokens, finished by "stop" */
    expect_answer(s, 8, 3, SLUICE__FINISH_REASON__FINISH_REASON_STOP);
    send_submit(s, 9, "other-model", 5);
    expect_error(s, 9, CM_ERR_NOT_FOUND);
    /* garbage is logged and dropped; the worker keeps serving */
    assert_int_equal(nng_send(s, "\xff\xff\xff\xff garbage", 12, 0), 0);
    send_submit(s, 10, "m", 2);
    expect_answer(s, 10, 2, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    /* a long burst arrives whole: the worker transport does not drop what nng's poly pair1
     * socket would (its per-pipe queue holds two messages) */
    send_submit(s, 12, "m", 3000);
    expect_answer(s, 12, 3000, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    /* Stats arrive about every 250 ms */
    int stats = 0;
    usleep(600000);
    send_submit(s, 11, "m", 1);
    for (;;) {
        env = recv_env(s, &stats);
        int finished = env->msg_case == SLUICE__ENVELOPE__MSG_EVENT &&
                       env->event->kind_case == SLUICE__EVENT__KIND_FINISHED;
        sluice__envelope__free_unpacked(env, NULL);
        if (finished) {
            break;
        }
    }
    assert_true(stats >= 1);
    nng_close(s);

    /* a peer with another protocol version is refused */
    nng_socket s2 = dial(f->addr);
    env = recv_env(s2, NULL);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_HELLO);
    sluice__envelope__free_unpacked(env, NULL);
    send_hello(s2, 99);
    send_submit(s2, 1, "m", 2);
    expect_error(s2, 1, CM_ERR_PROTOCOL);
    nng_close(s2);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fake_worker_test PATH/TO/sluice-fake-worker\n");
        return 77;
    }
    g_binary = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_protocol, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
