/*
 * Real-process tests of sluice-worker on the bundled model: a worker is started as a child
 * process and driven over nng like a gateway (tests/service/svc_client.h), its HTTP side port
 * read with plain sockets, its registry entry read from a redis-server of our own. Every wait
 * is bounded; ports are picked free at run time.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_client.h"
#include "svc_http.h"
#include "cm_err.h"

#define MODEL_NAME "smollm2-test"

static const char *g_model;
static char g_tmpdir[256];

/* ---- small utilities ---- */

/* Value of the first series of metric `name` (exact family name, any labels). */
static double metric(int http_port, const char *name) {
    static char body[1 << 20];
    if (svc_http_get(http_port, "/metrics", body, sizeof body) != 200)
        return -1;
    size_t nl = strlen(name);
    for (char *line = body; line != NULL && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp(line, name, nl) == 0 && (line[nl] == '{' || line[nl] == ' ')) {
            char *sp = strchr(line, ' ');
            if (sp != NULL)
                return strtod(sp + 1, NULL);
        }
    }
    return -1;
}

/* Polls until metric(name) == want (within eps) or timeout; returns the last value. */
static double wait_metric(int http_port, const char *name, double want, int timeout_ms) {
    int64_t deadline = svc_now_ms() + timeout_ms;
    double v = -1;
    while (svc_now_ms() < deadline) {
        v = metric(http_port, name);
        if (v >= want - 1e-9 && v <= want + 1e-9)
            return v;
        usleep(50 * 1000);
    }
    return v;
}

typedef struct worker {
    pid_t pid;
    int port;
    int http_port;
    char addr[64];
    char log[300];
} worker;

/* Starts sluice-worker with extra args (NULL-terminated) and waits for /ready. */
static void start_worker(worker *w, ...) {
    w->port = svc_free_port();
    w->http_port = svc_free_port();
    snprintf(w->addr, sizeof w->addr, "tcp://127.0.0.1:%d", w->port);
    char listen[64], http[64];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", w->port);
    snprintf(http, sizeof http, "127.0.0.1:%d", w->http_port);
    snprintf(w->log, sizeof w->log, "%s/worker-%d.log", g_tmpdir, w->port);
    const char *argv[40] = {SLUICE_WORKER_BIN,
                            "--model",
                            g_model,
                            "--model-name",
                            MODEL_NAME,
                            "--listen",
                            listen,
                            "--http",
                            http,
                            "--threads",
                            "1",
                            "--log-level",
                            "debug"};
    int argc = 13;
    va_list ap;
    va_start(ap, w);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 38)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    w->pid = fork();
    assert_true(w->pid >= 0);
    if (w->pid == 0) {
        int fd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    char body[256];
    int64_t deadline = svc_now_ms() + 120000;
    while (svc_now_ms() < deadline) {
        if (svc_http_get(w->http_port, "/ready", body, sizeof body) == 200)
            return;
        int st;
        if (waitpid(w->pid, &st, WNOHANG) == w->pid) {
            fprintf(stderr, "worker exited early; log %s\n", w->log);
            fail();
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "worker not ready in time; log %s\n", w->log);
    fail();
}

/* Waits up to timeout_ms for pid; returns the exit status or -1 (then it is SIGKILLed). */
static int wait_exit(pid_t pid, int timeout_ms) {
    int64_t deadline = svc_now_ms() + timeout_ms;
    while (svc_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int stop_worker(worker *w) {
    if (w->pid <= 0)
        return -1;
    kill(w->pid, SIGTERM);
    int rc = wait_exit(w->pid, 60000);
    w->pid = 0;
    return rc;
}

/* Collected events of one request. */
typedef struct stream {
    int32_t ids[4096];
    size_t n_ids;
    char text[65536];
    size_t text_len;
    int n_token_events;
    int finished; /* FINISHED events seen */
    int errors;   /* ERROR events seen */
    int reason;
    uint32_t completion_tokens;
    uint32_t error_code;
    char error_msg[512];
    int foreign; /* events for other request ids */
} stream;

/* Streams are ~80 KB; they come from a small static ring rather than the heap so that a
 * failing assertion (which longjmps out of the test) leaks nothing. At most 4 live at once. */
static stream g_streams[4];
static unsigned g_next_stream;

static stream *new_stream(void) {
    stream *s = &g_streams[g_next_stream++ % 4];
    memset(s, 0, sizeof *s);
    return s;
}

static void add_event(stream *s, uint64_t want_id, const Sluice__Event *ev) {
    if (ev->request_id != want_id) {
        s->foreign++;
        return;
    }
    if (ev->kind_case == SLUICE__EVENT__KIND_TOKENS) {
        s->n_token_events++;
        for (size_t i = 0; i < ev->tokens->n_token_ids && s->n_ids < 4096; i++)
            s->ids[s->n_ids++] = ev->tokens->token_ids[i];
        size_t n = ev->tokens->text ? strlen(ev->tokens->text) : 0;
        if (s->text_len + n < sizeof s->text) {
            memcpy(s->text + s->text_len, ev->tokens->text, n);
            s->text_len += n;
            s->text[s->text_len] = '\0';
        }
    } else if (ev->kind_case == SLUICE__EVENT__KIND_FINISHED) {
        s->finished++;
        s->reason = ev->finished->reason;
        s->completion_tokens = ev->finished->usage->completion_tokens;
        if (ev->finished->text != NULL) {
            size_t n = strlen(ev->finished->text);
            if (s->text_len + n < sizeof s->text) {
                memcpy(s->text + s->text_len, ev->finished->text, n);
                s->text_len += n;
                s->text[s->text_len] = '\0';
            }
        }
    } else if (ev->kind_case == SLUICE__EVENT__KIND_ERROR) {
        s->errors++;
        s->error_code = ev->error->code;
        snprintf(s->error_msg, sizeof s->error_msg, "%s", ev->error->message);
    }
}

/* Reads events until request id ends (FINISHED or ERROR) or timeout. Returns true if it
 * ended. Events of other ids are counted as foreign. */
static bool collect(svc_client *c, uint64_t id, stream *s, int timeout_ms) {
    int64_t deadline = svc_now_ms() + timeout_ms;
    while (svc_now_ms() < deadline) {
        Sluice__Envelope *env = svc_client_next_event(c, (int)(deadline - svc_now_ms()) + 1);
        if (env == NULL)
            return false;
        add_event(s, id, env->event);
        bool done =
            env->event->request_id == id && env->event->kind_case != SLUICE__EVENT__KIND_TOKENS;
        sluice__envelope__free_unpacked(env, NULL);
        if (done)
            return true;
    }
    return false;
}

/* ---- sluice-generate reference ---- */

/* Decodes the JSON string starting at p (just after the opening quote) into out. */
static size_t json_unescape(const char *p, char *out, size_t cap) {
    size_t n = 0;
    while (*p && *p != '"' && n + 4 < cap) {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        if (e == 'n')
            out[n++] = '\n';
        else if (e == 't')
            out[n++] = '\t';
        else if (e == 'r')
            out[n++] = '\r';
        else if (e == 'b')
            out[n++] = '\b';
        else if (e == 'f')
            out[n++] = '\f';
        else if (e == 'u') {
            unsigned cp = (unsigned)strtoul((char[5]){p[0], p[1], p[2], p[3], 0}, NULL, 16);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[5]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
        } else {
            out[n++] = e; /* \" \\ \/ */
        }
    }
    out[n] = '\0';
    return n;
}

/* Runs sluice-generate --json for a greedy prompt (mode "--prompt" or "--chat"); fills text
 * and ids. */
static bool reference(const char *mode, const char *prompt, int max_tokens, stream *ref) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "timeout 120 '%s' --model '%s' %s '%s' --greedy --max-tokens %d --json --threads 1",
             SLUICE_GENERATE_BIN, g_model, mode, prompt, max_tokens);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return false;
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    if (pclose(f) != 0)
        return false;
    const char *t = strstr(out, "\"text\":\"");
    const char *ids = strstr(out, "\"token_ids\":[");
    if (t == NULL || ids == NULL)
        return false;
    ref->text_len = json_unescape(t + 8, ref->text, sizeof ref->text);
    const char *p = ids + 13;
    ref->n_ids = 0;
    while (*p && *p != ']') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ref->ids[ref->n_ids++] = (int32_t)v;
        p = end;
        if (*p == ',')
            p++;
    }
    return true;
}

/* ---- the shared worker ---- */

static worker g_w;

static int group_setup(void **state) {
    (void)state;
    g_model = getenv("SLUICE_TEST_MODEL");
    if (g_model == NULL || access(g_model, R_OK) != 0) {
        fprintf(stderr, "SLUICE_TEST_MODEL not set or unreadable: skipping\n");
        exit(77);
    }
    const char *bins[] = {SLUICE_WORKER_BIN, SLUICE_SVC_CLIENT_BIN, SLUICE_GENERATE_BIN};
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++) {
        if (access(bins[i], X_OK) != 0) {
            fprintf(stderr,
                    "%s is not built (make sluice-worker sluice-svc-client "
                    "sluice-generate)\n",
                    bins[i]);
            return -1;
        }
    }
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/sluice-worker-test-XXXXXX");
    if (mkdtemp(g_tmpdir) == NULL)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    start_worker(&g_w, NULL);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (g_w.pid > 0) {
        int rc = stop_worker(&g_w);
        if (rc != 0) {
            fprintf(stderr, "shared worker exit %d; log %s\n", rc, g_w.log);
            return -1;
        }
    }
    return 0;
}

/* On connect the worker introduces itself (Hello first), then sends Stats about every 250 ms. */
static void test_hello_and_stats(void **state) {
    (void)state;
    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    Sluice__Envelope *env = svc_client_recv(&c, 5000);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_HELLO);
    assert_int_equal(env->hello->protocol_version, 1);
    assert_string_equal(env->hello->role, "worker");
    assert_string_equal(env->hello->model, MODEL_NAME);
    assert_int_equal(env->hello->max_context_tokens, 8192);
    assert_true(env->hello->max_batch_tokens > 0);
    assert_string_equal(env->hello->backend, "cpu");
    assert_non_null(env->hello->instance_id);
    assert_false(env->hello->draining);
    sluice__envelope__free_unpacked(env, NULL);
    int stats = 0;
    int64_t t0 = svc_now_ms();
    while (stats < 3 && svc_now_ms() - t0 < 3000) {
        env = svc_client_recv(&c, 1000);
        if (env == NULL)
            continue;
        if (env->msg_case == SLUICE__ENVELOPE__MSG_STATS) {
            stats++;
            assert_true(env->stats->kv_blocks_total > 0);
            assert_true(env->stats->kv_blocks_free <= env->stats->kv_blocks_total);
            assert_false(env->stats->draining);
        }
        sluice__envelope__free_unpacked(env, NULL);
    }
    assert_int_equal(stats, 3);
    assert_true(svc_now_ms() - t0 < 2000); /* ~250 ms apart, not seconds */
    svc_client_close(&c);
}

/* Streaming events arrive in order and concatenate to sluice-generate's text and tokens. */
static void test_stream_matches_generate(void **state) {
    (void)state;
    const char *prompt = "The capital of France is";
    stream *ref = new_stream();
    assert_true(reference("--prompt", prompt, 16, ref));
    assert_true(ref->n_ids > 0);

    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    svc_submit_opts o = {
        .id = 11, .prompt = prompt, .max_tokens = 16, .greedy = true, .model = MODEL_NAME};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    stream *s = new_stream();
    assert_true(collect(&c, 11, s, 60000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->errors, 0);
    assert_int_equal(s->foreign, 0);
    assert_int_equal(s->n_ids, ref->n_ids);
    assert_memory_equal(s->ids, ref->ids, ref->n_ids * sizeof(int32_t));
    assert_string_equal(s->text, ref->text);
    assert_int_equal(s->completion_tokens, ref->n_ids);
    assert_true(s->n_token_events >= 2); /* streamed, not one lump */
    svc_client_close(&c);
}

/* A chat Submit is rendered with the model's template and tokenized like sluice-generate
 * --chat does: same tokens, same text. */
static void test_chat_matches_generate(void **state) {
    (void)state;
    const char *user = "What is the capital of France?";
    stream *ref = new_stream();
    assert_true(reference("--chat", user, 12, ref));
    assert_true(ref->n_ids > 0);
    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    svc_submit_opts o = {.id = 12, .chat_user = user, .max_tokens = 12, .greedy = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    stream *s = new_stream();
    assert_true(collect(&c, 12, s, 60000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->n_ids, ref->n_ids);
    assert_memory_equal(s->ids, ref->ids, ref->n_ids * sizeof(int32_t));
    assert_string_equal(s->text, ref->text);
    svc_client_close(&c);
}

/* Cancel stops the stream; KV usage goes back to zero. */
static void test_cancel_frees_kv(void **state) {
    (void)state;
    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    svc_submit_opts o = {
        .id = 5, .prompt = "Count: 1, 2, 3,", .max_tokens = 4000, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    stream *s = new_stream();
    /* Wait for a few tokens, check the cache is in use, then cancel. */
    while (s->n_token_events < 3) {
        Sluice__Envelope *env = svc_client_next_event(&c, 30000);
        assert_non_null(env);
        add_event(s, 5, env->event);
        sluice__envelope__free_unpacked(env, NULL);
        assert_int_equal(s->finished + s->errors, 0);
    }
    double used = wait_metric(g_w.http_port, "sluice_worker_requests_running", 1, 5000);
    assert_true(used == 1);
    assert_true(metric(g_w.http_port, "sluice_worker_kv_cache_usage_ratio") > 0);
    assert_int_equal(svc_client_cancel(&c, 5), 0);
    assert_true(collect(&c, 5, s, 30000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->reason, SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED);
    assert_true(s->n_ids < 4000);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_kv_cache_usage_ratio", 0, 5000) == 0);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_requests_running", 0, 5000) == 0);
    /* Nothing more arrives for the cancelled request. */
    Sluice__Envelope *late = svc_client_next_event(&c, 500);
    assert_null(late);
    svc_client_close(&c);
}

/* Two clients with the same request id each get only their own events. */
static void test_two_clients_isolated(void **state) {
    (void)state;
    svc_client a, b;
    assert_int_equal(svc_client_open(&a, g_w.addr, 1, 5000), 0);
    assert_int_equal(svc_client_open(&b, g_w.addr, 1, 5000), 0);
    svc_submit_opts oa = {
        .id = 7, .prompt = "Once upon a time", .max_tokens = 12, .greedy = true, .no_eos = true};
    svc_submit_opts ob = {
        .id = 7, .prompt = "def fibonacci(n):", .max_tokens = 20, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&a, &oa), 0);
    assert_int_equal(svc_client_submit(&b, &ob), 0);
    stream *sa = new_stream(), *sb = new_stream();
    assert_true(collect(&a, 7, sa, 60000));
    assert_true(collect(&b, 7, sb, 60000));
    assert_int_equal(sa->finished, 1);
    assert_int_equal(sb->finished, 1);
    assert_int_equal(sa->n_ids, 12);
    assert_int_equal(sb->n_ids, 20);
    assert_int_equal(sa->completion_tokens, 12);
    assert_int_equal(sb->completion_tokens, 20);
    /* No stray event afterwards on either connection. */
    Sluice__Envelope *late = svc_client_next_event(&a, 300);
    assert_null(late);
    late = svc_client_next_event(&b, 300);
    assert_null(late);
    svc_client_close(&a);
    svc_client_close(&b);
}

/* Killing a client (SIGKILL, no Cancel) frees its requests. */
static void test_killed_client_frees_requests(void **state) {
    (void)state;
    double lost0 = metric(g_w.http_port, "sluice_worker_connection_lost_requests_total");
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        execl(SLUICE_SVC_CLIENT_BIN, SLUICE_SVC_CLIENT_BIN, g_w.addr, "--prompt", "Count: 1, 2,",
              "--max-tokens", "4000", "--no-eos", "--count", "3", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    /* Wait until tokens flow for it. */
    FILE *f = fdopen(pipefd[0], "r");
    char line[256];
    bool streaming = false;
    int64_t deadline = svc_now_ms() + 60000;
    while (!streaming && svc_now_ms() < deadline && fgets(line, sizeof line, f) != NULL)
        streaming = strncmp(line, "TOKENS", 6) == 0;
    assert_true(streaming);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_requests_running", 3, 10000) == 3);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fclose(f);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_requests_running", 0, 10000) == 0);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_kv_cache_usage_ratio", 0, 5000) == 0);
    assert_true(metric(g_w.http_port, "sluice_worker_connection_lost_requests_total") >= lost0 + 3);
}

static void expect_error(svc_client *c, uint64_t id, uint32_t code, const char *needle) {
    stream *s = new_stream();
    assert_true(collect(c, id, s, 10000));
    if (s->errors != 1 || s->error_code != code)
        fprintf(stderr, "request %llu: errors=%d code=%u msg=%s\n", (unsigned long long)id,
                s->errors, s->error_code, s->error_msg);
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->error_code, code);
    if (needle != NULL) {
        if (strstr(s->error_msg, needle) == NULL)
            fprintf(stderr, "message '%s' lacks '%s'\n", s->error_msg, needle);
        assert_non_null(strstr(s->error_msg, needle));
    }
}

/* Garbage, wrong oneof, missing/contradictory fields, absurd sizes, duplicate ids, unknown
 * model: errors or counted drops, and the worker keeps serving. */
static void test_bad_input(void **state) {
    (void)state;
    double dropped0 = metric(g_w.http_port, "sluice_worker_dropped_messages_total");
    /* 1. A raw TCP peer that is not SP at all. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)g_w.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char junk[] = "GET / HTTP/1.1\r\n\r\nthis is not a pair1 peer";
    assert_true(write(fd, junk, sizeof junk) > 0);
    char buf[64];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    /* The worker sends its handshake, then closes on ours: read until EOF. */
    int64_t deadline = svc_now_ms() + 5000;
    bool closed = false;
    while (!closed && svc_now_ms() < deadline) {
        if (poll(&p, 1, 200) > 0 && read(fd, buf, sizeof buf) <= 0)
            closed = true;
    }
    close(fd);
    assert_true(closed);

    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    /* 2. Garbage payloads in valid frames: dropped and counted (no id to answer). */
    uint8_t garbage[512];
    srand(7);
    for (int i = 0; i < 20; i++) {
        for (size_t k = 0; k < sizeof garbage; k++)
            garbage[k] = (uint8_t)rand();
        assert_int_equal(svc_client_send_raw(&c, garbage, sizeof garbage), 0);
    }
    assert_int_equal(svc_client_send_raw(&c, "", 0), 0); /* empty envelope: no oneof */
    /* 3. Wrong oneof: an Event sent to the worker is ignored. */
    Sluice__Event wrong = SLUICE__EVENT__INIT;
    wrong.request_id = 99;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_EVENT;
    env.event = &wrong;
    assert_int_equal(svc_client_send_env(&c, &env), 0);
    /* 4. Submit with no prompt form. */
    Sluice__Submit sub = SLUICE__SUBMIT__INIT;
    sub.request_id = 21;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &sub;
    assert_int_equal(svc_client_send_env(&c, &env), 0);
    expect_error(&c, 21, CM_ERR_INVALID, "exactly one of");
    /* 5. Absurd sizes: 100 stop strings. */
    char *stops[100];
    for (int i = 0; i < 100; i++)
        stops[i] = (char *)"x";
    sub.request_id = 22;
    sub.prompt = (char *)"hi";
    sub.n_stop = 100;
    sub.stop = stops;
    assert_int_equal(svc_client_send_env(&c, &env), 0);
    expect_error(&c, 22, CM_ERR_LIMIT, "stop");
    sub.n_stop = 0;
    /* 6. Unknown model. */
    svc_submit_opts o = {.id = 23, .prompt = "hi", .max_tokens = 2, .model = "gpt-17"};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    expect_error(&c, 23, CM_ERR_NOT_FOUND, "gpt-17");
    /* 7. Token ids outside the vocabulary. */
    int32_t bad_ids[] = {1, 2, 999999};
    svc_submit_opts oi = {.id = 24, .ids = bad_ids, .n_ids = 3, .max_tokens = 2};
    assert_int_equal(svc_client_submit(&c, &oi), 0);
    expect_error(&c, 24, CM_ERR_INVALID, "vocabulary");
    /* 8. Prompt too long for the context: the OpenAI-style message. */
    static int32_t long_ids[8190];
    for (int i = 0; i < 8190; i++)
        long_ids[i] = 100 + i % 1000;
    svc_submit_opts ol = {.id = 25, .ids = long_ids, .n_ids = 8190, .max_tokens = 100};
    assert_int_equal(svc_client_submit(&c, &ol), 0);
    expect_error(&c, 25, CM_ERR_CONTEXT_LENGTH,
                 "maximum context length is 8192 tokens. However, you requested 8290 tokens "
                 "(8190 in the messages, 100 in the completion)");
    /* 9. Invalid UTF-8 in a prompt. */
    svc_submit_opts ou = {.id = 26, .prompt = "bad \xff\xfe bytes", .max_tokens = 2};
    assert_int_equal(svc_client_submit(&c, &ou), 0);
    expect_error(&c, 26, CM_ERR_UTF8, "UTF-8");
    /* 10. Duplicate in-flight id: the second is refused, the first is undisturbed. */
    svc_submit_opts od = {
        .id = 27, .prompt = "Count: 1, 2,", .max_tokens = 24, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &od), 0);
    assert_int_equal(svc_client_submit(&c, &od), 0);
    stream *s = new_stream();
    assert_true(collect(&c, 27, s, 60000));
    /* The first event to end id 27 is the duplicate's EXISTS error... */
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->error_code, CM_ERR_EXISTS);
    /* ...and the original still runs to completion. */
    memset(s, 0, sizeof *s);
    assert_true(collect(&c, 27, s, 60000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->reason, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    assert_true(metric(g_w.http_port, "sluice_worker_dropped_messages_total") >= dropped0 + 20);

    /* Still serving, on this connection and a fresh one. */
    svc_submit_opts ok = {
        .id = 28, .prompt = "Hello", .max_tokens = 3, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &ok), 0);
    s = new_stream();
    assert_true(collect(&c, 28, s, 30000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->n_ids, 3);
    svc_client_close(&c);
    char body[64];
    assert_int_equal(svc_http_get(g_w.http_port, "/health", body, sizeof body), 200);
}

/* Reads events until every id in ids[0..n) ended (FINISHED or ERROR) or timeout; each
 * stream gets its own id's events. True if all ended. */
static bool collect_all(svc_client *c, const uint64_t *ids, stream **s, size_t n, int timeout_ms) {
    size_t ended = 0;
    int64_t deadline = svc_now_ms() + timeout_ms;
    while (ended < n && svc_now_ms() < deadline) {
        Sluice__Envelope *env = svc_client_next_event(c, (int)(deadline - svc_now_ms()) + 1);
        if (env == NULL)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (env->event->request_id != ids[i])
                continue;
            add_event(s[i], ids[i], env->event);
            ended += env->event->kind_case != SLUICE__EVENT__KIND_TOKENS;
        }
        sluice__envelope__free_unpacked(env, NULL);
    }
    return ended == n;
}

/* Requests still in the preparation pool: 500,000 spaces pass the byte bound but take the
 * pool's threads ~0.5 s each to count (and then overflow 8192 with max_tokens 1000), so the
 * requests queued behind them are still in preparation when the next commands arrive. A
 * duplicate id gets EXISTS, a Cancel gets Finished{cancelled} at once and the request never
 * starts, a closed connection drops its requests, and the engine keeps serving throughout. */
static void test_requests_in_preparation(void **state) {
    (void)state;
    static char spaces[500001];
    memset(spaces, ' ', sizeof spaces - 1);
    double lost0 = metric(g_w.http_port, "sluice_worker_connection_lost_requests_total");
    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 1, 5000), 0);
    svc_submit_opts slow = {.prompt = spaces, .max_tokens = 1000};
    for (uint64_t id = 1; id <= 3; id++) {
        slow.id = id;
        assert_int_equal(svc_client_submit(&c, &slow), 0);
    }
    svc_submit_opts b = {.id = 4, .prompt = "Hello", .max_tokens = 50, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &b), 0);
    assert_int_equal(svc_client_submit(&c, &b), 0); /* duplicate while in preparation */
    assert_int_equal(svc_client_cancel(&c, 4), 0);
    stream *s4 = new_stream();
    assert_true(collect(&c, 4, s4, 10000));
    assert_int_equal(s4->errors, 1);
    assert_int_equal(s4->error_code, CM_ERR_EXISTS);
    memset(s4, 0, sizeof *s4);
    assert_true(collect(&c, 4, s4, 10000));
    assert_int_equal(s4->finished, 1);
    assert_int_equal(s4->reason, SLUICE__FINISH_REASON__FINISH_REASON_CANCELLED);
    assert_int_equal(s4->n_token_events, 0);
    assert_int_equal(s4->completion_tokens, 0);
    /* The slow ones are counted in full and refused with exact numbers. */
    uint64_t ids[3] = {1, 2, 3};
    stream *ss[3] = {new_stream(), new_stream(), new_stream()};
    assert_true(collect_all(&c, ids, ss, 3, 60000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ss[i]->errors, 1);
        assert_int_equal(ss[i]->error_code, CM_ERR_CONTEXT_LENGTH);
        assert_null(strstr(ss[i]->error_msg, "at least"));
    }
    /* Nothing more for the cancelled request: it never started. */
    assert_null(svc_client_next_event(&c, 300));

    /* A connection that closes with requests in preparation. */
    svc_client d;
    assert_int_equal(svc_client_open(&d, g_w.addr, 1, 5000), 0);
    for (uint64_t id = 1; id <= 2; id++) {
        slow.id = id;
        assert_int_equal(svc_client_submit(&d, &slow), 0);
    }
    b.id = 3;
    assert_int_equal(svc_client_submit(&d, &b), 0);
    /* nng drops what a closing socket has not sent yet: the close waits until the worker has
     * answered a request sent after the three (refused at once: a model it does not serve),
     * so all three reached it and are still in preparation behind the slow ones. */
    svc_submit_opts marker = {.id = 4, .prompt = "hi", .max_tokens = 1, .model = "no-such-model"};
    assert_int_equal(svc_client_submit(&d, &marker), 0);
    stream *sm = new_stream();
    assert_true(collect(&d, 4, sm, 10000));
    assert_int_equal(sm->errors, 1);
    svc_client_close(&d);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_connection_lost_requests_total",
                            lost0 + 3, 10000) == lost0 + 3);
    /* Still serving; nothing of the closed connection ever ran. */
    svc_submit_opts ok = {.id = 9, .prompt = "Hello", .max_tokens = 3, .greedy = true};
    ok.no_eos = true;
    assert_int_equal(svc_client_submit(&c, &ok), 0);
    stream *s = new_stream();
    assert_true(collect(&c, 9, s, 30000));
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->n_ids, 3);
    assert_true(wait_metric(g_w.http_port, "sluice_worker_requests_running", 0, 5000) == 0);
    svc_client_close(&c);
    char body[64];
    assert_int_equal(svc_http_get(g_w.http_port, "/health", body, sizeof body), 200);
}

/* A gateway speaking another protocol version is refused with one clear error. */
static void test_protocol_version_refused(void **state) {
    (void)state;
    svc_client c;
    assert_int_equal(svc_client_open(&c, g_w.addr, 2, 5000), 0);
    svc_submit_opts o = {.id = 1, .prompt = "hi", .max_tokens = 2};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    expect_error(&c, 1, CM_ERR_PROTOCOL, "protocol version");
    svc_client_close(&c);
}

/* SIGTERM: ready goes false, Drain is sent, new work refused, in-flight finishes (also what
 * was still in the preparation pool), exit 0. */
static void test_sigterm_drains(void **state) {
    (void)state;
    worker w;
    start_worker(&w, "--drain-timeout-ms", "60000", NULL);
    svc_client c;
    assert_int_equal(svc_client_open(&c, w.addr, 1, 5000), 0);
    /* Long enough (400 tokens: seconds on CPU) that the worker is still draining while the
     * checks below run. */
    svc_submit_opts o = {
        .id = 1, .prompt = "Count: 1, 2,", .max_tokens = 400, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    stream *s = new_stream();
    while (s->n_token_events < 1) {
        Sluice__Envelope *env = svc_client_next_event(&c, 30000);
        assert_non_null(env);
        add_event(s, 1, env->event);
        sluice__envelope__free_unpacked(env, NULL);
    }
    /* Requests still in the preparation pool when the drain starts were accepted: they
     * finish preparing and end as they would have (3 and 4, 500,000 spaces each, keep both
     * pool threads busy ~0.5 s and are refused once counted; 5, queued behind them, runs). */
    static char spaces[500001];
    memset(spaces, ' ', sizeof spaces - 1);
    svc_submit_opts slow = {.prompt = spaces, .max_tokens = 1000};
    for (uint64_t id = 3; id <= 4; id++) {
        slow.id = id;
        assert_int_equal(svc_client_submit(&c, &slow), 0);
    }
    svc_submit_opts o5 = {.id = 5, .prompt = "Hello", .max_tokens = 3, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o5), 0);
    usleep(200 * 1000);    /* the Submits reach the engine thread before the signal */
    int end_kind[6] = {0}; /* per id 3..5: the final event's kind */
    uint32_t end_code[6] = {0};
    kill(w.pid, SIGTERM);
    /* A Drain message arrives (Stats/Events may interleave). */
    bool drained = false;
    int64_t deadline = svc_now_ms() + 10000;
    while (!drained && svc_now_ms() < deadline) {
        Sluice__Envelope *env = svc_client_recv(&c, 2000);
        if (env == NULL)
            continue;
        if (env->msg_case == SLUICE__ENVELOPE__MSG_DRAIN) {
            drained = true;
        } else if (env->msg_case == SLUICE__ENVELOPE__MSG_EVENT) {
            uint64_t id = env->event->request_id;
            if (id == 1)
                add_event(s, 1, env->event);
            else if (id >= 3 && id <= 5 && env->event->kind_case != SLUICE__EVENT__KIND_TOKENS)
                end_kind[id] = env->event->kind_case;
            if (id >= 3 && id <= 5 && env->event->kind_case == SLUICE__EVENT__KIND_ERROR)
                end_code[id] = env->event->error->code;
        }
        sluice__envelope__free_unpacked(env, NULL);
    }
    assert_true(drained);
    char body[128];
    assert_int_equal(svc_http_get(w.http_port, "/ready", body, sizeof body), 503);
    assert_non_null(strstr(body, "draining"));
    /* New work is refused with CLOSED (retry elsewhere). */
    svc_submit_opts o2 = {.id = 2, .prompt = "hi", .max_tokens = 2};
    assert_int_equal(svc_client_submit(&c, &o2), 0);
    /* Collect request 1 to its end while waiting for the refusal of 2. */
    stream *s2 = new_stream();
    deadline = svc_now_ms() + 60000;
    while ((s->finished + s->errors == 0 || s2->errors == 0 || !end_kind[3] || !end_kind[4] ||
            !end_kind[5]) &&
           svc_now_ms() < deadline) {
        Sluice__Envelope *env = svc_client_next_event(&c, 5000);
        if (env == NULL)
            break;
        uint64_t id = env->event->request_id;
        if (id == 1) {
            add_event(s, 1, env->event);
        } else if (id == 2) {
            add_event(s2, 2, env->event);
        } else if (id >= 3 && id <= 5 && env->event->kind_case != SLUICE__EVENT__KIND_TOKENS) {
            end_kind[id] = env->event->kind_case;
            if (env->event->kind_case == SLUICE__EVENT__KIND_ERROR)
                end_code[id] = env->event->error->code;
        }
        sluice__envelope__free_unpacked(env, NULL);
    }
    for (int id = 3; id <= 4; id++) {
        assert_int_equal(end_kind[id], SLUICE__EVENT__KIND_ERROR);
        assert_int_equal(end_code[id], CM_ERR_CONTEXT_LENGTH);
    }
    assert_int_equal(end_kind[5], SLUICE__EVENT__KIND_FINISHED);
    assert_int_equal(s2->errors, 1);
    assert_int_equal(s2->error_code, CM_ERR_CLOSED);
    assert_int_equal(s->finished, 1);
    assert_int_equal(s->reason, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    assert_int_equal(s->n_ids, 400);
    svc_client_close(&c);
    assert_int_equal(wait_exit(w.pid, 30000), 0);
}

/* A second SIGTERM cancels what remains with an error event; still exit 0. */
static void test_second_sigterm_aborts(void **state) {
    (void)state;
    worker w;
    start_worker(&w, "--drain-timeout-ms", "120000", NULL);
    svc_client c;
    assert_int_equal(svc_client_open(&c, w.addr, 1, 5000), 0);
    svc_submit_opts o = {
        .id = 3, .prompt = "Count: 1, 2,", .max_tokens = 4000, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    Sluice__Envelope *env = svc_client_next_event(&c, 30000);
    assert_non_null(env);
    sluice__envelope__free_unpacked(env, NULL);
    kill(w.pid, SIGTERM);
    usleep(300 * 1000);
    kill(w.pid, SIGTERM);
    stream *s = new_stream();
    assert_true(collect(&c, 3, s, 20000));
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->error_code, CM_ERR_CLOSED);
    svc_client_close(&c);
    assert_int_equal(wait_exit(w.pid, 30000), 0);
}

/* The drain timeout cancels what remains with an error event; still exit 0. */
static void test_drain_timeout_cancels(void **state) {
    (void)state;
    worker w;
    start_worker(&w, "--drain-timeout-ms", "300", NULL);
    svc_client c;
    assert_int_equal(svc_client_open(&c, w.addr, 1, 5000), 0);
    svc_submit_opts o = {
        .id = 4, .prompt = "Count: 1, 2,", .max_tokens = 4000, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    Sluice__Envelope *env = svc_client_next_event(&c, 30000);
    assert_non_null(env);
    sluice__envelope__free_unpacked(env, NULL);
    int64_t t0 = svc_now_ms();
    kill(w.pid, SIGTERM);
    stream *s = new_stream();
    assert_true(collect(&c, 4, s, 20000));
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->error_code, CM_ERR_CLOSED);
    assert_non_null(strstr(s->error_msg, "shut down"));
    assert_true(svc_now_ms() - t0 >= 250);
    svc_client_close(&c);
    assert_int_equal(wait_exit(w.pid, 30000), 0);
}

/* Reads exactly n bytes (bounded by timeout_ms). */
static bool read_full(int fd, void *buf, size_t n, int timeout_ms) {
    size_t got = 0;
    int64_t deadline = svc_now_ms() + timeout_ms;
    while (got < n && svc_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return got == n;
}

/* A gateway that stops reading: its send queue fills, its request is cancelled (KV freed),
 * the overflow is counted, and the last thing it is sent for that request is
 * Error{OVERLOADED}. Over ipc:// with a raw unix-socket peer speaking the SP framing, because
 * a unix socket's kernel buffer fills after a few hundred small messages. */
static void test_slow_gateway_cancelled(void **state) {
    (void)state;
    char path[300], listen[320];
    snprintf(path, sizeof path, "%s/slow.ipc", g_tmpdir);
    snprintf(listen, sizeof listen, "ipc://%s", path);
    worker w;
    start_worker(&w, "--listen", listen, "--send-queue-messages", "16", NULL);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const uint8_t hs[8] = {0, 'S', 'P', 0, 0, 0x11, 0, 0};
    assert_int_equal(write(fd, hs, 8), 8);
    uint8_t peer_hs[8];
    assert_true(read_full(fd, peer_hs, 8, 5000));
    assert_int_equal(peer_hs[5], 0x11);
    /* One Submit, framed by hand: [1][len 8 BE][hop 4 BE][envelope]. */
    Sluice__Submit sub = SLUICE__SUBMIT__INIT;
    sub.request_id = 66;
    sub.prompt = (char *)"Count: 1, 2,";
    sub.has_max_tokens = true;
    sub.max_tokens = 8000;
    Sluice__SamplingParams sp = SLUICE__SAMPLING_PARAMS__INIT;
    Sluice__LogitBias lb[3];
    Sluice__LogitBias *lbp[3];
    for (int i = 0; i < 3; i++) {
        Sluice__LogitBias init = SLUICE__LOGIT_BIAS__INIT;
        lb[i] = init;
        lb[i].token_id = i;
        lb[i].bias = -100.0f;
        lbp[i] = &lb[i];
    }
    sp.n_logit_bias = 3;
    sp.logit_bias = lbp;
    sub.sampling = &sp;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &sub;
    size_t n = sluice__envelope__get_packed_size(&env);
    uint8_t *frame = malloc(13 + n);
    frame[0] = 1;
    uint64_t len = 4 + n;
    for (int i = 0; i < 8; i++)
        frame[1 + i] = (uint8_t)(len >> (56 - 8 * i));
    frame[9] = frame[10] = frame[11] = 0;
    frame[12] = 1;
    sluice__envelope__pack(&env, frame + 13);
    assert_int_equal(write(fd, frame, 13 + n), (ssize_t)(13 + n));
    free(frame);
    /* Do not read: the worker must give up on this request by itself. */
    double overflows = -1;
    int64_t deadline = svc_now_ms() + 120000;
    while (svc_now_ms() < deadline) {
        overflows = metric(w.http_port, "sluice_worker_send_queue_overflows_total");
        if (overflows >= 1)
            break;
        usleep(200 * 1000);
    }
    assert_true(overflows >= 1);
    assert_true(wait_metric(w.http_port, "sluice_worker_requests_running", 0, 10000) == 0);
    assert_true(wait_metric(w.http_port, "sluice_worker_kv_cache_usage_ratio", 0, 5000) == 0);
    /* Now read everything that was queued: request 66 ends with Error{OVERLOADED}. */
    bool saw_overloaded = false, saw_finished = false;
    int tokens = 0;
    for (;;) {
        uint8_t hdr[13];
        if (!read_full(fd, hdr, 13, 2000))
            break;
        uint64_t flen = 0;
        for (int i = 0; i < 8; i++)
            flen = (flen << 8) | hdr[1 + i];
        assert_true(flen >= 4 && flen < (1u << 20));
        uint8_t *body = malloc(flen - 4 + 1);
        assert_true(read_full(fd, body, flen - 4, 2000));
        Sluice__Envelope *e = sluice__envelope__unpack(NULL, flen - 4, body);
        free(body);
        assert_non_null(e);
        if (e->msg_case == SLUICE__ENVELOPE__MSG_EVENT && e->event->request_id == 66) {
            if (e->event->kind_case == SLUICE__EVENT__KIND_TOKENS)
                tokens++;
            else if (e->event->kind_case == SLUICE__EVENT__KIND_FINISHED)
                saw_finished = true;
            else if (e->event->kind_case == SLUICE__EVENT__KIND_ERROR &&
                     e->event->error->code == CM_ERR_OVERLOADED)
                saw_overloaded = true;
        }
        sluice__envelope__free_unpacked(e, NULL);
        if (saw_overloaded)
            break;
    }
    close(fd);
    assert_true(tokens > 0);
    assert_true(saw_overloaded);
    assert_false(saw_finished);
    assert_int_equal(stop_worker(&w), 0);
}

/* Registry: the key appears in a real Redis with the announced fields and is deleted on
 * drain (well before its 5 s TTL could expire it). */
static void test_registry_in_redis(void **state) {
    (void)state;
    int rport = svc_free_port();
    char port_s[16], dir[300];
    snprintf(port_s, sizeof port_s, "%d", rport);
    snprintf(dir, sizeof dir, "%s", g_tmpdir);
    pid_t rpid = fork();
    assert_true(rpid >= 0);
    if (rpid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execlp("redis-server", "redis-server", "--port", port_s, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    redisContext *rc = NULL;
    int64_t deadline = svc_now_ms() + 10000;
    while (svc_now_ms() < deadline) {
        struct timeval tv = {.tv_sec = 1};
        rc = redisConnectWithTimeout("127.0.0.1", rport, tv);
        if (rc != NULL && rc->err == 0)
            break;
        if (rc != NULL)
            redisFree(rc);
        rc = NULL;
        usleep(100 * 1000);
    }
    assert_non_null(rc);
    char reg[64];
    snprintf(reg, sizeof reg, "redis://127.0.0.1:%d", rport);
    worker w;
    start_worker(&w, "--registry", reg, NULL);
    /* The key shows up within a couple of refreshes. */
    char key[256] = "";
    deadline = svc_now_ms() + 10000;
    while (key[0] == '\0' && svc_now_ms() < deadline) {
        redisReply *r = redisCommand(rc, "KEYS sluice:worker:*");
        if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
            snprintf(key, sizeof key, "%s", r->element[0]->str);
        freeReplyObject(r);
        if (key[0] == '\0')
            usleep(100 * 1000);
    }
    assert_true(key[0] != '\0');
    redisReply *v = redisCommand(rc, "GET %s", key);
    assert_non_null(v);
    assert_int_equal(v->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(v->str, "\"model\":\"" MODEL_NAME "\""));
    char want_addr[96];
    snprintf(want_addr, sizeof want_addr, "\"address\":\"%s\"", w.addr);
    assert_non_null(strstr(v->str, want_addr));
    assert_non_null(strstr(v->str, "\"draining\":false"));
    assert_non_null(strstr(v->str, "\"protocol_version\":1"));
    freeReplyObject(v);
    redisReply *ttl = redisCommand(rc, "PTTL %s", key);
    assert_true(ttl->integer > 0 && ttl->integer <= 5000);
    freeReplyObject(ttl);

    int64_t t_term = svc_now_ms();
    kill(w.pid, SIGTERM);
    bool gone = false;
    while (!gone && svc_now_ms() - t_term < 3000) {
        redisReply *r = redisCommand(rc, "EXISTS %s", key);
        gone = r != NULL && r->integer == 0;
        freeReplyObject(r);
        if (!gone)
            usleep(50 * 1000);
    }
    assert_true(gone);
    assert_int_equal(wait_exit(w.pid, 30000), 0);
    redisFree(rc);
    kill(rpid, SIGTERM);
    wait_exit(rpid, 10000);
}

/* Without Redis reachable the worker still serves (static gateway configs). */
static void test_registry_down_still_serves(void **state) {
    (void)state;
    char reg[64];
    snprintf(reg, sizeof reg, "redis://127.0.0.1:%d", svc_free_port());
    worker w;
    start_worker(&w, "--registry", reg, NULL);
    svc_client c;
    assert_int_equal(svc_client_open(&c, w.addr, 1, 5000), 0);
    svc_submit_opts o = {
        .id = 1, .prompt = "Hello", .max_tokens = 3, .greedy = true, .no_eos = true};
    assert_int_equal(svc_client_submit(&c, &o), 0);
    stream *s = new_stream();
    assert_true(collect(&c, 1, s, 30000));
    assert_int_equal(s->finished, 1);
    svc_client_close(&c);
    assert_int_equal(stop_worker(&w), 0);
}

/* Removes the worker logs of a fully passing run (a failing run keeps them: the failure
 * messages name them). */
static void remove_logs(void) {
    DIR *d = opendir(g_tmpdir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[600];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", g_tmpdir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(g_tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_and_stats),
        cmocka_unit_test(test_stream_matches_generate),
        cmocka_unit_test(test_chat_matches_generate),
        cmocka_unit_test(test_cancel_frees_kv),
        cmocka_unit_test(test_two_clients_isolated),
        cmocka_unit_test(test_killed_client_frees_requests),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_requests_in_preparation),
        cmocka_unit_test(test_protocol_version_refused),
        cmocka_unit_test(test_sigterm_drains),
        cmocka_unit_test(test_second_sigterm_aborts),
        cmocka_unit_test(test_drain_timeout_cancels),
        cmocka_unit_test(test_slow_gateway_cancelled),
        cmocka_unit_test(test_registry_in_redis),
        cmocka_unit_test(test_registry_down_still_serves),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (failed == 0)
        remove_logs();
    return failed;
}
