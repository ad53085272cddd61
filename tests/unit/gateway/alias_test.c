/* gw_alias: the --alias flag parser, the bounds check (errors name the bad entry), the smooth
 * weighted round robin picker (exact shares, interleaved, weight 0 never picked) and its
 * fallback order; and gw_pool_route's answers for an alias whose targets have no usable
 * worker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gw_alias.h"
#include "gw_worker.h"

static void test_parse_flag(void **state) {
    gw_alias_cfg a;
    char err[256];
    (void)state;
    assert_int_equal(gw_alias_parse_flag("chat=m1:90,m2:10", &a, err, sizeof err), CM_OK);
    assert_string_equal(a.name, "chat");
    assert_int_equal(a.targets_count, 2);
    assert_string_equal(a.targets[0].model, "m1");
    assert_int_equal(a.targets[0].weight, 90);
    assert_string_equal(a.targets[1].model, "m2");
    assert_int_equal(a.targets[1].weight, 10);
    gw_alias_cfg_fini(&a);
    assert_null(a.name);
    /* No weight: 1. */
    assert_int_equal(gw_alias_parse_flag("x=only", &a, err, sizeof err), CM_OK);
    assert_int_equal(a.targets_count, 1);
    assert_int_equal(a.targets[0].weight, 1);
    gw_alias_cfg_fini(&a);
    /* Bad shapes: the message names the part. */
    static const char *bad[] = {"noequals", "=m:1", "x=",     "x=m:",      "x=m:ten",
                                "x=m:1,",   "x=:5", "x=m:-1", "x=m:1,,n:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(gw_alias_parse_flag(bad[i], &a, err, sizeof err), CM_ERR_CONFIG);
        assert_true(strstr(err, "--alias") != NULL);
        assert_null(a.name);
        assert_null(a.targets);
    }
    assert_int_equal(gw_alias_parse_flag("x=m:ten", &a, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "'m:ten'"));
}

static gw_alias_cfg *make_cfg(const char *const *specs, unsigned n) {
    gw_alias_cfg *c = calloc(n, sizeof *c);
    char err[256];
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(gw_alias_parse_flag(specs[i], &c[i], err, sizeof err), CM_OK);
    return c;
}

static void free_cfg(gw_alias_cfg *c, unsigned n) {
    for (unsigned i = 0; i < n; i++)
        gw_alias_cfg_fini(&c[i]);
    free(c);
}

/* check_one asserts that specs fail gw_alias_check at key with a message containing needle. */
static void check_one(const char *const *specs, unsigned n, const char *key, const char *needle) {
    gw_alias_cfg *c = make_cfg(specs, n);
    char k[96] = "", m[512] = "";
    assert_int_equal(gw_alias_check(c, n, k, sizeof k, m, sizeof m), CM_ERR_CONFIG);
    assert_string_equal(k, key);
    if (strstr(m, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", m, needle);
    free_cfg(c, n);
}

static void test_check_bounds(void **state) {
    char k[96], m[512], big[200];
    (void)state;
    {
        static const char *const ok[] = {"a=m1:1000,m2:0", "b=m1"};
        gw_alias_cfg *c = make_cfg(ok, 2);
        assert_int_equal(gw_alias_check(c, 2, k, sizeof k, m, sizeof m), CM_OK);
        free_cfg(c, 2);
    }
    check_one((const char *const[]){"a=m1:90,m2:1001"}, 1, "aliases.0.targets.1.weight",
              "target 'm2' has weight 1001");
    check_one((const char *const[]){"a=m1:1", "b=m:0,n:0"}, 2, "aliases.1.targets",
              "alias 'b': the weights sum to 0");
    check_one((const char *const[]){"a=m1:1", "a=m2:1"}, 2, "aliases.1.name",
              "alias 'a' is defined twice");
    check_one((const char *const[]){"a=m1:1,m1:2"}, 1, "aliases.0.targets.1.model",
              "target 'm1' is listed twice");
    check_one((const char *const[]){"a=t0,t1,t2,t3,t4,t5,t6,t7,t8"}, 1, "aliases.0.targets",
              "needs 1..8 targets, got 9");
    memset(big, 'n', sizeof big);
    memcpy(big, "a=", 2);
    big[sizeof big - 1] = '\0';
    check_one((const char *const[]){big}, 1, "aliases.0.targets.0.model", "1..127 bytes");
    /* Past GW_ALIAS_MAX aliases. */
    {
        unsigned n = GW_ALIAS_MAX + 1;
        gw_alias_cfg *c = calloc(n, sizeof *c);
        char spec[32];
        for (unsigned i = 0; i < n; i++) {
            snprintf(spec, sizeof spec, "a%u=m", i);
            assert_int_equal(gw_alias_parse_flag(spec, &c[i], k, sizeof k), CM_OK);
        }
        assert_int_equal(gw_alias_check(c, n, k, sizeof k, m, sizeof m), CM_ERR_CONFIG);
        assert_string_equal(k, "aliases");
        assert_int_equal(gw_alias_check(c, n - 1, k, sizeof k, m, sizeof m), CM_OK);
        free_cfg(c, n);
    }
}

static gw_alias *table_of(gw_alias_table *t, const char *spec) {
    gw_alias_cfg *c = make_cfg((const char *const[]){spec}, 1);
    assert_int_equal(gw_alias_table_init(t, c, 1), CM_OK);
    free_cfg(c, 1);
    return &t->aliases[0];
}

static void test_pick_exact_and_smooth(void **state) {
    gw_alias_table t;
    gw_alias *a = table_of(&t, "chat=main:90,canary:10");
    unsigned order[GW_ALIAS_MAX_TARGETS], counts[2] = {0, 0};
    (void)state;
    assert_ptr_equal(gw_alias_find(&t, "chat"), a);
    assert_null(gw_alias_find(&t, "main"));
    for (int window = 0; window < 20; window++) {
        unsigned canary_in_window = 0;
        /* Smooth: exactly one canary pick in every run of ten. */
        for (int i = 0; i < 10; i++) {
            assert_int_equal(gw_alias_order(&t, a, order), 2);
            assert_int_not_equal(order[0], order[1]); /* the other one is the fallback */
            counts[order[0]]++;
            canary_in_window += order[0] == 1;
        }
        assert_int_equal(canary_in_window, 1);
    }
    assert_int_equal(counts[0], 180);
    assert_int_equal(counts[1], 20);
    gw_alias_table_fini(&t);
}

static void test_pick_three_and_standby(void **state) {
    gw_alias_table t;
    gw_alias *a = table_of(&t, "x=standby:0,b:3,a:5,c:2");
    unsigned order[GW_ALIAS_MAX_TARGETS], counts[4] = {0};
    (void)state;
    for (int i = 0; i < 1000; i++) {
        unsigned n = gw_alias_order(&t, a, order);
        assert_int_equal(n, 4);
        counts[order[0]]++;
        /* Fallbacks by weight, largest first; the standby (weight 0) always last. */
        assert_int_equal(order[3], 0);
        for (unsigned k = 2; k < 3; k++)
            assert_true(a->targets[order[k]].weight >= a->targets[order[k + 1]].weight);
    }
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1], 300);
    assert_int_equal(counts[2], 500);
    assert_int_equal(counts[3], 200);
    gw_alias_table_fini(&t);
}

static void test_pool_route_without_workers(void **state) {
    gw_pool p;
    gw_worker *w = NULL, *got = NULL;
    char served[GW_NAME_MAX], target[GW_NAME_MAX], names[8][GW_NAME_MAX];
    gw_alias_cfg *c = make_cfg((const char *const[]){"chat=m1:90,m2:10"}, 1);
    (void)state;
    assert_int_equal(gw_pool_init(&p, "test", NULL, NULL, NULL), CM_OK);
    assert_int_equal(gw_pool_set_aliases(&p, c, 1), CM_OK);
    free_cfg(c, 1);
    /* Configured: known (a 503 when nothing serves it, not a 404). */
    assert_true(gw_pool_has_model(&p, "chat"));
    assert_false(gw_pool_has_model(&p, "m1"));
    assert_int_equal(gw_pool_route(&p, "chat", 0, NULL, &got, served, target), CM_ERR_NOT_FOUND);
    /* A target with a worker that is not connected: closed, for either pick. */
    assert_int_equal(gw_pool_add(&p, "m2", "tcp://127.0.0.1:1", 1, &w), CM_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(gw_pool_route(&p, "chat", 0, NULL, &got, served, target), CM_ERR_CLOSED);
    /* A plain name routes as itself. */
    assert_int_equal(gw_pool_route(&p, "m2", 0, NULL, &got, served, target), CM_ERR_CLOSED);
    assert_int_equal(gw_pool_route(&p, "other", 0, NULL, &got, served, NULL), CM_ERR_NOT_FOUND);
    /* Nothing usable: neither the target nor the alias is listed. */
    assert_int_equal(gw_pool_models(&p, names, 8), 0);
    gw_pool_fini(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_flag),
        cmocka_unit_test(test_check_bounds),
        cmocka_unit_test(test_pick_exact_and_smooth),
        cmocka_unit_test(test_pick_three_and_standby),
        cmocka_unit_test(test_pool_route_without_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
