/* gw_ratelimit against a real redis-server started by the test: leases are released by id
 * whatever the reply, a Redis stall past redis_timeout_ms leaks nothing, a release that runs
 * before its admission makes the admission record nothing, refusals cost nothing, and held
 * leases are renewed past lease_ttl_ms. Skips (77) when redis-server is not installed. */
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
#include <hiredis/hiredis.h>
#include <uv.h>

#include "cm_clock.h"
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

static int free_port(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        abort();
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

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
    redis_port = free_port();
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

static void admit(fixture *f, const gw_tenant *t, admission *a) {
    memset(a, 0, sizeof *a);
    gw_ratelimit_admit(f->rl, t, 10, "req-1", on_verdict, a, &a->lease);
    assert_true(run_until(f, &a->done, NULL));
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lease_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stall_past_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_before_admission, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_renews, setup, teardown),
    };
    if (access(REDIS_BIN, X_OK) != 0) {
        fprintf(stderr, "redis-server not installed: skipped\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
