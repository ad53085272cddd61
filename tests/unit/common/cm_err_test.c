/* cm_err: every value has its own message; out-of-range values are safe; cm_errf formats and
 * returns its code; CM_ASSERT passes silently or aborts with file:line and the condition. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_err.h"

static void test_all_values_have_distinct_messages(void **state) {
    (void)state;
    for (int i = 0; i < CM_ERR__COUNT; i++) {
        const char *m = cm_strerror((cm_err)i);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(m, cm_strerror((cm_err)j));
        }
    }
    assert_string_equal(cm_strerror(CM_OK), "ok");
}

static void test_out_of_range(void **state) {
    (void)state;
    assert_string_equal(cm_strerror(CM_ERR__COUNT), "unknown error");
    assert_string_equal(cm_strerror((cm_err)-1), "unknown error");
    assert_string_equal(cm_strerror((cm_err)100000), "unknown error");
}

static void test_errf(void **state) {
    char err[16];
    (void)state;
    memset(err, 'x', sizeof err);
    assert_int_equal(cm_errf(CM_ERR_LIMIT, err, sizeof err, "n=%d of %s", 7, "eight"),
                     CM_ERR_LIMIT);
    assert_string_equal(err, "n=7 of eight");
    /* Truncated to the buffer, always terminated. */
    assert_int_equal(cm_errf(CM_ERR_INVALID, err, sizeof err, "%s", "0123456789abcdefghij"),
                     CM_ERR_INVALID);
    assert_string_equal(err, "0123456789abcde");
    /* No buffer: only the code. */
    assert_int_equal(cm_errf(CM_ERR_FORMAT, NULL, 0, "ignored %d", 1), CM_ERR_FORMAT);
    err[0] = 'k';
    assert_int_equal(cm_errf(CM_OK, err, 0, "ignored"), CM_OK);
    assert_int_equal(err[0], 'k');
}

/* Runs CM_ASSERT(value == 3) in a child with its stderr on a pipe: returns the wait status and
 * what the child wrote. */
static int assert_in_child(int value, char *out, size_t cap) {
    int fds[2], status = 0;
    ssize_t n, got = 0;
    pid_t pid;
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        CM_ASSERT(value == 3);
        _exit(0);
    }
    close(fds[1]);
    while ((size_t)got + 1 < cap && (n = read(fds[0], out + got, cap - 1 - (size_t)got)) > 0)
        got += n;
    out[got] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void test_assert(void **state) {
    char out[256];
    char where[64];
    int status;
    (void)state;
    status = assert_in_child(3, out, sizeof out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(out, "");

    status = assert_in_child(4, out, sizeof out);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(out, "invariant failed: value == 3\n"));
    snprintf(where, sizeof where, "%s:", __FILE__);
    assert_ptr_equal(strstr(out, where), out); /* starts with file:line */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_values_have_distinct_messages),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_errf),
        cmocka_unit_test(test_assert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
