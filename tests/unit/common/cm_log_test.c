/* cm_log: stderr is redirected to a temp file and the lines read back - logfmt and JSON
 * shapes, escaping, level filtering, truncation of huge values, whole lines under threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_log.h"

typedef struct capture {
    char path[64];
    int saved_stderr;
    int fd;
} capture;

static int setup(void **state) {
    capture *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -1;
    }
    snprintf(c->path, sizeof c->path, "/tmp/cm_log_test.XXXXXX");
    c->fd = mkstemp(c->path);
    if (c->fd < 0) {
        free(c);
        return -1;
    }
    fflush(stderr);
    c->saved_stderr = dup(STDERR_FILENO);
    dup2(c->fd, STDERR_FILENO);
    cm_log_set_level(CM_LOG_DEBUG);
    cm_log_set_json(0);
    cm_log_set_component("test");
    *state = c;
    return 0;
}

static int teardown(void **state) {
    capture *c = *state;
    dup2(c->saved_stderr, STDERR_FILENO);
    close(c->saved_stderr);
    close(c->fd);
    unlink(c->path);
    free(c);
    return 0;
}

/* slurp returns everything logged so far (caller frees) and empties the file. */
static char *slurp(capture *c) {
    off_t n = lseek(c->fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(c->fd, buf, (size_t)n, 0), n);
    assert_int_equal(ftruncate(c->fd, 0), 0);
    lseek(c->fd, 0, SEEK_SET);
    return buf;
}

static void test_logfmt_line(void **state) {
    capture *c = *state;
    cm_log(CM_LOG_INFO, "req-1", "request done", "status", "200", "path", "/v1/chat completions",
           "empty", "", NULL);
    char *out = slurp(c);
    assert_true(strncmp(out, "ts=", 3) == 0);
    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
    assert_int_equal(out[3 + 4], '-');
    assert_int_equal(out[3 + 10], 'T');
    assert_int_equal(out[3 + 23], 'Z');
    assert_non_null(strstr(out, " level=info component=test request_id=req-1 "
                                "msg=\"request done\" status=200 "
                                "path=\"/v1/chat completions\" empty=\"\"\n"));
    /* exactly one line */
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}

static void test_logfmt_escaping_and_no_request_id(void **state) {
    capture *c = *state;
    cm_log(CM_LOG_WARN, NULL, "bad \"input\"\nsecond line", "k", "a\\b\tc", NULL);
    char *out = slurp(c);
    assert_null(strstr(out, "request_id"));
    assert_non_null(strstr(out, " level=warn "));
    assert_non_null(strstr(out, "msg=\"bad \\\"input\\\"\\nsecond line\" k=\"a\\\\b\\tc\"\n"));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}

static void test_json_line(void **state) {
    capture *c = *state;
    cm_log_set_json(1);
    cm_log(CM_LOG_ERROR, "req-2", "boom \"x\"", "code", "\x01", NULL);
    cm_log_set_json(0);
    char *out = slurp(c);
    assert_true(strncmp(out, "{\"ts\":\"", 7) == 0);
    assert_non_null(strstr(out, ",\"level\":\"error\",\"component\":\"test\","
                                "\"request_id\":\"req-2\",\"msg\":\"boom \\\"x\\\"\","
                                "\"code\":\"\\u0001\"}\n"));
    free(out);
}

static void test_level_filter_and_parse(void **state) {
    capture *c = *state;
    cm_log_set_level(CM_LOG_WARN);
    assert_false(cm_log_enabled(CM_LOG_INFO));
    assert_true(cm_log_enabled(CM_LOG_WARN));
    assert_true(cm_log_enabled(CM_LOG_ERROR));
    cm_log(CM_LOG_INFO, NULL, "hidden", NULL);
    cm_logf(CM_LOG_DEBUG, NULL, "hidden %d", 1);
    cm_logf(CM_LOG_WARN, "r", "shown %d", 42);
    char *out = slurp(c);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "request_id=r msg=\"shown 42\"\n"));
    free(out);
    assert_int_equal(cm_log_parse_level("debug"), CM_LOG_DEBUG);
    assert_int_equal(cm_log_parse_level("info"), CM_LOG_INFO);
    assert_int_equal(cm_log_parse_level("warn"), CM_LOG_WARN);
    assert_int_equal(cm_log_parse_level("error"), CM_LOG_ERROR);
    assert_int_equal(cm_log_parse_level("warning"), -1);
    assert_int_equal(cm_log_parse_level("INFO"), -1);
    assert_int_equal(cm_log_parse_level(NULL), -1);
}

static void test_truncation(void **state) {
    capture *c = *state;
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    cm_log(CM_LOG_INFO, NULL, "big", "v", big, "after", "1", NULL);
    char *out = slurp(c);
    assert_true(strlen(out) <= 8192);
    assert_non_null(strstr(out, " truncated=true\n"));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
    /* JSON: still one valid-looking object, closed after the cut. */
    cm_log_set_json(1);
    cm_log(CM_LOG_INFO, NULL, "big", "v", big, NULL);
    cm_log_set_json(0);
    out = slurp(c);
    assert_true(strlen(out) <= 8192);
    assert_true(strncmp(out, "{\"ts\":", 6) == 0);
    assert_non_null(strstr(out, "\",\"truncated\":true}\n"));
    free(out);
    free(big);
}

/* utf8_valid: strict UTF-8 check (no overlong forms needed here: we only cut sequences). */
static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 0;
        if (n == 0) {
            return 0;
        }
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80) {
                return 0;
            }
        }
        p += n;
    }
    return 1;
}

static void test_truncation_keeps_utf8(void **state) {
    capture *c = *state;
    /* 2-, 3- and 4-byte characters, and several prefix lengths, so the cut lands at every
     * position inside a character. */
    const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    char *big = malloc(20001);
    assert_non_null(big);
    for (int json = 0; json < 2; json++) {
        cm_log_set_json(json);
        for (size_t ci = 0; ci < 3; ci++) {
            size_t clen = strlen(chars[ci]);
            size_t n = 0;
            while (n + clen <= 20000) {
                memcpy(big + n, chars[ci], clen);
                n += clen;
            }
            big[n] = '\0';
            for (int shift = 0; shift < 4; shift++) {
                char key[8] = "k";
                memset(key + 1, 'x', (size_t)shift);
                key[1 + shift] = '\0';
                cm_log(CM_LOG_INFO, NULL, "m", key, big, NULL);
                char *out = slurp(c);
                assert_true(utf8_valid(out));
                /* Non-ASCII needs no quotes in logfmt; JSON closes the string. */
                assert_non_null(
                    strstr(out, json ? "\",\"truncated\":true}\n" : " truncated=true\n"));
                free(out);
            }
        }
    }
    cm_log_set_json(0);
    free(big);
}

#define THREADS 4
#define LINES 500

static void *writer(void *p) {
    char id[16];
    snprintf(id, sizeof id, "t%d", (int)(intptr_t)p);
    for (int i = 0; i < LINES; i++) {
        cm_log(CM_LOG_INFO, id, "line", "pad",
               "0123456789012345678901234567890123456789012345678901234567890123456789", NULL);
    }
    return NULL;
}

static void test_threads_do_not_interleave(void **state) {
    capture *c = *state;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    char *out = slurp(c);
    int lines = 0;
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        lines++;
        assert_true(strncmp(line, "ts=", 3) == 0);
        assert_non_null(strstr(line, " msg=line pad=0123456789"));
        const char *tail = "456789";
        assert_string_equal(line + strlen(line) - strlen(tail), tail);
    }
    assert_int_equal(lines, THREADS * LINES);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_logfmt_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logfmt_escaping_and_no_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter_and_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_keeps_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_do_not_interleave, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
