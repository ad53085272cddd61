/* gw_ratelimit against a real redis-server started by the test: leases are released by id
 * whatever the reply, a Redis stall past redis_timeout_ms leaks nothing, a release that runs
 * before its admission makes the admission record nothing, refusals cost nothing, and held
 * leases are renewed past lease_ttl_ms; the request and token windows (limits, remaining
 * figures, retry-after, refunds, reconciliation by the real usage), fail-open and
 * fail-closed with no Redis, and API key lookups. Skips (77) when redis-server is not
 * installed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <netinet/in.h>

#include <cmocka.h>

#include "svc_http.h"
#include <hiredis/hiredis.h>
#include <uv.h>

#include "cm_clock.h"
#include "cm_sha256.h"
#include "gw_config.h"
#include "gw_metrics.h"
#include "gw_ratelimit.h"
#include "gw_ratelimit_impl.h"

#define REDIS_BIN "/usr/bin/redis-server"
#define WAIT_MS 10000

static pid_t redis_pid;
static int redis_port;

typedef struct fixture {
    uv_loop_t loop;
    gw_config *cfg;
    gw_metrics metrics;
    _Atomic int redis_ok;
    gw_ratelimit *rl;
    redisContext *rc; /* blocking side connection to inspect Redis */
} fixture;

static redisContext *connect_sync(void) {
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (rc != NULL && rc->err) {
        redisFree(rc);
        return NULL;
    }
    return rc;
}

static int start_redis(void **state) {
    char port[16];
    (void)state;
    redis_port = svc_free_port();
    snprintf(port, sizeof port, "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null_fd = open("/dev/null", O_WRONLY);
        if (null_fd >= 0)
            dup2(null_fd, STDOUT_FILENO);
        execl(REDIS_BIN, REDIS_BIN, "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int64_t t0 = cm_clock_mono_ms(); cm_clock_mono_ms() - t0 < WAIT_MS;) {
        redisContext *rc = connect_sync();
        if (rc != NULL) {
            redisFree(rc);
            return 0;
        }
        cm_clock_sleep_ms(20);
    }
    return -1;
}

static int stop_redis(void **state) {
    (void)state;
    kill(redis_pid, SIGCONT);
    kill(redis_pid, SIGTERM);
    waitpid(redis_pid, NULL, 0);
    return 0;
}

static long long cmd_int(redisContext *rc, const char *fmt, ...) {
    va_list ap;
    redisReply *r;
    long long v;
    va_start(ap, fmt);
    r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

/* Runs the loop until *flag is set or cond() holds (either may be NULL), at most WAIT_MS. */
static int run_until(fixture *f, const int *flag, int (*cond)(fixture *)) {
    for (int64_t t0 = cm_clock_mono_ms(); cm_clock_mono_ms() - t0 < WAIT_MS;) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if ((flag != NULL && *flag) || (cond != NULL && cond(f)))
            return 1;
        cm_clock_sleep_ms(2);
    }
    return 0;
}

static int is_connected(fixture *f) {
    return gw_ratelimit_connected(f->rl);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    char url[64];
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(gw_config_defaults(&f->cfg), CM_OK);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis_port);
    f->cfg->redis_url = strdup(url);
    f->cfg->redis_timeout_ms = 200;
    f->cfg->lease_ttl_ms = 3000;
    assert_int_equal(gw_metrics_init(&f->metrics), CM_OK);
    assert_int_equal(gw_ratelimit_create(&f->loop, f->cfg, &f->metrics, &f->redis_ok, &f->rl),
                     CM_OK);
    assert_true(run_until(f, NULL, is_connected));
    f->rc = connect_sync();
    assert_non_null(f->rc);
    freeReplyObject(redisCommand(f->rc, "FLUSHALL"));
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    gw_ratelimit_destroy(f->rl);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    redisFree(f->rc);
    gw_metrics_fini(&f->metrics);
    gw_config_free(f->cfg);
    free(f);
    return 0;
}

typedef struct admission {
    int done;
    gw_rl_verdict v;
    gw_rl_lease *lease;
} admission;

static void on_verdict(void *arg, const gw_rl_verdict *v) {
    admission *a = arg;
    a->v = *v;
    a->done = 1;
}

static gw_tenant tenant(uint32_t rpm, uint32_t tpm, uint32_t conc) {
    gw_tenant t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "t");
    t.rpm = rpm;
    t.tpm = tpm;
    t.max_concurrency = conc;
    return t;
}

static void admit_tokens(fixture *f, const gw_tenant *t, uint32_t tokens, admission *a) {
    memset(a, 0, sizeof *a);
    gw_ratelimit_admit(f->rl, t, tokens, "req-1", on_verdict, a, &a->lease);
    assert_true(run_until(f, &a->done, NULL));
}

static void admit(fixture *f, const gw_tenant *t, admission *a) {
    admit_tokens(f, t, 10, a);
}

typedef struct key_lookup {
    int done;
    int found;
    gw_tenant t;
} key_lookup;

static void on_key(void *arg, int found, const gw_tenant *t) {
    key_lookup *k = arg;
    k->found = found;
    if (t != NULL)
        k->t = *t;
    k->done = 1;
}

static long long leases, requests; /* read by the conditions below */

static int counts_are(fixture *f) {
    return cmd_int(f->rc, "ZCARD sluice:rl:{t}:leases") == leases &&
           cmd_int(f->rc, "ZCARD sluice:rl:{t}:requests") == requests;
}

static void wait_counts(fixture *f, long long l, long long r) {
    leases = l;
    requests = r;
    assert_true(run_until(f, NULL, counts_are));
}

static void test_lease_lifecycle(void **state) {
    fixture *f = *state;
    gw_tenant t = tenant(100, 0, 1);
    admission a, b, c;
    admit(f, &t, &a);
    assert_true(a.v.allowed);
    assert_non_null(a.lease);
    admit(f, &t, &b);
    assert_false(b.v.allowed);
    assert_false(b.v.redis_failed);
    assert_string_equal(b.v.limit, "concurrency");
    wait_counts(f, 1, 1); /* the refusal recorded nothing */
    gw_ratelimit_release(f->rl, b.lease, 0, 0);
    gw_ratelimit_release(f->rl, a.lease, 0, 0);
    wait_counts(f, 0, 1);
    /* Same request id again (ids may come from clients): its own lease. */
    admit(f, &t, &c);
    assert_true(c.v.allowed);
    wait_counts(f, 1, 2);
    /* Refused by the gateway after admission (503): the request is not counted. */
    gw_ratelimit_release(f->rl, c.lease, -10, 1);
    wait_counts(f, 0, 1);
}

static void test_stall_past_timeout(void **state) {
    fixture *f = *state;
    gw_tenant t = tenant(100, 1000, 2);
    admission a[4], after;
    int64_t t0;
    kill(redis_pid, SIGSTOP);
    for (int i = 0; i < 4; i++) {
        admit(f, &t, &a[i]);
        assert_true(a[i].v.redis_failed);
        assert_false(a[i].v.allowed); /* fail-closed: 503 */
        assert_non_null(a[i].lease);
        gw_ratelimit_release(f->rl, a[i].lease, -10, 1);
    }
    kill(redis_pid, SIGCONT);
    /* The queued admissions ran, then their releases: nothing is held, nothing charged. */
    t0 = cm_clock_mono_ms();
    admit(f, &t, &after);
    assert_true(after.v.allowed);
    assert_false(after.v.redis_failed);
    assert_true(cm_clock_mono_ms() - t0 < 1000);
    wait_counts(f, 1, 1);
    gw_ratelimit_release(f->rl, after.lease, 0, 0);
    wait_counts(f, 0, 1);
}

static redisReply *eval(fixture *f, const char *script, const char *const *args, int nargs) {
    const char *argv[16];
    int n = 0;
    argv[n++] = "EVAL";
    argv[n++] = script;
    argv[n++] = "4";
    for (int i = 0; i < nargs; i++)
        argv[n++] = args[i];
    return redisCommandArgv(f->rc, n, argv, NULL);
}

static void test_release_before_admission(void **state) {
    fixture *f = *state;
    char now[24];
    redisReply *r;
    snprintf(now, sizeof now, "%lld", (long long)cm_clock_unix_ms());
    {
        const char *args[] = {"sluice:rl:{t}:tokens",
                              "sluice:rl:{t}:leases",
                              "sluice:rl:{t}:requests",
                              "sluice:rl:{t}:released",
                              now,
                              "-5",
                              "late",
                              "1",
                              "60000"};
        r = eval(f, GW_RL_RELEASE_LUA, args, 9);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        assert_int_equal(r->integer, 0); /* nothing held: a tombstone instead */
        freeReplyObject(r);
    }
    {
        const char *args[] = {"sluice:rl:{t}:requests",
                              "sluice:rl:{t}:tokens",
                              "sluice:rl:{t}:leases",
                              "sluice:rl:{t}:released",
                              now,
                              "100",
                              "1000",
                              "1",
                              "10",
                              "late",
                              "3000"};
        r = eval(f, GW_RL_ADMIT_LUA, args, 11);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->element[0]->integer, 0);
        assert_int_equal(r->element[1]->integer, 4); /* released */
        freeReplyObject(r);
    }
    assert_int_equal(cmd_int(f->rc, "ZCARD sluice:rl:{t}:leases"), 0);
    assert_int_equal(cmd_int(f->rc, "ZCARD sluice:rl:{t}:requests"), 0);
    assert_int_equal(cmd_int(f->rc, "EXISTS sluice:rl:{t}:tokens"), 0);
    /* The tombstone blocks only that id: the tenant's one slot is free. */
    {
        gw_tenant t = tenant(100, 1000, 1);
        admission a;
        admit(f, &t, &a);
        assert_true(a.v.allowed);
        gw_ratelimit_release(f->rl, a.lease, 0, 0);
        wait_counts(f, 0, 1);
    }
}

static int64_t hold_until;
static int time_passed(fixture *f) {
    (void)f;
    return cm_clock_mono_ms() >= hold_until;
}

static void test_heartbeat_renews(void **state) {
    fixture *f = *state;
    gw_tenant t = tenant(0, 0, 1);
    admission a, b;
    admit(f, &t, &a);
    assert_true(a.v.allowed);
    /* Hold it past lease_ttl_ms (3 s) while the loop runs: renewed, still counted. */
    hold_until = cm_clock_mono_ms() + 4500;
    assert_true(run_until(f, NULL, time_passed));
    admit(f, &t, &b);
    assert_false(b.v.allowed);
    assert_string_equal(b.v.limit, "concurrency");
    gw_ratelimit_release(f->rl, b.lease, 0, 0);
    gw_ratelimit_release(f->rl, a.lease, 0, 0);
    wait_counts(f, 0, 0);
}

/* Requests per minute: the remaining figure counts down, the limit refuses with a retry-after
 * within the window, and a refunded request (the gateway answered 503) gives its slot back. */
static void test_request_window(void **state) {
    fixture *f = *state;
    gw_tenant t = tenant(3, 0, 0);
    admission a[3], over, again;
    for (int i = 0; i < 3; i++) {
        admit(f, &t, &a[i]);
        assert_true(a[i].v.allowed);
        assert_int_equal(a[i].v.limit_requests, 3);
        assert_int_equal(a[i].v.remaining_requests, 2 - i);
        assert_true(a[i].v.reset_requests_ms > 0 && a[i].v.reset_requests_ms <= 60000);
        assert_int_equal(a[i].v.limit_tokens, -1);
    }
    admit(f, &t, &over);
    assert_false(over.v.allowed);
    assert_false(over.v.redis_failed);
    assert_string_equal(over.v.limit, "requests");
    assert_int_equal(over.v.remaining_requests, 0);
    assert_true(over.v.retry_after_s >= 1 && over.v.retry_after_s <= 60);
    gw_ratelimit_release(f->rl, over.lease, 0, 0);
    wait_counts(f, 3, 3);
    /* Finished normally: the lease goes, the request stays counted in the window. */
    gw_ratelimit_release(f->rl, a[0].lease, 0, 0);
    gw_ratelimit_release(f->rl, a[1].lease, 0, 0);
    wait_counts(f, 1, 3);
    /* Refunded: the request leaves the window, and the next one fits. */
    gw_ratelimit_release(f->rl, a[2].lease, 0, 1);
    wait_counts(f, 0, 2);
    admit(f, &t, &again);
    assert_true(again.v.allowed);
    assert_int_equal(again.v.remaining_requests, 0);
    gw_ratelimit_release(f->rl, again.lease, 0, 0);
    wait_counts(f, 0, 3);
}

/* Tokens per minute: reservations count against the window, the release corrects them by the
 * real usage (tokens given back make room), and a first request larger than the whole limit
 * is still admitted (it could never fit otherwise). */
static void test_token_window(void **state) {
    fixture *f = *state;
    gw_tenant t = tenant(0, 100, 0);
    admission a, b, c, big;
    admit_tokens(f, &t, 60, &a);
    assert_true(a.v.allowed);
    assert_int_equal(a.v.limit_tokens, 100);
    assert_int_equal(a.v.remaining_tokens, 40);
    assert_int_equal(a.v.limit_requests, -1);
    admit_tokens(f, &t, 60, &b);
    assert_false(b.v.allowed);
    assert_string_equal(b.v.limit, "tokens");
    assert_int_equal(b.v.remaining_tokens, 40);
    assert_true(b.v.retry_after_s >= 1 && b.v.retry_after_s <= 61);
    gw_ratelimit_release(f->rl, b.lease, 0, 0);
    /* The first request used 10 of its 60: 50 come back. */
    gw_ratelimit_release(f->rl, a.lease, -50, 0);
    wait_counts(f, 0, 0);
    admit_tokens(f, &t, 60, &c);
    assert_true(c.v.allowed);
    assert_int_equal(c.v.remaining_tokens, 30);
    gw_ratelimit_release(f->rl, c.lease, 0, 0);
    wait_counts(f, 0, 0);

    gw_tenant u = tenant(0, 100, 0);
    snprintf(u.name, sizeof u.name, "u");
    admit_tokens(f, &u, 500, &big);
    assert_true(big.v.allowed);
    gw_ratelimit_release(f->rl, big.lease, 0, 0);
    wait_counts(f, 0, 0);
}

/* With no Redis to ask, every admission is answered at once with the configured verdict and
 * holds nothing (no lease to release); key lookups answer "Redis did not answer". */
static void no_redis(fixture *f, bool fail_open) {
    gw_config *cfg;
    gw_ratelimit *rl;
    _Atomic int ok = 0;
    char url[64];
    assert_int_equal(gw_config_defaults(&cfg), CM_OK);
    /* A port nothing listens on (taken and released at once). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    cfg->redis_url = strdup(url);
    cfg->redis_timeout_ms = 100;
    cfg->lease_ttl_ms = 3000;
    cfg->ratelimit_fail_open = fail_open;
    assert_int_equal(gw_ratelimit_create(&f->loop, cfg, &f->metrics, &ok, &rl), CM_OK);
    hold_until = cm_clock_mono_ms() + 300; /* the connect attempt fails or times out */
    assert_true(run_until(f, NULL, time_passed));
    assert_false(gw_ratelimit_connected(rl));
    gw_tenant t = tenant(1, 0, 0);
    admission ad;
    memset(&ad, 0, sizeof ad);
    int64_t t0 = cm_clock_mono_ms();
    gw_ratelimit_admit(rl, &t, 10, "req-down", on_verdict, &ad, &ad.lease);
    assert_true(run_until(f, &ad.done, NULL));
    assert_true(cm_clock_mono_ms() - t0 <= 1000);
    assert_true(ad.v.redis_failed);
    assert_int_equal(ad.v.allowed, fail_open ? 1 : 0);
    if (ad.lease != NULL)
        gw_ratelimit_release(rl, ad.lease, 0, 0);
    key_lookup lk = {0};
    uint8_t digest[CM_SHA256_LEN] = {1, 2, 3};
    gw_ratelimit_lookup_key(rl, digest, on_key, &lk);
    assert_true(run_until(f, &lk.done, NULL));
    assert_int_equal(lk.found, -1);
    gw_ratelimit_destroy(rl);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    gw_config_free(cfg);
}

static void test_fail_open_without_redis(void **state) {
    no_redis(*state, true);
}

static void test_fail_closed_without_redis(void **state) {
    no_redis(*state, false);
}

/* API keys in Redis: sluice:apikey:<sha256 hex> holds the tenant and its limits. */
static void test_key_lookup(void **state) {
    fixture *f = *state;
    uint8_t digest[CM_SHA256_LEN];
    char hex[CM_SHA256_HEX_LEN + 1];
    for (int i = 0; i < CM_SHA256_LEN; i++)
        digest[i] = (uint8_t)(0xa0 + i);
    cm_sha256_hex(digest, hex);
    freeReplyObject(redisCommand(f->rc,
                                 "HSET sluice:apikey:%s tenant acme rpm 5 tpm 700 "
                                 "max_concurrency 2",
                                 hex));
    key_lookup lk = {0};
    gw_ratelimit_lookup_key(f->rl, digest, on_key, &lk);
    assert_true(run_until(f, &lk.done, NULL));
    assert_int_equal(lk.found, 1);
    assert_string_equal(lk.t.name, "acme");
    assert_int_equal(lk.t.rpm, 5);
    assert_int_equal(lk.t.tpm, 700);
    assert_int_equal(lk.t.max_concurrency, 2);
    assert_memory_equal(lk.t.digest, digest, CM_SHA256_LEN);
    /* Unknown key, and a key without a tenant name (unusable): not found. */
    digest[0] ^= 1;
    memset(&lk, 0, sizeof lk);
    gw_ratelimit_lookup_key(f->rl, digest, on_key, &lk);
    assert_true(run_until(f, &lk.done, NULL));
    assert_int_equal(lk.found, 0);
    cm_sha256_hex(digest, hex);
    freeReplyObject(redisCommand(f->rc, "HSET sluice:apikey:%s rpm 5", hex));
    memset(&lk, 0, sizeof lk);
    gw_ratelimit_lookup_key(f->rl, digest, on_key, &lk);
    assert_true(run_until(f, &lk.done, NULL));
    assert_int_equal(lk.found, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lease_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stall_past_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_before_admission, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_renews, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_open_without_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_closed_without_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_lookup, setup, teardown),
    };
    if (access(REDIS_BIN, X_OK) != 0) {
        fprintf(stderr, "redis-server not installed: skipped\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
