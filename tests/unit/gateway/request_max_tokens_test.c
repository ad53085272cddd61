/* gw_request: the max_tokens defaults match OpenAI's - a chat request without max_tokens runs
 * to the remaining context (absent on the wire) unless the operator set default_max_tokens;
 * completions default to 16; an explicit value always wins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_request.h"

#define CHAT_NO_MAX "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

static void check(const gw_limits *lim, gw_api api, const char *body, int has, uint32_t want) {
    gw_request rq;
    gw_error err;
    assert_int_equal(gw_request_parse(body, strlen(body), api, lim, &rq, &err), CM_OK);
    assert_int_equal(rq.submit.has_max_tokens, has);
    assert_int_equal(rq.max_tokens, want);
    if (has)
        assert_int_equal(rq.submit.max_tokens, want);
    gw_request_fini(&rq);
}

static void test_chat_default_is_remaining_context(void **state) {
    gw_limits lim;
    (void)state;
    gw_limits_default(&lim);
    assert_int_equal(lim.default_max_tokens, 0);
    check(&lim, GW_API_CHAT, CHAT_NO_MAX, 0, 0);
    /* null is the same as absent */
    check(&lim, GW_API_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
          "\"max_tokens\":null}",
          0, 0);
}

static void test_operator_bound(void **state) {
    gw_limits lim;
    (void)state;
    gw_limits_default(&lim);
    lim.default_max_tokens = 300;
    check(&lim, GW_API_CHAT, CHAT_NO_MAX, 1, 300);
    lim.default_max_tokens = lim.max_tokens + 1; /* never above the accepted maximum */
    check(&lim, GW_API_CHAT, CHAT_NO_MAX, 1, lim.max_tokens);
}

static void test_explicit_and_completions(void **state) {
    gw_limits lim;
    (void)state;
    gw_limits_default(&lim);
    check(&lim, GW_API_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
          "\"max_tokens\":9}",
          1, 9);
    check(&lim, GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"hi\"}", 1, 16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_default_is_remaining_context),
        cmocka_unit_test(test_operator_bound),
        cmocka_unit_test(test_explicit_and_completions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
