/* gw_route: the table's lookups (paths, aliases, {id} tails, listeners, methods, labels). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_route.h"

static const gw_route *find(const char *path, unsigned listener) {
    return gw_route_find(path, strlen(path), listener);
}

static void test_find(void **state) {
    const gw_route *r;
    (void)state;
    r = find("/v1/chat/completions", GW_LISTENER_PUBLIC);
    assert_non_null(r);
    assert_int_equal(r->api, GW_API_CHAT);
    assert_true(r->needs_key);
    assert_true(r->bounded_body);
    assert_non_null(find("/v1/completions", GW_LISTENER_PUBLIC));
    assert_null(find("/v1/chat/completions/", GW_LISTENER_PUBLIC));
    assert_null(find("/v1/chat", GW_LISTENER_PUBLIC));
    assert_null(find("", GW_LISTENER_PUBLIC));
    /* Probes on both listeners, /metrics only on the admin one, the API only on the public. */
    assert_non_null(find("/health", GW_LISTENER_ADMIN));
    assert_non_null(find("/ready", GW_LISTENER_PUBLIC));
    assert_null(find("/metrics", GW_LISTENER_PUBLIC));
    assert_non_null(find("/metrics", GW_LISTENER_ADMIN));
    assert_null(find("/v1/models", GW_LISTENER_ADMIN));
    assert_null(find("/metrics/", GW_LISTENER_ADMIN));
    /* vLLM's tooling endpoints, with and without /v1; one row (one metrics label) each. */
    r = find("/tokenize", GW_LISTENER_PUBLIC);
    assert_non_null(r);
    assert_ptr_equal(r, find("/v1/tokenize", GW_LISTENER_PUBLIC));
    assert_string_equal(r->path, "/v1/tokenize");
    assert_int_equal(r->api, GW_API_TOKENIZE);
    assert_true(r->needs_key);
    r = find("/detokenize", GW_LISTENER_PUBLIC);
    assert_non_null(r);
    assert_int_equal(r->api, GW_API_DETOKENIZE);
    assert_null(find("/tokenize", GW_LISTENER_ADMIN));
    assert_null(find("/tokenize/x", GW_LISTENER_PUBLIC));
}

static void test_ids(void **state) {
    const char *p = "/v1/models/SmolLM2";
    size_t n;
    const gw_route *r = find(p, GW_LISTENER_PUBLIC);
    const char *id;
    (void)state;
    assert_non_null(r);
    assert_string_equal(r->path, "/v1/models");
    id = gw_route_id_of(r, p, strlen(p), &n);
    assert_non_null(id);
    assert_int_equal(n, strlen("SmolLM2"));
    assert_memory_equal(id, "SmolLM2", n);
    assert_null(gw_route_id_of(r, "/v1/models", 10, &n));
    assert_int_equal(n, 0);
    assert_null(find("/v1/models/", GW_LISTENER_PUBLIC)); /* empty id */
    assert_null(find("/v1/modelsX", GW_LISTENER_PUBLIC));
}

static void test_methods_and_labels(void **state) {
    const gw_route *r = find("/v1/models", GW_LISTENER_PUBLIC);
    (void)state;
    assert_true(gw_route_allows(r, "GET", 3));
    assert_false(gw_route_allows(r, "POST", 4));
    assert_false(gw_route_allows(r, "GE", 2));
    r = find("/health", GW_LISTENER_PUBLIC);
    assert_true(gw_route_allows(r, "DELETE", 6)); /* probes take any method */
    assert_string_equal(gw_route_label(GW_API_CHAT), "/v1/chat/completions");
    assert_string_equal(gw_route_label(GW_API_COMPLETIONS), "/v1/completions");
    assert_string_equal(gw_route_label(GW_API_DETOKENIZE), "/v1/detokenize");
    assert_string_equal(gw_route_label(GW_API_NONE), GW_ROUTE_LABEL_OTHER);
    assert_string_equal(gw_route_label((gw_api)99), GW_ROUTE_LABEL_OTHER);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_methods_and_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
