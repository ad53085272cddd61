/* lt_sse: events split at every possible byte boundary, line endings, comments, caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "lt_sse.h"

typedef struct collected {
    char events[16][256];
    size_t n;
    int stop_after;
} collected;

static int collect(void *user, const char *data, size_t len) {
    collected *c = user;
    assert_true(c->n < 16);
    assert_int_equal(data[len], '\0');
    snprintf(c->events[c->n], sizeof(c->events[0]), "%.*s", (int)len, data);
    c->n++;
    return c->stop_after > 0 && (int)c->n >= c->stop_after;
}

static const char stream[] = ": keep-alive\r\n"
                             "data: {\"a\":1}\r\n\r\n"
                             "event: message\n"
                             "id: 7\n"
                             "data: line1\n"
                             "data:line2\n"
                             "\n"
                             "data: [DONE]\r\r";

static void test_every_split(void **state) {
    (void)state;
    size_t len = strlen(stream);
    for (size_t cut = 0; cut <= len; cut++) {
        lt_sse p;
        assert_int_equal(lt_sse_init(&p, 1024), CM_OK);
        collected c;
        memset(&c, 0, sizeof(c));
        assert_int_equal(lt_sse_feed(&p, stream, cut, collect, &c), CM_OK);
        assert_int_equal(lt_sse_feed(&p, stream + cut, len - cut, collect, &c), CM_OK);
        assert_int_equal(lt_sse_finish(&p, collect, &c), CM_OK);
        assert_int_equal(c.n, 3);
        assert_string_equal(c.events[0], "{\"a\":1}");
        assert_string_equal(c.events[1], "line1\nline2");
        assert_string_equal(c.events[2], "[DONE]");
        lt_sse_fini(&p);
    }
}

static void test_byte_by_byte_and_unterminated_tail(void **state) {
    (void)state;
    const char *s = "data: one\n\ndata: two"; /* server closed without the blank line */
    lt_sse p;
    assert_int_equal(lt_sse_init(&p, 64), CM_OK);
    collected c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; s[i] != '\0'; i++) {
        assert_int_equal(lt_sse_feed(&p, s + i, 1, collect, &c), CM_OK);
    }
    assert_int_equal(c.n, 1);
    assert_int_equal(lt_sse_finish(&p, collect, &c), CM_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.events[1], "two");
    lt_sse_fini(&p);
}

static void test_limit(void **state) {
    (void)state;
    lt_sse p;
    assert_int_equal(lt_sse_init(&p, 16), CM_OK);
    collected c;
    memset(&c, 0, sizeof(c));
    const char *long_line = "data: 0123456789abcdefXYZ\n\n";
    assert_int_equal(lt_sse_feed(&p, long_line, strlen(long_line), collect, &c), CM_ERR_LIMIT);
    assert_int_equal(c.n, 0);
    /* two data lines that fit alone but not together */
    lt_sse_reset(&p);
    const char *two = "data: 0123456789\ndata: 0123456789\n\n";
    assert_int_equal(lt_sse_feed(&p, two, strlen(two), collect, &c), CM_ERR_LIMIT);
    /* after a reset the parser works again */
    lt_sse_reset(&p);
    assert_int_equal(lt_sse_feed(&p, "data: ok\n\n", 10, collect, &c), CM_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.events[0], "ok");
    lt_sse_fini(&p);
    assert_int_equal(lt_sse_init(&p, 8), CM_ERR_INVALID);
    lt_sse_fini(&p);
}

static void test_stop_and_empty_events(void **state) {
    (void)state;
    lt_sse p;
    assert_int_equal(lt_sse_init(&p, 64), CM_OK);
    collected c;
    memset(&c, 0, sizeof(c));
    c.stop_after = 1;
    /* blank lines without data dispatch nothing; "data" alone is an empty event */
    const char *s = "\n\n\ndata\n\ndata: x\n\n";
    assert_int_equal(lt_sse_feed(&p, s, strlen(s), collect, &c), CM_ERR_CANCELLED);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.events[0], "");
    lt_sse_fini(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_byte_by_byte_and_unterminated_tail),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_stop_and_empty_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
